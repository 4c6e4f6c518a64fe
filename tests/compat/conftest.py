"""Fixtures of the compatibility suite: the Python 3.7 environment with the real Parity-era Ocean
stack (env37.py; built here if ``make compat-env`` has not), a devnet made by the project's own
``devnet up``, and :class:`Driver`, which runs one operation of driver37.py in that environment.

No Python 3.7 on the machine: every test here is skipped with that reason. A 3.7 that is found
but whose environment cannot be built fails the tests instead.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocean_secret_store import devnet
from ocean_secret_store.testing.devnets import running_devnet
from tests.compat import env37

DRIVER = Path(__file__).resolve().parent / "driver37.py"
#: One operation of the stack; a publish with key generation takes a few seconds, squid-py's
#: flows more (and web3 4.5 waits for receipts): generous, but a hang still ends.
OP_TIMEOUT = 240.0


@pytest.fixture(scope="session")
def python37() -> Path:
    """The python of the built 3.7 environment (built now if absent)."""
    try:
        python = env37.ensure()
    except env37.CompatEnvError as exc:
        pytest.fail(f"the compatibility environment cannot be built: {exc}", pytrace=False)
    if python is None:
        pytest.skip(env37.NOT_FOUND)
    return python


@pytest.fixture(scope="session")
def brizo_python37() -> Path:
    """The python of the built 3.7 environment of the real Brizo and events handler (built now if absent)."""
    try:
        python = env37.ensure("brizo")
    except env37.CompatEnvError as exc:
        pytest.fail(f"the compatibility environment of Brizo cannot be built: {exc}", pytrace=False)
    if python is None:
        pytest.skip(env37.NOT_FOUND)
    return python


class StackError(Exception):
    """The Parity-era stack raised: ``type`` is its exception class name, ``message`` its text."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(f"{answer['module']}.{answer['type']}: {answer['message']}")
        self.type: str = answer["type"]
        self.message: str = answer["message"]


class Driver:
    """Runs driver37.py operations with the 3.7 environment against one devnet's ``devnet.json``."""

    def __init__(self, python: Path, state: devnet.DevnetState) -> None:
        self.python, self.devnet_json = python, state.path

    def __call__(self, op: str, **args: Any) -> Any:
        """The operation's result; :class:`StackError` if the stack raised."""
        request = json.dumps({"op": op, "devnet": str(self.devnet_json), "args": args})
        # -I: no PYTHONPATH, user site or script folder: only the environment's own packages.
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        done = subprocess.run([str(self.python), "-I", str(DRIVER)], input=request, capture_output=True, text=True,
                              timeout=OP_TIMEOUT, env=env, check=False)
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise AssertionError(f"driver37.py {op} gave no answer (exit {done.returncode}):\n{done.stderr}") from None
        if not answer["ok"]:
            raise StackError(answer)
        return answer["result"]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.DevnetState]:
    with running_devnet(tmp_path_factory.mktemp("compat-devnet"), 3, acl="contract") as state:
        yield state


@pytest.fixture(scope="module")
def drive(python37: Path, net: devnet.DevnetState) -> Driver:
    return Driver(python37, net)
