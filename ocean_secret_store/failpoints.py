"""Named crash points for tests of what a crash leaves behind, armed only by the environment.

``OSS_FAILPOINTS="name=exit[,name=exit]"`` arms points by name; it is read once, on first use.
:func:`hit` is a no-op for a point that is not armed (always, in production); for an armed point
with the action ``exit`` it ends the process on the spot with ``os._exit(137)``: no ``finally``,
no flush, no clean shutdown, as SIGKILL would. Stdlib only and the lowest layer, so any module
may place a point.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["ACTIONS", "ENV", "EXIT_STATUS", "armed", "hit"]

log = logging.getLogger(__name__)

#: The environment variable that arms failpoints.
ENV: Final = "OSS_FAILPOINTS"
#: The actions a point can take.
ACTIONS: Final = frozenset({"exit"})
#: The exit status of the ``exit`` action (128 + SIGKILL, as a killed process reports).
EXIT_STATUS: Final = 137

def _parse(spec: str) -> dict[str, str]:
    points: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, action = (part.strip() for part in item.partition("="))
        if not sep or not name or action not in ACTIONS:
            log.error("%s: ignoring %r (expected name=%s)", ENV, item, "|".join(sorted(ACTIONS)))
            continue
        points[name] = action
    return points


@functools.cache
def armed() -> Mapping[str, str]:
    """The armed points (name -> action), parsed from the environment on the first call; a
    WARNING names them then, so a node's log shows that it runs with crash points armed.
    (``armed.cache_clear()`` makes the next call read the environment again.)"""
    points = _parse(os.environ.get(ENV, ""))
    if points:
        log.warning("failpoints armed (%s): %s", ENV, ", ".join(f"{n}={a}" for n, a in sorted(points.items())))
    return MappingProxyType(points)


def hit(name: str) -> None:
    """Pass the crash point ``name``: nothing happens unless it is armed."""
    action = armed().get(name)
    if action == "exit":
        log.critical("failpoint %s: exiting the process now (status %d)", name, EXIT_STATUS)
        for handler in logging.getLogger().handlers:  # the log line is the only trace the test sees
            handler.flush()
        os._exit(EXIT_STATUS)

