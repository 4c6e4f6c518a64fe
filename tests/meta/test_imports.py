"""Import discipline: the crypto core depends on nothing of the package but ``exceptions``, and stays light.

Checked two ways: statically, on the AST of every module in ``ocean_secret_store/crypto`` (so
lazy imports inside functions count too), and dynamically, by importing every crypto submodule
(and the local client) in a fresh interpreter and looking at ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ocean_secret_store

PACKAGE_DIR = Path(ocean_secret_store.__file__).resolve().parent
CRYPTO_DIR = PACKAGE_DIR / "crypto"
CRYPTO_FILES = sorted(CRYPTO_DIR.glob("*.py"))
SIBLINGS = {path.stem for path in CRYPTO_FILES} - {"__init__"}
#: Heavy or I/O-bound libraries the crypto core must never import, not even lazily.
HEAVY = ("web3", "eth_account", "aiohttp", "requests")


def imports_of(path: Path) -> list[tuple[int, str, int, str | None, list[str]]]:
    """``(line, kind, level, module, names)`` for every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str, int, str | None, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, "import", 0, alias.name, []))
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "from", node.level, node.module, [a.name for a in node.names]))
    return found


def package_violation(level: int, module: str | None, names: list[str]) -> str | None:
    """Why an import breaks the rule, or None if it is allowed."""
    if level == 0:
        if module is None or module.split(".")[0] != "ocean_secret_store":
            return None
        parts = module.split(".")
        if parts == ["ocean_secret_store", "exceptions"]:
            return None
        if parts[:2] == ["ocean_secret_store", "crypto"] and (len(parts) == 2 or parts[2] in SIBLINGS):
            return None
        if parts == ["ocean_secret_store"] and names == ["exceptions"]:
            return None
        return f"absolute import of {module}"
    if level == 1:
        if module is None or module.split(".")[0] in SIBLINGS:
            return None
        return f"relative import of unknown sibling .{module}"
    if level == 2:
        if module == "exceptions" or (module is None and names == ["exceptions"]):
            return None
        return f"import from ..{module or ''} {names}"
    return f"import reaching {level} levels up"


@pytest.mark.parametrize("path", CRYPTO_FILES, ids=lambda p: p.name)
def test_crypto_imports_only_exceptions_and_siblings(path: Path) -> None:
    problems = []
    for line, _kind, level, module, names in imports_of(path):
        reason = package_violation(level, module, names)
        if reason:
            problems.append(f"{path.name}:{line}: {reason}")
    assert not problems, "the crypto core may import only ..exceptions and sibling crypto modules:\n" + "\n".join(
        problems
    )


@pytest.mark.parametrize("path", CRYPTO_FILES, ids=lambda p: p.name)
def test_crypto_never_imports_heavy_libraries(path: Path) -> None:
    heavy = [
        f"{path.name}:{line}: {module}"
        for line, _kind, level, module, _names in imports_of(path)
        if level == 0 and module is not None and module.split(".")[0] in HEAVY
    ]
    assert not heavy, f"the crypto core must not import {HEAVY}: {heavy}"


@pytest.mark.parametrize(
    ("level", "module", "names", "allowed"),
    [
        (2, "exceptions", ["InvalidPoint"], True),
        (0, "ocean_secret_store.exceptions", ["X"], True),
        (1, "curve", ["Point"], True),
        (1, None, ["ecies"], True),
        (0, "coincurve", ["PublicKey"], True),
        (2, "client", ["local"], False),
        (2, None, ["node"], False),
        (0, "ocean_secret_store.node.cluster", ["X"], False),
        (3, "anything", ["x"], False),
        (1, "no_such_module", ["x"], False),
    ],
)
def test_the_rule_itself(level: int, module: str | None, names: list[str], allowed: bool) -> None:
    # The checker must be able to fail, or the test above proves nothing.
    assert (package_violation(level, module, names) is None) is allowed


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
    assert SIBLINGS, "no crypto modules found"
    statement = "import importlib\n" + "\n".join(
        f"importlib.import_module('ocean_secret_store.crypto.{name}')" for name in sorted(SIBLINGS)
    )
    assert modules_after_importing(statement) == set()


def test_importing_the_local_client_stays_light() -> None:
    assert modules_after_importing("import ocean_secret_store.client.local") == set()


def test_the_probe_can_see_a_heavy_import() -> None:
    assert "requests" in modules_after_importing("import requests")
