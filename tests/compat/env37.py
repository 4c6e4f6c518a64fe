"""The Python 3.7 virtualenvs of the compatibility suite: find a 3.7 interpreter, and build each
named environment from its own pinned requirements file into a cache outside the checkout, keyed
by a hash of that file and of the interpreter, rebuilt when absent or half-built. Two environments
(:data:`ENVIRONMENTS`), as their pins cannot share one: ``squid``, the Parity-era Ocean stack of
the consumer and publisher (``requirements-py37.txt``, squid-py 0.9.3), and ``brizo``, the real
provider side (``requirements-brizo-py37.txt``, ocean-brizo 0.9.7 and ocean-events-handler 0.4.7).

Used by ``make compat-env`` (``python tests/compat/env37.py build``, every environment) before the
tests, and by ``tests/compat/conftest.py``, which builds them too when pytest runs without make. Standard library
only, so it runs as a script from any Python >= 3.11.

Where the interpreter comes from, first found wins: ``PYTHON37`` (a path; set but unusable is an
error), pyenv's versions folder (``$PYENV_ROOT/versions/3.7.*``, default ``~/.pyenv``), then
``python3.7`` on PATH. Where the cache is: ``$XDG_CACHE_HOME/ocean-secret-store/py37-<hash>``
for ``squid``, ``py37-brizo-<hash>`` for ``brizo`` (default ``~/.cache``). A build holds a lock,
so concurrent builds (make and pytest, two checkouts) wait for each other; the folder counts as
built only once its ``.complete`` stamp is written, after every pinned package was seen installed
at its pinned version.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-py37.txt"
BRIZO_REQUIREMENTS = HERE / "requirements-brizo-py37.txt"
#: Bumped when the build steps change in a way that needs a rebuild (part of the cache key).
RECIPE = "1"
STAMP = ".complete"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s#;]+)")


class CompatEnvError(Exception):
    """The 3.7 environment cannot be built (a named interpreter that does not work, a failed install)."""


@dataclass(frozen=True)
class Environment:
    """One named environment: its requirements file, its cache folder's name prefix, and the
    modules that must import in it once built."""

    name: str
    requirements: Path
    prefix: str
    imports: str


ENVIRONMENTS: dict[str, Environment] = {
    "squid": Environment("squid", REQUIREMENTS, "py37",
                         "squid_py, ocean_keeper, ocean_utils, secret_store_client, web3"),
    "brizo": Environment("brizo", BRIZO_REQUIREMENTS, "py37-brizo",
                         "brizo.util, ocean_events_handler.provider_events_monitor, osmosis_on_premise_driver, "
                         "gunicorn, ocean_keeper, ocean_utils, secret_store_client, web3"),
}


@dataclass(frozen=True)
class Interpreter:
    executable: Path  # the real interpreter, not a shim
    version: str  # "3.7.16"
    found_by: str


def _probe(candidate: str) -> tuple[Path, str] | None:
    """``(real executable, version)`` if ``candidate`` runs and is a CPython 3.7, else None."""
    try:
        out = subprocess.run(
            [candidate, "-c", "import sys, platform; print(sys.executable); print(platform.python_version())"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or not lines[1].startswith("3.7."):
        return None
    return Path(lines[0]).resolve(), lines[1]


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in path.name.split("."))


def find_python37() -> Interpreter | None:
    """The first working Python 3.7 (see the module docstring), or None when there is none.

    :raises CompatEnvError: ``PYTHON37`` is set but is not a working Python 3.7.
    """
    named = os.environ.get("PYTHON37")
    if named:
        probed = _probe(named)
        if probed is None:
            raise CompatEnvError(f"PYTHON37={named} is not a working Python 3.7 interpreter")
        return Interpreter(probed[0], probed[1], "PYTHON37")
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    for folder in sorted((pyenv_root / "versions").glob("3.7.*"), key=_version_key, reverse=True):
        probed = _probe(str(folder / "bin" / "python3.7"))
        if probed is not None:
            return Interpreter(probed[0], probed[1], f"pyenv ({folder})")
    on_path = shutil.which("python3.7")
    if on_path:
        probed = _probe(on_path)
        if probed is not None:
            return Interpreter(probed[0], probed[1], f"PATH ({on_path})")
    return None


NOT_FOUND = ("no Python 3.7 interpreter found (set PYTHON37=/path/to/python3.7, or install 3.7 with pyenv, "
             "or put python3.7 on PATH): the compatibility suite with the real squid-py 0.9.3 and Brizo 0.9.7 "
             "is skipped")


def pins(requirements: Path = REQUIREMENTS) -> dict[str, str]:
    """``{normalised name: version}`` of every pinned line."""
    out = {}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line.strip())
        if match:
            out[_normalise(match.group(1))] = match.group(2)
    return out


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ocean-secret-store"


def env_dir(interpreter: Interpreter, requirements: Path = REQUIREMENTS, prefix: str = "py37") -> Path:
    """The cache folder for this requirements file and interpreter (its name is ``prefix`` and their hash)."""
    digest = hashlib.sha256()
    for part in (RECIPE.encode(), str(interpreter.executable).encode(), interpreter.version.encode(),
                 requirements.read_bytes()):
        digest.update(part + b"\0")
    return cache_root() / f"{prefix}-{digest.hexdigest()[:16]}"


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def is_built(env: Path) -> bool:
    return (env / STAMP).is_file() and python_of(env).exists()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(args: list[str], what: str) -> str:
    # Drop what would point pip or Python at another environment than the one being built.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_USER")}
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise CompatEnvError(f"{what} failed (exit {out.returncode}): {' '.join(args)}\n{out.stdout}\n{out.stderr}")
    return out.stdout


def _check_installed(env: Path, requirements: Path, imports: str) -> str:
    """``pip freeze`` of the built environment, after checking every pin is installed as pinned."""
    frozen = _run([str(python_of(env)), "-m", "pip", "freeze", "--all"], "pip freeze")
    installed = {}
    for line in frozen.splitlines():
        match = PIN.match(line.strip())
        if match:
            installed[_normalise(match.group(1))] = match.group(2)
    wrong = {name: (version, installed.get(name)) for name, version in pins(requirements).items()
             if installed.get(name) != version}
    if wrong:
        raise CompatEnvError("the built environment does not match its pins (name: pinned, installed): "
                             + ", ".join(f"{name}: {want}, {got}" for name, (want, got) in sorted(wrong.items())))
    _run([str(python_of(env)), "-I", "-c", f"import {imports}"], "importing the Ocean stack")
    return frozen


def build(interpreter: Interpreter, environment: Environment = ENVIRONMENTS["squid"],
          say: Callable[[str], None] = print) -> Path:
    """The built environment's folder: reused when its stamp is there, else (re)built from scratch."""
    requirements = environment.requirements
    env = env_dir(interpreter, requirements, environment.prefix)
    if is_built(env):
        return env
    with _locked(env.with_name(env.name + ".lock")):
        if is_built(env):  # another process built it while we waited
            return env
        started = time.monotonic()
        say(f"compat: building the Python {interpreter.version} environment {environment.name} in {env} "
            f"(interpreter from {interpreter.found_by})")
        shutil.rmtree(env, ignore_errors=True)  # a half-built one
        try:
            _run([str(interpreter.executable), "-m", "venv", str(env)], "creating the virtualenv")
            _run([str(python_of(env)), "-m", "pip", "install", "--no-deps", "--no-input", "--quiet",
                  "-r", str(requirements)], f"installing {requirements.name}")
            frozen = _check_installed(env, requirements, environment.imports)
        except BaseException:
            shutil.rmtree(env, ignore_errors=True)
            raise
        (env / STAMP).write_text(frozen, encoding="utf-8")
        say(f"compat: built in {time.monotonic() - started:.1f} s")
    return env


