"""Import discipline over the whole package: imports point down the layer table, no cycle anywhere,
and the crypto core stays light.

Checked statically, on the AST of every module (so function-local and ``TYPE_CHECKING`` imports
count too: a cycle hidden in a function is still a cycle), and dynamically for the light core, by
importing it in a fresh interpreter and looking at ``sys.modules``. Both checkers are shown to fail
on a copy of the real package with a planted upward import and a planted cycle.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import ocean_secret_store

PACKAGE = "ocean_secret_store"
PACKAGE_DIR = Path(ocean_secret_store.__file__).resolve().parent

_BASE = frozenset({"exceptions"})
_CORE = _BASE | {"crypto", "protocol", "keyfile"}
_SERVICES = _CORE | {"lifecycle", "serving", "metrics", "tools", "chain", "node", "client", "ocean"}

#: Component (a subpackage or a top-level module of the package) -> the components it may import.
#: Low to high; a component may always import its own modules. ``__init__`` is the package root,
#: the curated public facade. ``testing`` serves tests and benches and is imported by nothing.
LAYERS: dict[str, frozenset[str]] = {
    "exceptions": frozenset(),
    "failpoints": frozenset(),  # stdlib only: crash points for tests, armed by the environment
    "healthcheck": frozenset(),  # stdlib only: the image's HEALTHCHECK, one interpreter start per probe
    "crypto": _BASE,
    "keyfile": _BASE | {"crypto"},
    "protocol": _BASE | {"crypto"},
    "lifecycle": _BASE,
    "serving": _BASE | {"lifecycle"},
    "metrics": _BASE,  # the Prometheus metrics of every service and GET /metrics (prometheus-client, aiohttp)
    "localca": _BASE | {"serving"},
    "tools": _BASE,
    "chain": _CORE | {"tools"},
    "node": _CORE | {"chain", "lifecycle", "serving", "metrics", "failpoints"},
    "client": _CORE | {"lifecycle", "serving", "metrics"},
    "ocean": _CORE | {"lifecycle", "serving", "metrics", "client", "chain"},
    "devnet": _SERVICES | {"localca"},
    "demo": _SERVICES | {"devnet"},
    "cluster_init": _SERVICES | {"localca"},  # `cluster init`: keys, configs, certificates for N machines
    "cli_tools": _SERVICES | {"devnet"},
    "cli_deploy": _SERVICES | {"cluster_init", "cli_tools"},
    "stack": _SERVICES | {"devnet", "cluster_init"},  # `stack init`: the whole devnet as a compose project
    "cli_stack": _SERVICES | {"stack", "cli_tools"},
    "cli": _SERVICES | {"devnet", "demo", "cli_tools", "cli_deploy", "cli_stack"},
    "__init__": _SERVICES,
    "testing": _SERVICES | {"localca", "devnet", "demo", "cluster_init", "stack", "cli_tools", "cli_deploy", "cli"},
}

#: Narrower rules inside a component: (importer component, imported component) -> the only modules
#: of the importer allowed to make that import. The key servers reach the chain only to check access.
ONLY_FROM: dict[tuple[str, str], frozenset[str]] = {
    ("node", "chain"): frozenset({f"{PACKAGE}.node.acl", f"{PACKAGE}.node.app"}),
}

#: Heavy or I/O-bound libraries the crypto core must never import, not even lazily.
HEAVY = ("web3", "eth_account", "aiohttp", "requests")


@dataclass(frozen=True)
class Edge:
    """One import statement resolved to a module of the package."""

    source: str
    target: str
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def component_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_modules(root: Path) -> dict[str, Path]:
    return {module_name(root, path): path for path in sorted(root.rglob("*.py"))}


def _resolve(modules: dict[str, Path], source: str, is_package: bool, node: ast.AST) -> Iterator[str]:
    """The package modules an import statement loads (a ``from X import y`` of a submodule y is X.y)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == PACKAGE:
                yield alias.name
        return
    if not isinstance(node, ast.ImportFrom):
        return
    if node.level:
        base = source.split(".") if is_package else source.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        parent = ".".join(base + ([node.module] if node.module else []))
    elif node.module and node.module.split(".")[0] == PACKAGE:
        parent = node.module
    else:
        return
    for alias in node.names:
        child = f"{parent}.{alias.name}"
        yield child if child in modules else parent


def import_edges(root: Path) -> list[Edge]:
    modules = package_modules(root)
    edges = []
    for source, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            edges.extend(Edge(source, target, getattr(node, "lineno", 0))
                         for target in _resolve(modules, source, is_package, node) if target != source)
    return edges


def layer_violations(root: Path) -> list[str]:
    problems = []
    for edge in import_edges(root):
        src, dst = component_of(edge.source), component_of(edge.target)
        if src == dst:
            continue
        where = f"{edge.source}:{edge.line} imports {edge.target}"
        if src not in LAYERS:
            problems.append(f"{where}: component {src!r} is not in the layer table")
        elif dst not in LAYERS[src]:
            problems.append(f"{where}: {src} may not import {dst}")
        elif (src, dst) in ONLY_FROM and edge.source not in ONLY_FROM[(src, dst)]:
            problems.append(f"{where}: only {sorted(ONLY_FROM[(src, dst)])} may import {dst}")
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {name: set() for name in package_modules(root)}
    for edge in import_edges(root):
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(cycles)


# -- the package as it is ----------------------------------------------------------------------


