"""The docs stay true: every command and snippet that README.md and docs/*.md give a user is run.

What counts as a snippet: the fenced code blocks (```` ``` ````) of README.md and docs/*.md, told
apart by their info string (the word after the opening fence):

* none, ``sh``, ``shell``, ``bash``, ``console``: shell. Every line that is not blank and not a
  ``#`` comment is one command; its key is the command without a trailing ``# comment``;
* ``python``, ``py``: one Python snippet, run as a whole;
* ``toml``, ``ini``: a config file, parsed and used by the test of the snippet it belongs to;
* ``text``: a figure (an architecture or sequence diagram drawn in text), shown and never run.

Any other info string fails the test (decide how to check it first). Python, TOML and INI blocks
are keyed ``doc:first line``. Inline code in prose (`` `make lint` ``) is not a snippet, but the
paths and dotted names it points at must exist (``test_paths_and_names_in_the_docs_exist``).

Every snippet found is either in ``RUN_BY`` (the test or fixture here that runs it) or in
``EXEMPT`` with the reason; a snippet in neither, or a table entry the docs no longer have, fails
``test_every_snippet_is_run_or_exempted``, so a new block cannot be skipped silently. A runner
takes the snippet's text from the docs (``snippet(key)``), never a copy, and fills placeholders
only through ``fill()``: each substitution names its placeholder, which must be present, and
says why.

Shell commands run with ``bash -c`` in a temporary working directory, against one devnet that
the README's own ``devnet up`` command starts for the module and its ``devnet down`` stops. One-shot
commands must exit 0; a server command (``node``, ``rpc``, ``provider``) must answer a request,
then exit 0 on SIGTERM.
"""

from __future__ import annotations

import configparser
import functools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
import tomllib
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
VENV_BIN = ROOT / ".venv" / "bin"

SHELL_INFO = frozenset({"", "sh", "shell", "bash", "console"})
PYTHON_INFO = frozenset({"python", "py"})
DATA_INFO = frozenset({"toml", "ini"})
#: Diagrams drawn in text (docs/architecture.md): nothing in them is a command.
FIGURE_INFO = frozenset({"text"})

# -- the snippets -----------------------------------------------------------------------------

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


@dataclass(frozen=True)
class Snippet:
    doc: str  # path relative to the checkout
    line: int  # 1-based line of the command, or of the block's first line
    kind: str  # "shell", "python", "toml" or "ini"
    key: str
    text: str


class MalformedFence(Exception):
    """A fence that CommonMark would not close the way the author meant."""