def ensure(name: str = "squid") -> Path | None:
    """The python of the built environment ``name`` (built now if absent), or None if no 3.7 is found."""
    interpreter = find_python37()
    if interpreter is None:
        return None
    return python_of(build(interpreter, ENVIRONMENTS[name], say=lambda line: print(line, file=sys.stderr)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("build", "path"),
                        help="build: build the environment unless cached; path: print its python (or nothing)")
    parser.add_argument("--env", choices=(*ENVIRONMENTS, "all"), default=None,
                        help="which environment (build: default all; path: default squid)")
    args = parser.parse_args(argv)
    try:
        interpreter = find_python37()
        if interpreter is None:
            print(f"compat: {NOT_FOUND}", file=sys.stderr)
            return 0
        if args.command == "path":
            environment = ENVIRONMENTS[args.env if args.env not in (None, "all") else "squid"]
            env = env_dir(interpreter, environment.requirements, environment.prefix)
            if is_built(env):
                print(python_of(env))
            return 0
        names = list(ENVIRONMENTS) if args.env in (None, "all") else [args.env]
        for name in names:
            started = time.monotonic()
            env = build(interpreter, ENVIRONMENTS[name])
            print(f"compat: {name}: {python_of(env)} ready ({time.monotonic() - started:.1f} s)")
    except CompatEnvError as exc:
        print(f"compat: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
