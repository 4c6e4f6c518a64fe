"""Crash points: inert unless OSS_FAILPOINTS arms them; an armed ``exit`` ends the process on the
spot (status 137, no cleanup), after a log line naming it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ocean_secret_store import failpoints


@pytest.fixture(autouse=True)
def _fresh_parse() -> Iterator[None]:
    failpoints.armed.cache_clear()
    yield
    failpoints.armed.cache_clear()  # the next user reads its own environment again


def test_nothing_is_armed_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(failpoints.ENV, raising=False)
    assert failpoints.armed() == {}
    failpoints.hit("store.member.prepared")  # a no-op: the test process goes on


def test_the_variable_is_parsed_once_and_malformed_items_are_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(failpoints.ENV, " a=exit, b=explode,c,=exit,,d = exit ")
    with caplog.at_level(logging.WARNING, logger=failpoints.__name__):
        assert failpoints.armed() == {"a": "exit", "d": "exit"}
    assert "failpoints armed (OSS_FAILPOINTS): a=exit, d=exit" in caplog.text
    assert caplog.text.count("ignoring") == 3
    monkeypatch.setenv(failpoints.ENV, "")
    assert failpoints.armed() == {"a": "exit", "d": "exit"}  # read once per process
    failpoints.hit("not-armed")


def test_an_armed_exit_ends_the_process_at_once_without_cleanup() -> None:
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "from ocean_secret_store import failpoints\n"
        "failpoints.hit('other')\n"
        "print('before', flush=True)\n"
        "try:\n"
        "    failpoints.hit('here')\n"
        "finally:\n"
        "    print('cleanup ran', flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, failpoints.ENV: "here=exit"})
    assert out.returncode == failpoints.EXIT_STATUS == 137
    assert out.stdout == "before\n"
    assert "failpoints armed (OSS_FAILPOINTS): here=exit" in out.stderr
    assert "failpoint here: exiting the process now" in out.stderr