def parse_blocks(text: str, doc: str) -> list[tuple[int, str, str]]:
    """``(first line, info string, content)`` of every fenced block, CommonMark's rules.

    Hand-written (no Markdown parser is among the dependencies): a fence is three or more
    backticks or tildes; a block closes at a fence of the same character at least as long with
    nothing after it. A line inside a block that starts like the closing fence but has text after
    it is refused: that is how the README once swallowed a paragraph into a code block.
    """
    blocks: list[tuple[int, str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info, start = match.group(1), match.group(2).strip(), i + 1
        body: list[str] = []
        i += 1
        while True:
            if i >= len(lines):
                raise MalformedFence(f"{doc}:{start}: code block never closed")
            close = FENCE.match(lines[i])
            if close and close.group(1)[0] == fence[0] and len(close.group(1)) >= len(fence):
                if close.group(2).strip():
                    raise MalformedFence(f"{doc}:{i + 1}: text after a closing fence: {lines[i]!r}")
                break
            body.append(lines[i])
            i += 1
        blocks.append((start + 1, info.split()[0] if info else "", "".join(line + "\n" for line in body)))
        i += 1
    return blocks


def prose_of(text: str, doc: str) -> str:
    """The text with every fenced block (fences included) blanked out, line numbers kept."""
    lines = text.splitlines()
    for first, _, content in parse_blocks(text, doc):
        for index in range(first - 2, first + content.count("\n")):  # opening fence .. closing fence
            lines[index] = ""
    return "\n".join(lines)


def snippets_of(path: Path) -> list[Snippet]:
    return snippets_in(path.read_text(), str(path.relative_to(ROOT)))


def snippets_in(text: str, doc: str) -> list[Snippet]:
    out = []
    for first, info, content in parse_blocks(text, doc):
        if info in SHELL_INFO:
            for offset, line in enumerate(content.splitlines()):
                if line.strip() and not line.lstrip().startswith("#"):
                    key = " ".join(shlex.split(line, comments=True))
                    out.append(Snippet(doc, first + offset, "shell", key, line.strip()))
        elif info in PYTHON_INFO or info in DATA_INFO:
            head = next(line for line in content.splitlines() if line.strip())
            kind = "python" if info in PYTHON_INFO else info
            out.append(Snippet(doc, first, kind, f"{doc}:{head.strip()}", content))
        elif info in FIGURE_INFO:
            continue
        else:
            raise MalformedFence(f"{doc}:{first - 1}: info string {info!r}: say in test_docs.py how to check it")
    return out


@functools.cache
def all_snippets() -> dict[str, Snippet]:
    found: dict[str, Snippet] = {}
    for path in DOCS:
        for item in snippets_of(path):
            if item.key in found:
                other = found[item.key]
                raise MalformedFence(f"{item.doc}:{item.line} repeats {other.doc}:{other.line}: {item.key!r}")
            found[item.key] = item
    return found


def snippet(key: str) -> Snippet:
    found = all_snippets().get(key)
    if found is None:
        pytest.fail(f"the docs no longer have {key!r}: update RUN_BY/EXEMPT and the test that ran it")
    return found


def fill(key: str, *substitutions: tuple[str, str]) -> str:
    """The snippet's text with each placeholder replaced; a placeholder that is absent fails."""
    text = snippet(key).text
    for placeholder, value in substitutions:
        if placeholder not in text:
            pytest.fail(f"placeholder {placeholder!r} is not in {key!r}: the substitution is stale")
        text = text.replace(placeholder, value)
    return text


# The commands say `.venv/bin/...` and `bench/...` relative to the checkout; they run here in a
# temporary directory (so the devnet's state and the files they write land there), so the
# checkout's own venv and benches are named by absolute path.
VENV = (".venv/bin/", f"{VENV_BIN}/")
BENCH = ("bench/", f"{ROOT}/bench/")

# -- what runs each snippet, and what is exempt -----------------------------------------------

CLI = ".venv/bin/ocean-secret-store"
DEVNET_UP = f"{CLI} devnet up --nodes 5 --state-dir .devnet"
DEVNET_STATUS = f"{CLI} devnet status --state-dir .devnet"
DEVNET_DOWN = f"{CLI} devnet down --state-dir .devnet"
NODE = f"{CLI} node --config node.toml"
ENCRYPT = (f"{CLI} encrypt --did did:op:... --devnet .devnet --key-env MY_KEY --threshold 2 --in data.csv "
           "--out data.enc")
DECRYPT = f"{CLI} decrypt --did did:op:... --devnet .devnet --key-env MY_KEY --in data.enc > data.csv"
RPC = f"{CLI} rpc --keystore DIR --listen 127.0.0.1:8545 --chain-url URL"
PROVIDER = f"{CLI} provider --config ocean.ini"
AQUARIUS = f"{CLI} aquarius --db .devnet/metadata.sqlite --listen 127.0.0.1:5000"
BENCH_CRYPTO = ".venv/bin/python bench/crypto.py"
BENCH_CLUSTER = ".venv/bin/python bench/cluster.py"
BENCH_CLUSTER_10 = ".venv/bin/python bench/cluster.py --nodes 10 --threshold 4"
BENCH_CLUSTER_5_1 = ".venv/bin/python bench/cluster.py --nodes 5 --threshold 1"
BENCH_CLUSTER_7_3 = ".venv/bin/python bench/cluster.py --nodes 7 --threshold 3"
BENCH_CLUSTER_FREEZE = ".venv/bin/python bench/cluster.py --freeze 2"
BENCH_CLUSTER_RETRIEVAL = ".venv/bin/python bench/cluster.py --retrieval"
BENCH_FUZZ = ".venv/bin/python bench/fuzz.py --seconds 60"
BENCH_FAULTS = ".venv/bin/python bench/faults.py --rounds 1000 --seed 1"
BENCH_FAULTS_LIVENESS = (".venv/bin/python bench/faults.py --rounds 1000 --scenarios "
                         "freeze-quorum,freeze-kill,restart-freeze,blackhole --hold 1.5 --max-minutes 110")
BENCH_FLOOD = ".venv/bin/python bench/flood.py"
BENCH_RESHARE = ".venv/bin/python bench/reshare.py --keys 1000"
BENCH_BATCH = ".venv/bin/python bench/batch.py"
BENCH_PEERS = ".venv/bin/python bench/peers.py"
BENCH_SCALE = ".venv/bin/python bench/scale.py --keys 1000,100000,1000000"
BENCH_SCALE_BATCH = ".venv/bin/python bench/scale.py --fill batch --keys 20000,100000"
BENCH_MIGRATION = ".venv/bin/python bench/migration.py --keys 100000"
BENCH_FAULTS_DOCKER = ".venv/bin/python bench/faults.py --docker --rounds 30 --seed 1"
DOCKER_IMAGE = "make docker-image"
DOCKER_SUITE = ".venv/bin/python -m pytest tests/docker -q"
INTEGRATOR_INI = "docs/integrators.md:; ocean.ini of an agent that publishes through the Secret Store"
INTEGRATOR_SDK = ("docs/integrators.md:# The SDK against a cluster: `urls` are its nodes' HTTP URLs, `account` an "
                  "eth-account LocalAccount.")
README_PIPELINE = "README.md:from ocean_secret_store import Ocean, SecretStoreClient"
HOOK_ENCRYPTOR = "docs/hooks.md:# my_vault/ocean_plugin.py"
HOOK_BACKEND = "docs/hooks.md:# my_vault/ocean_plugin.py (continued)"
HOOK_ENTRY_POINT = "docs/hooks.md:# my_vault's pyproject.toml"
HOOK_HOST_INI = "docs/hooks.md:; the host's config"
HOOK_PROVIDER_INI = "docs/hooks.md:; the provider's config"

#: Snippet key -> the test (or fixture) of this module that runs it.
RUN_BY: dict[str, str] = {
    DEVNET_UP: "devnet",
    DEVNET_STATUS: "test_devnet_status",
    ENCRYPT: "test_encrypt_and_decrypt",
    DECRYPT: "test_encrypt_and_decrypt",
    NODE: "test_node_command",
    RPC: "test_rpc_command",
    PROVIDER: "test_provider_command",
    AQUARIUS: "test_aquarius_command",
    README_PIPELINE: "test_readme_pipeline_snippet",
    BENCH_CRYPTO: "test_benches_quick",
    BENCH_CLUSTER: "test_benches_quick",
    BENCH_CLUSTER_10: "test_benches_quick",
    BENCH_CLUSTER_5_1: "test_benches_quick",
    BENCH_CLUSTER_7_3: "test_benches_quick",
    BENCH_CLUSTER_FREEZE: "test_benches_quick",
    BENCH_CLUSTER_RETRIEVAL: "test_benches_quick",
    BENCH_FUZZ: "test_benches_quick",
    BENCH_FLOOD: "test_benches_quick",
    BENCH_RESHARE: "test_benches_quick",
    BENCH_BATCH: "test_benches_quick",
    BENCH_PEERS: "test_benches_quick",
    BENCH_SCALE: "test_benches_quick",
    BENCH_SCALE_BATCH: "test_benches_quick",
    BENCH_MIGRATION: "test_benches_quick",
    BENCH_FAULTS: "test_benches_quick",
    BENCH_FAULTS_LIVENESS: "test_benches_quick",
    INTEGRATOR_INI: "test_integrators_agent_config",
    INTEGRATOR_SDK: "test_integrators_sdk_snippet",
    HOOK_ENCRYPTOR: "test_hooks_plugin_example",
    HOOK_BACKEND: "test_hooks_plugin_example",
    HOOK_ENTRY_POINT: "test_hooks_plugin_example",
    HOOK_HOST_INI: "test_hooks_plugin_example",
    HOOK_PROVIDER_INI: "test_hooks_plugin_example",
    DEVNET_DOWN: "test_devnet_down",
}

#: Snippet key -> why it is not run here.
EXEMPT: dict[str, str] = {
    "make demo": "runs `python -m ocean_secret_store.cli demo`, i.e. demo.run_demo() after `make setup`; "
    "tests/test_demo.py::test_cluster_demo_end_to_end runs the same run_demo on its own devnet, and a second "
    "demo devnet here would only double the time",
    "make test": "recursion: `make test` runs this test",
    BENCH_FAULTS_DOCKER: "needs a Docker engine and builds the image (minutes); tests/docker/test_stack.py runs the "
    "same faults (docker kill, pause, network disconnect, restart) on the same compose stack, and the docker suite "
    "is skipped, not run, where no engine answers",
    DOCKER_IMAGE: "needs a Docker engine (and root for its debootstrap base); tests/docker builds the image through "
    "the same docker/build.py",
    DOCKER_SUITE: "needs a Docker engine; it is part of `make test` (tests/docker), which runs this test",
}


def test_every_snippet_is_run_or_exempted() -> None:
    found = set(all_snippets())
    assert not set(RUN_BY) & set(EXEMPT), "a snippet is both run and exempt"
    unhandled = sorted(found - set(RUN_BY) - set(EXEMPT))
    assert not unhandled, "snippets in the docs that no test runs and no exemption names:\n" + "\n".join(
        f"  {all_snippets()[k].doc}:{all_snippets()[k].line}: {k}" for k in unhandled)
    stale = sorted((set(RUN_BY) | set(EXEMPT)) - found)
    assert not stale, f"RUN_BY/EXEMPT name snippets the docs no longer have: {stale}"
    missing = sorted({name for name in RUN_BY.values() if not callable(globals().get(name))})
    assert not missing, f"RUN_BY names runners that do not exist: {missing}"
    assert all(reason.strip() for reason in EXEMPT.values())


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("```\nmake demo\n``` More prose.\n", "text after a closing fence"),
        ("```\nmake demo\n", "never closed"),
        ("```yaml\na: 1\n```\n", "info string 'yaml'"),
    ],
)
def test_malformed_fences_are_refused(text: str, problem: str) -> None:
    # The README once closed a block with "``` Node configs ...", which CommonMark does not
    # accept as a closing fence: the paragraph became code. The parser refuses such a line.
    with pytest.raises(MalformedFence, match=problem):
        snippets_in(text, "t.md")


