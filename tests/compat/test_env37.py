"""env37.py without building anything: which interpreter it takes, what names the cache, what counts
as built. (The build itself runs in ``make compat-env`` and in the suite's ``python37`` fixture.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.compat import env37


def test_the_pins_hold_the_stack_and_leave_out_the_artifacts() -> None:
    pins = env37.pins()
    assert {name: pins[name] for name in ("squid-py", "ocean-keeper", "ocean-utils", "ocean-secret-store-client",
                                          "web3", "requests")} == {
        "squid-py": "0.9.3", "ocean-keeper": "0.3.5", "ocean-utils": "0.3.7", "ocean-secret-store-client": "0.0.2",
        "web3": "4.5.0", "requests": "2.23.0"}
    assert "keeper-contracts" not in pins  # the devnet's artifacts folder, never the wheel's
    # every requirement line is pinned: --no-deps installs exactly this list
    lines = [line.split("#")[0].strip() for line in env37.REQUIREMENTS.read_text().splitlines()]
    assert all("==" in line for line in lines if line)
    assert len(pins) == len([line for line in lines if line])


def test_the_cache_is_named_by_the_requirements_and_the_interpreter(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    python = env37.Interpreter(Path("/opt/python3.7"), "3.7.16", "test")
    requirements = tmp_path / "requirements.txt"
    requirements.write_bytes(env37.REQUIREMENTS.read_bytes())
    first = env37.env_dir(python, requirements)
    assert first.parent == tmp_path / "ocean-secret-store"
    assert first.name.startswith("py37-")
    assert env37.env_dir(python, requirements) == first
    assert env37.env_dir(env37.Interpreter(Path("/opt/python3.7"), "3.7.17", "test"), requirements) != first
    assert env37.env_dir(env37.Interpreter(Path("/other/python3.7"), "3.7.16", "test"), requirements) != first
    requirements.write_text(requirements.read_text() + "six==1.16.0\n")
    assert env37.env_dir(python, requirements) != first


def test_only_a_stamped_environment_counts_as_built(tmp_path: Path) -> None:
    env = tmp_path / "py37-x"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").write_text("")
    assert not env37.is_built(env)  # a half-built one is rebuilt from scratch
    (env / env37.STAMP).write_text("squid-py==0.9.3\n")
    assert env37.is_built(env)


def test_a_named_interpreter_that_is_not_37_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHON37", sys.executable)  # this suite's own 3.11+
    with pytest.raises(env37.CompatEnvError, match=r"not a working Python 3\.7"):
        env37.find_python37()


def test_no_37_anywhere_is_none_and_the_command_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PYTHON37", raising=False)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert env37.find_python37() is None
    assert env37.main(["build"]) == 0  # make goes on; the suite skips with the reason
    assert "no Python 3.7 interpreter found" in capsys.readouterr().err


def test_pyenv_versions_are_tried_newest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tried = []
    monkeypatch.delenv("PYTHON37", raising=False)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for version in ("3.7.9", "3.7.16", "3.8.18"):
        (tmp_path / "versions" / version / "bin").mkdir(parents=True)
    monkeypatch.setattr(env37, "_probe", tried.append)
    assert env37.find_python37() is None
    assert tried == [str(tmp_path / "versions" / v / "bin" / "python3.7") for v in ("3.7.16", "3.7.9")]


def test_the_brizo_environment_pins_the_real_provider_side_by_itself() -> None:
    brizo = env37.ENVIRONMENTS["brizo"]
    pins = env37.pins(brizo.requirements)
    assert {name: pins[name] for name in ("ocean-brizo", "ocean-events-handler", "ocean-keeper", "ocean-utils",
                                          "osmosis-driver-interface", "pyyaml", "flask", "web3")} == {
        "ocean-brizo": "0.9.7", "ocean-events-handler": "0.4.7", "ocean-keeper": "0.3.5", "ocean-utils": "0.3.5",
        "osmosis-driver-interface": "0.0.7", "pyyaml": "4.2b4", "flask": "1.0.2", "web3": "4.5.0"}
    assert "squid-py" not in pins and "keeper-contracts" not in pins
    lines = [line.split("#")[0].strip() for line in brizo.requirements.read_text().splitlines()]
    assert all("==" in line for line in lines if line)
    assert len(pins) == len([line for line in lines if line])


def test_each_environment_has_its_own_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    python = env37.Interpreter(Path("/opt/python3.7"), "3.7.16", "test")
    squid, brizo = (env37.ENVIRONMENTS[name] for name in ("squid", "brizo"))
    assert squid.requirements == env37.REQUIREMENTS
    squid_dir = env37.env_dir(python, squid.requirements, squid.prefix)
    brizo_dir = env37.env_dir(python, brizo.requirements, brizo.prefix)
    assert squid_dir == env37.env_dir(python)  # the squid-py one is named as before
    assert brizo_dir.name.startswith("py37-brizo-")
    assert brizo_dir.parent == squid_dir.parent and brizo_dir != squid_dir
