"""Every lint or type suppression names its rule and says why on the same line.

``# noqa: RULE -- reason`` (or ``- reason``) and ``# type: ignore[code]  # reason`` (or ``-- reason``);
a bare ``# noqa`` or ``# type: ignore`` silences everything and says nothing, so it fails too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(
    [*ROOT.joinpath("ocean_secret_store").rglob("*.py"), *ROOT.joinpath("tests").rglob("*.py"),
     *ROOT.joinpath("bench").glob("*.py"), ROOT / "conftest.py"]
)

NOQA = re.compile(r"#\s*noqa\b(?P<rest>.*)$")
NOQA_OK = re.compile(r":\s*[A-Z]+[0-9]+(\s*,\s*[A-Z]+[0-9]+)*\s+(--?|#)\s*\S.*")
IGNORE = re.compile(r"#\s*type:\s*ignore\b(?P<rest>.*)$")
IGNORE_OK = re.compile(r"\[[a-z-]+(,\s*[a-z-]+)*\]\s*(#|--?)\s*\S.*")


def problems_in(text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        noqa = NOQA.search(line)
        if noqa and not NOQA_OK.fullmatch(noqa["rest"]):
            found.append(f"{number}: noqa without a rule and a reason: {line.strip()}")
        ignore = IGNORE.search(line)
        if ignore and not IGNORE_OK.fullmatch(ignore["rest"]):
            found.append(f"{number}: type: ignore without a code and a reason: {line.strip()}")
    return found


def test_every_suppression_names_its_rule_and_reason() -> None:
    assert len(FILES) > 100
    problems = [f"{path.relative_to(ROOT)}:{p}" for path in FILES
                for p in problems_in(path.read_text(encoding="utf-8"))
                if path != Path(__file__)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        ("import x  # noqa: PLC0415 -- web3 costs 1 s", True),
        ("except Exception:  # noqa: BLE001 - a request must get an answer", True),
        ("import x  # noqa: E402, PLC0415 -- path first", True),
        ("import x  # noqa", False),
        ("import x  # noqa: PLC0415", False),
        ("x = 1  # type: ignore[assignment]  # frozen on purpose", True),
        ("x = 1  # type: ignore[assignment,misc] # typeshed is wrong here", True),
        ("x = 1  # type: ignore[index]", False),
        ("x = 1  # type: ignore", False),
        ("x = 1  # type: ignore  # no code", False),
    ],
)
def test_the_rule_itself(line: str, ok: bool) -> None:
    assert (problems_in(line) == []) is ok