def test_shell_lines_become_commands_without_their_comments() -> None:
    text = "text\n```bash\n# a comment\nmake x   # why\n\n```\nafter `a/b.py`\n```\n```\n"
    assert parse_blocks(text, "t.md") == [(3, "bash", "# a comment\nmake x   # why\n\n"), (9, "", "")]
    assert [(s.line, s.kind, s.key) for s in snippets_in(text, "t.md")] == [(4, "shell", "make x")]
    assert prose_of(text, "t.md").split("\n") == ["text", "", "", "", "", "", "after `a/b.py`", "", ""]
    assert snippet(DEVNET_UP).text.endswith("# chain, contracts, key servers, RPC, provider")
    # An option for a documented command goes before its comment (it once went into the comment,
    # and the benches ran in full instead of --quick).
    assert with_option("python bench/x.py --a 1   # what it does", "--quick") == "python bench/x.py --a 1 --quick"


# -- the paths and names the prose points at --------------------------------------------------

PACKAGE = ROOT / "ocean_secret_store"
PATH_ROOTS = {"ocean_secret_store", "tests", "bench", "docs", "tools"} | {p.stem for p in PACKAGE.iterdir()}
CODE_SPAN = re.compile(r"`([^`\n]+)`")
PATHLIKE = re.compile(r"[\w.-]+(/[\w.-]+)*/?")