def test_every_component_is_in_the_layer_table() -> None:
    components = {component_of(name) for name in package_modules(PACKAGE_DIR)}
    assert components - LAYERS.keys() == set(), "place every new package or module in LAYERS"
    assert {"crypto", "protocol", "node", "client", "chain", "ocean", "devnet", "cli"} <= components


def test_imports_point_down_the_layer_table() -> None:
    problems = layer_violations(PACKAGE_DIR)
    assert not problems, "imports that point up or sideways:\n" + "\n".join(problems)


def test_no_import_cycle_anywhere() -> None:
    cycles = import_cycles(PACKAGE_DIR)
    assert not cycles, "import cycles (function-local imports count):\n" + "\n".join(map(" <-> ".join, cycles))


def test_nothing_in_the_package_imports_the_testing_helpers() -> None:
    users = [f"{e.source}:{e.line}" for e in import_edges(PACKAGE_DIR)
             if component_of(e.target) == "testing" and component_of(e.source) != "testing"]
    assert not users


def test_crypto_never_imports_heavy_libraries() -> None:
    heavy = []
    for path in sorted((PACKAGE_DIR / "crypto").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            heavy += [f"{path.name}:{node.lineno}: {n}" for n in names if n.split(".")[0] in HEAVY]
    assert not heavy, f"the crypto core must not import {HEAVY}: {heavy}"


# -- the checkers can fail: plant faults in a copy of the real package ------------------------------


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    copy = tmp_path / PACKAGE
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert layer_violations(copy) == layer_violations(PACKAGE_DIR)
    assert import_cycles(copy) == import_cycles(PACKAGE_DIR)
    return copy


def _plant(path: Path, line: str, *, in_function: bool = False) -> None:
    text = path.read_text(encoding="utf-8")
    if in_function:
        text += f"\n\ndef _planted() -> None:\n    {line}\n"
    else:
        text += f"\n{line}\n"
    path.write_text(text, encoding="utf-8")


def test_a_planted_upward_import_is_found(package_copy: Path) -> None:
    before = set(layer_violations(package_copy))
    _plant(package_copy / "crypto" / "curve.py", "from ..node import cluster", in_function=True)
    new = set(layer_violations(package_copy)) - before
    assert len(new) == 1
    assert "ocean_secret_store.crypto.curve" in new.pop()


def test_a_planted_sideways_import_of_the_chain_is_found(package_copy: Path) -> None:
    before = set(layer_violations(package_copy))
    _plant(package_copy / "node" / "storage.py", "from ..chain import keeper")
    new = set(layer_violations(package_copy)) - before
    assert len(new) == 1
    assert "only" in new.pop()


def test_a_planted_cycle_is_found(package_copy: Path) -> None:
    # Inside one layer, where the layer table allows both directions and only the cycle check can
    # see it; one side lazy, as the cycles this project had were hidden.
    _plant(package_copy / "protocol" / "hexcodec.py", "from . import addresses", in_function=True)
    _plant(package_copy / "protocol" / "addresses.py", "from .hexcodec import to_hex")
    assert layer_violations(package_copy) == layer_violations(PACKAGE_DIR)
    planted = {"ocean_secret_store.protocol.hexcodec", "ocean_secret_store.protocol.addresses"}
    assert [c for c in import_cycles(package_copy) if planted <= set(c)] == [sorted(planted)]


def test_a_new_component_must_be_placed(package_copy: Path) -> None:
    (package_copy / "gadgets.py").write_text("from .node import cluster\n", encoding="utf-8")
    assert any("'gadgets' is not in the layer table" in p for p in layer_violations(package_copy))


@pytest.mark.parametrize(
    ("source", "statement", "expected"),
    [
        ("ocean_secret_store.node.cluster", "from .sessions import generation",
         "ocean_secret_store.node.sessions.generation"),
        ("ocean_secret_store.node.cluster", "from ..crypto.curve import Point", "ocean_secret_store.crypto.curve"),
        ("ocean_secret_store.node.sessions.base", "from ...exceptions import X", "ocean_secret_store.exceptions"),
        ("ocean_secret_store.cli", "import ocean_secret_store.devnet", "ocean_secret_store.devnet"),
        ("ocean_secret_store.cli", "from ocean_secret_store import devnet", "ocean_secret_store.devnet"),
        ("ocean_secret_store.node", "from . import acl", "ocean_secret_store.node.acl"),
    ],
)
def test_imports_resolve_to_modules(source: str, statement: str, expected: str) -> None:
    modules = package_modules(PACKAGE_DIR)
    is_package = modules[source].name == "__init__.py" if source in modules else False
    node = ast.parse(statement).body[0]
    assert list(_resolve(modules, source, is_package, node)) == [expected]


# -- dynamically: the light core stays light --------------------------------------------------------


def modules_after_importing(statement: str) -> set[str]:
    probe = (
        "import json, sys\n"
        f"{statement}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {list(HEAVY)!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=PACKAGE_DIR.parent, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_importing_every_crypto_submodule_stays_light() -> None:
    names = sorted(p.stem for p in (PACKAGE_DIR / "crypto").glob("*.py") if p.stem != "__init__")
    assert names, "no crypto modules found"
    statement = "import importlib\n" + "\n".join(f"importlib.import_module('{PACKAGE}.crypto.{n}')" for n in names)
    assert modules_after_importing(statement) == set()


def test_importing_the_local_client_stays_light() -> None:
    assert modules_after_importing(f"import {PACKAGE}.client.local") == set()


def test_the_probe_can_see_a_heavy_import() -> None:
    assert "requests" in modules_after_importing("import requests")