def named_in_prose() -> list[tuple[str, str]]:
    """``(where, code span)`` of every inline code span outside the code blocks of the docs."""
    out = []
    for path in DOCS:
        doc = str(path.relative_to(ROOT))
        for number, line in enumerate(prose_of(path.read_text(), doc).splitlines(), 1):
            out += [(f"{doc}:{number}", span) for span in CODE_SPAN.findall(line)]
    return out


def resolves(dotted: str) -> bool:
    """``pkg.module.attr`` names an importable module, or an attribute of one."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def test_paths_and_names_in_the_docs_exist() -> None:
    # A path the prose names (`node/transport.py`, `tests/vectors/`) is relative to the checkout
    # or, as the docs write modules, to the package; a dotted `ocean_secret_store.x.Y` must import.
    # Run-time paths (`.devnet/...`, `data_dir/...`) do not start with a checkout or package name.
    broken = []
    for where, span in named_in_prose():
        if span.startswith("ocean_secret_store.") and re.fullmatch(r"[\w.]+", span):
            if not resolves(span):
                broken.append(f"{where}: {span} does not import")
        elif (PATHLIKE.fullmatch(span) and "/" in span and span.split("/")[0] in PATH_ROOTS
              and not ((ROOT / span).exists() or (PACKAGE / span).exists())):
            broken.append(f"{where}: {span} does not exist")
    assert not broken, "the docs point at things that are not there:\n" + "\n".join(broken)


# -- running commands -------------------------------------------------------------------------


def sh(command: str, cwd: Path, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def expect_ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, f"exit {out.returncode}\nstdout: {out.stdout[-3000:]}\nstderr: {out.stderr[-3000:]}"
    return out.stdout


def serve(command: str, cwd: Path, env: dict[str, str], ready: Callable[[], bool], timeout: float = 60) -> None:
    """Start a server command, wait until ``ready()``, stop it with SIGTERM and expect exit 0."""
    log = cwd / f"serve-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        # exec: bash becomes the server, so SIGTERM reaches it and its exit code is ours.
        proc = subprocess.Popen(["bash", "-c", "exec " + command], cwd=cwd, env=env, stdout=out, stderr=out,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{command!r} never became ready (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"{command!r} did not stop on SIGTERM:\n{log.read_text()[-3000:]}")
    assert code == 0, f"{command!r} exited {code} on SIGTERM:\n{log.read_text()[-3000:]}"


def answers(method: str, url: str, **kwargs: Any) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return requests.request(method, url, timeout=2, **kwargs).status_code == 200
        except requests.RequestException:
            return False

    return probe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Devnet:
    work: Path  # the working directory of every command
    state: dict[str, Any]
    env: dict[str, str]

    @property
    def state_dir(self) -> Path:
        return self.work / ".devnet"

    def key(self, role: str) -> str:
        return str(self.state["accounts"][role]["private_key"])


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """The README's `devnet up`, run in a temporary directory; stopped at the end in any case."""
    from ocean_secret_store import devnet as devnet_module

    work = tmp_path_factory.mktemp("docs")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OCEAN_DISABLED_PLUGINS", None)
    expect_ok(sh(fill(DEVNET_UP, VENV), work, env))
    state = json.loads((work / ".devnet" / "devnet.json").read_text())
    # MY_KEY: the README's account variable; the devnet's funded publisher account is the one
    # whose DIDs the ACL contract lets it read.
    env["MY_KEY"] = state["accounts"]["publisher"]["private_key"]
    try:
        yield Devnet(work, state, env)
    finally:
        if (work / ".devnet" / "devnet.json").exists():
            devnet_module.down(work / ".devnet")  # a no-op after test_devnet_down


@pytest.mark.integration
def test_devnet_status(devnet: Devnet) -> None:
    out = expect_ok(sh(fill(DEVNET_STATUS, VENV), devnet.work, devnet.env))
    for node in devnet.state["nodes"]:
        assert node["http_url"] in out


@pytest.mark.integration
def test_encrypt_and_decrypt(devnet: Devnet) -> None:
    from eth_account import Account

    from ocean_secret_store.chain.keeper import Keeper

    # did:op:... -> a DID the test registers on chain as the MY_KEY account: its owner passes the
    # ACL contract's check on decryption, and no server key exists for it yet (encrypt makes one).
    did_id = os.urandom(32)
    Keeper(devnet.state["chain_url"], devnet.state["contracts"]).register_did(
        Account.from_key(devnet.key("publisher")), did_id)
    did = ("did:op:...", "did:op:" + did_id.hex())
    data = b"station,temperature\n" + b"".join(b"s%d,%d\n" % (i, i % 40) for i in range(2000))
    (devnet.work / "data.csv").write_bytes(data)  # the file the README encrypts

    expect_ok(sh(fill(ENCRYPT, VENV, did), devnet.work, devnet.env))
    assert (devnet.work / "data.enc").stat().st_size == len(data) + 16
    (devnet.work / "data.csv").unlink()  # the README's decrypt writes data.csv again
    expect_ok(sh(fill(DECRYPT, VENV, did), devnet.work, devnet.env))
    assert (devnet.work / "data.csv").read_bytes() == data


@pytest.mark.integration
def test_node_command(devnet: Devnet) -> None:
    from ocean_secret_store import devnet as devnet_module

    # node.toml -> node 0's config as the devnet wrote it; node 0 is stopped first (its ports are
    # the config's) and started again by the devnet afterwards.
    node = devnet.state["nodes"][0]
    devnet_module.stop_node(devnet.state_dir, 0)
    try:
        peers = len(devnet.state["nodes"]) - 1

        def in_mesh() -> bool:
            try:
                health = requests.get(node["http_url"] + "/health", timeout=2)
            except requests.RequestException:
                return False
            return health.status_code == 200 and health.json().get("connected_peers") == peers

        serve(fill(NODE, VENV, ("node.toml", node["config"])), devnet.work, devnet.env, in_mesh)
    finally:
        devnet_module.restart_nodes(devnet.state_dir, [0])


@pytest.mark.integration
def test_rpc_command(devnet: Devnet) -> None:
    port = free_port()
    command = fill(
        RPC, VENV,
        ("--keystore DIR", "--keystore .devnet/keystore"),  # the devnet's keystores for the JSON-RPC face
        # 8545 is every chain's conventional port and may be taken on a shared machine: a free one.
        ("127.0.0.1:8545", f"127.0.0.1:{port}"),
        ("--chain-url URL", f"--chain-url {devnet.state['chain_url']}"),  # the devnet's anvil
    )
    # eth_chainId is proxied to the chain: an answer shows both the listener and --chain-url work.
    call = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    serve(command, devnet.work, devnet.env, answers("POST", f"http://127.0.0.1:{port}", json=call))


class _CaseKeepingParser(configparser.ConfigParser):
    """The Ocean config's keys keep their case (``contract.<Name>``), as its loader reads them."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


@pytest.mark.integration
def test_provider_command(devnet: Devnet) -> None:
    # ocean.ini -> a copy of the devnet's ocean.ini (beside it: its relative paths stay valid)
    # whose [provider] listens on a free port, since the devnet's own provider holds the
    # configured one, and names a variable with the provider account's key if it names none.
    port = free_port()
    ini = _CaseKeepingParser(interpolation=None)
    ini.read(devnet.state_dir / "ocean.ini")
    if not ini.has_section("provider"):
        ini.add_section("provider")
    ini["provider"]["listen"] = f"127.0.0.1:{port}"
    key_env = ini["provider"].setdefault("account.key_env", "PROVIDER_KEY")
    config = devnet.state_dir / "provider.ini"
    with config.open("w") as out:
        ini.write(out)
    env = {**devnet.env, key_env: devnet.key("provider")}
    serve(fill(PROVIDER, VENV, ("ocean.ini", str(config))), devnet.work, env,
          answers("GET", f"http://127.0.0.1:{port}/health"))


@pytest.mark.integration
def test_aquarius_command(devnet: Devnet) -> None:
    # A second Aquarius over the devnet's metadata store (SQLite in WAL mode serves both), on a free
    # port: 5000 is Aquarius' conventional port and may be taken on a shared machine.
    port = free_port()
    command = fill(AQUARIUS, VENV, ("127.0.0.1:5000", f"127.0.0.1:{port}"))
    serve(command, devnet.work, devnet.env, answers("GET", f"http://127.0.0.1:{port}/api/v1/aquarius/assets"))


@pytest.mark.integration
def test_readme_pipeline_snippet(devnet: Devnet, monkeypatch: pytest.MonkeyPatch) -> None:
    from eth_account import Account

    from ocean_secret_store.chain.keeper import Keeper

    # The devnet's file server (files_dir, files_url): the one loopback origin its provider fetches from.
    data = b"a,b\n1,2\n"
    (Path(devnet.state["files_dir"]) / "tiny.csv").write_bytes(data)
    publisher = Account.from_key(devnet.key("publisher"))
    consumer = Account.from_key(devnet.key("consumer"))
    # ordering locks the price: the consumer takes 2 OCEAN from the dispenser first
    Keeper(devnet.state["chain_url"], devnet.state["contracts"]).request_tokens(consumer, 2)
    # The snippet's free names: an asset of one file served by the devnet, priced 1 OCEAN, and
    # the devnet's funded publisher, consumer and provider accounts.
    namespace: dict[str, Any] = {
        "metadata": {"main": {
            "type": "dataset", "name": "docs test", "author": "test_docs", "license": "CC0",
            "dateCreated": "2026-01-01T00:00:00Z", "price": str(10**18),
            "files": [{"url": f"{devnet.state['files_url']}/tiny.csv", "contentType": "text/csv",
                       "name": "tiny.csv", "contentLength": str(len(data))}],
        }},
        "publisher_account": publisher,
        "consumer_account": consumer,
        "provider_address": devnet.state["provider_address"],
    }
    monkeypatch.chdir(devnet.work)  # Ocean(".devnet/ocean.ini") is relative to where the user stands
    item = snippet(README_PIPELINE)
    exec(compile(item.text, f"{item.doc}:{item.line}", "exec"), namespace)
    assert (Path(namespace["path"]) / "tiny.csv").read_bytes() == data


def test_hooks_plugin_example(tmp_path: Path) -> None:
    from ocean_secret_store.ocean.config import load_config
    from ocean_secret_store.ocean.plugins import get_plugin_manager, select_access_backend, select_encryptor

    # The two Python blocks are one module (the second says "continued"), named by the TOML block.
    entry_points = tomllib.loads(snippet(HOOK_ENTRY_POINT).text)["project"]["entry-points"]["ocean"]
    assert entry_points == {"my_vault": "my_vault.ocean_plugin"}
    module = types.ModuleType(entry_points["my_vault"])
    for key in (HOOK_ENCRYPTOR, HOOK_BACKEND):
        item = snippet(key)
        assert item.text.splitlines()[0].startswith("# " + entry_points["my_vault"].replace(".", "/") + ".py")
        exec(compile(item.text, f"{item.doc}:{item.line}", "exec"), module.__dict__)
    pm = get_plugin_manager(environ={})
    pm.register(module, name="my_vault")
    pm.check_pending()  # the example's hook names and arguments match the specs

    host_ini, provider_ini = tmp_path / "host.ini", tmp_path / "provider.ini"
    host_ini.write_text(snippet(HOOK_HOST_INI).text)
    provider_ini.write_text(snippet(HOOK_PROVIDER_INI).text)
    encryptor = select_encryptor(pm, load_config(host_ini, environ={}))
    backend = select_access_backend(pm, load_config(provider_ini, environ={}))
    assert (type(encryptor).__name__, encryptor.name) == ("VaultEncryptor", "vault")
    assert (type(backend).__name__, backend.name) == ("VaultBackend", "vault")


#: The benches the docs name, each run in its --quick mode (seconds, not minutes), with what its
#: output must show. Those that measure a cluster start their own devnet in a temporary directory
#: and remove it.
QUICK_CHECKS: dict[str, str] = {
    BENCH_CRYPTO: r"ECIES encrypt",
    BENCH_CLUSTER: r"shadow retrieval",
    BENCH_CLUSTER_10: r"shadow retrieval",
    BENCH_CLUSTER_5_1: r"ECDSA signing",
    BENCH_CLUSTER_7_3: r"ECDSA signing",
    BENCH_CLUSTER_FREEZE: r"failures while frozen\s+0 of [1-9]",
    BENCH_CLUSTER_RETRIEVAL: r"SDK throughput, 16 threads",
    BENCH_FUZZ: r"findings: 0",
    BENCH_FLOOD: r"refused with 429",
    BENCH_RESHARE: r"verify after refresh \(new node as entry\)\s+10 of 10 right, failures 0",
    BENCH_FAULTS: r"violations: 0",
    BENCH_FAULTS_LIVENESS: r"violations: 0",
    BENCH_BATCH: r"per-key cost, single / batch",
    BENCH_PEERS: r"ours: shadow retrieval end to end",
    BENCH_SCALE: r"verified end to end \(recovered document key = the one loaded\)\s+10 of 10 right",
    BENCH_SCALE_BATCH: r"keys generated by \d+ requests: [\d,]+ keys/s overall(.|\n)*10 of 10 right",
    BENCH_MIGRATION: r"records_to_migrate then(.|\n)*during 10 of 10, after 10 of 10 right",
}


def with_option(command: str, option: str) -> str:
    """``command`` (a shell line of the docs) with ``option`` added at its end: before its
    ``# comment``, where an appended option would be part of the comment, never run."""
    return shlex.join([*shlex.split(command, comments=True), option])


@pytest.mark.integration
@pytest.mark.parametrize("key", list(QUICK_CHECKS))
def test_benches_quick(devnet: Devnet, key: str) -> None:
    out = expect_ok(sh(with_option(fill(key, VENV, BENCH), "--quick"), devnet.work, devnet.env, timeout=300))
    assert re.search(QUICK_CHECKS[key], out), out


def test_integrators_agent_config(tmp_path: Path) -> None:
    from ocean_secret_store.ocean.config import load_config
    from ocean_secret_store.ocean.encryptors import SecretStoreEncryptor
    from ocean_secret_store.ocean.plugins import get_plugin_manager, select_access_backend, select_encryptor
    from ocean_secret_store.ocean.provider.backends import SecretStoreBackend

    # The agent's config as the page gives it: the plugin (found through its entry point) offers the
    # Secret Store encryptor and backend over the five nodes listed, at the threshold given.
    ini = tmp_path / "ocean.ini"
    ini.write_text(snippet(INTEGRATOR_INI).text)
    config = load_config(ini, environ={})
    pm = get_plugin_manager(environ={})
    encryptor = select_encryptor(pm, config)
    assert isinstance(encryptor, SecretStoreEncryptor)
    assert (len(encryptor.cluster_urls), encryptor.threshold) == (5, 2)
    assert isinstance(select_access_backend(pm, config), SecretStoreBackend)
    assert config.provider_key_env == "PROVIDER_KEY"


@pytest.mark.integration
def test_integrators_sdk_snippet(devnet: Devnet) -> None:
    from eth_account import Account

    # The snippet's free names: the devnet's node URLs and its funded publisher account (under the
    # contract ACL a key's author is always served; ECDSA needs 2t < N: t = 1 of 5 nodes).
    namespace: dict[str, Any] = {
        "urls": [node["http_url"] for node in devnet.state["nodes"]],
        "account": Account.from_key(devnet.key("publisher")),
    }
    item = snippet(INTEGRATOR_SDK)
    exec(compile(item.text, f"{item.doc}:{item.line}", "exec"), namespace)


@pytest.mark.integration
def test_devnet_down(devnet: Devnet) -> None:
    out = expect_ok(sh(fill(DEVNET_DOWN, VENV), devnet.work, devnet.env))
    assert re.search(r"stopped [1-9]\d* process", out), out
    status = sh(fill(DEVNET_STATUS, VENV), devnet.work, devnet.env)
    assert status.returncode == 1  # nothing healthy any more (the README: 1 = failure)
