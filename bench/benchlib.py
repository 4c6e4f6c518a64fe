"""What the benches against a live devnet share: a percentile, a Parity-answer check, waiting until
key servers are ready, and freezing, thawing and starting key server processes (imported by the
benches, which run as scripts with this folder first on sys.path)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import requests

from ocean_secret_store import devnet
from ocean_secret_store.protocol import http as codec


def pct(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples`` by nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(samples: list[float]) -> str:
    """``p50 .. p99 .. max ..`` of ``samples`` (seconds) in milliseconds, or ``-`` for none."""
    if not samples:
        return f"{'-':>60}"
    return (f"p50 {pct(samples, 0.5) * 1e3:8.1f} ms   p99 {pct(samples, 0.99) * 1e3:8.1f} ms"
            f"   max {max(samples) * 1e3:8.1f} ms")


async def expect(response: aiohttp.ClientResponse) -> bytes:
    """The body of a 200 answer; any other status raises with Parity's error text."""
    body = await response.read()
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {codec.decode_error_body(body) if body else ''}")
    return body


# -- readiness ----------------------------------------------------------------------------------


@dataclass
class Readiness:
    """What a key server says about its peers: ``GET /ready`` (200 or 503, the same JSON shape), or,
    where that route is still missing (404), ``GET /health``'s ``connected_peers`` against the
    peers expected (``source`` says which). Peer lists hold node ids as the node reports them."""

    ready: bool
    source: str
    missing: list[str] = field(default_factory=list)
    suspected: list[str] = field(default_factory=list)
    connecting: list[str] = field(default_factory=list)
    connected_peers: int | None = None
    #: /ready: peers connected and unsuspected, and how many the node needs to be ready.
    usable_peers: int | None = None
    min_ready_peers: int | None = None

    @property
    def complete(self) -> bool:
        """Ready with every peer connected: nothing missing, suspected or still connecting."""
        return self.ready and not (self.missing or self.suspected or self.connecting)


def readiness(url: str, expected_peers: int, *, http: requests.Session | None = None, timeout: float = 1.0,
              verify: bool | str = True) -> Readiness | None:
    """The readiness of the key server at ``url`` (None: no answer, or not the expected JSON).

    ``/ready`` counts when it answers 200 or 503 with a JSON object holding ``ready``; any other
    answer means the node has no such route yet (404, or 400 from a node that reads every other
    path as Parity's API), and ``/health`` is asked instead.
    """
    get = (http or requests).get
    try:
        response = get(url + "/ready", timeout=timeout, verify=verify)
        body = _json_object(response) if response.status_code in (200, 503) else None
        if body is not None and "ready" in body:
            return Readiness(ready=response.status_code == 200 and bool(body["ready"]), source="ready",
                             missing=list(body.get("missing") or []), suspected=list(body.get("suspected") or []),
                             connecting=list(body.get("connecting") or []),
                             usable_peers=_int_or_none(body.get("usable_peers")),
                             min_ready_peers=_int_or_none(body.get("min_ready_peers")))
        # No /ready route: 404, or 400 from a node that parses every other path as Parity's API.
        response = get(url + "/health", timeout=timeout, verify=verify)
        if response.status_code != 200:
            return None
        body = response.json()
    except (requests.RequestException, ValueError, AttributeError, TypeError):
        return None
    connected = int(body.get("connected_peers", -1))
    return Readiness(ready=connected >= expected_peers, source="health",
                     missing=list(body.get("disconnected_peers") or []), connected_peers=connected)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _json_object(response: requests.Response) -> dict[str, object] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class NotReady(TimeoutError):
    """Key servers not ready within the time allowed; ``states`` maps each to its last readiness."""

    def __init__(self, message: str, states: dict[str, Readiness | None]) -> None:
        super().__init__(message)
        self.states = states


def wait_ready(urls: Sequence[str], expected_peers: int, timeout: float, *, complete: bool = True,
               http: requests.Session | None = None, verify: bool | str = True, poll: float = 0.05) -> float:
    """Wait until every key server in ``urls`` is ready (readiness, not liveness); the seconds waited.

    Ready is ``/ready`` answering 200 and, with ``complete``, naming no peer missing, suspected or
    connecting; where ``/ready`` answers 404 (a node without the route), ``/health`` reporting at
    least ``expected_peers`` connected peers. ``expected_peers`` counts peers, the node itself not
    included: N - 1 for the whole mesh.

    :raises NotReady: some key server is not ready after ``timeout`` s.
    """
    started = time.monotonic()
    states: dict[str, Readiness | None] = dict.fromkeys(urls)
    pending = list(urls)
    while True:
        for url in list(pending):
            state = states[url] = readiness(url, expected_peers, http=http, verify=verify)
            if state is not None and (state.complete if complete else state.ready):
                pending.remove(url)
        if not pending:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            detail = "; ".join(f"{url}: {describe(states[url])}" for url in pending)
            raise NotReady(f"not ready within {timeout:.0f} s: {detail}", states)
        time.sleep(poll)


def describe(state: Readiness | None, names: Mapping[str, str] | None = None) -> str:
    """One line on a readiness answer; node ids by ``names`` (lower-case ``0x`` hex -> name), else shortened."""
    if state is None:
        return "no answer"
    parts = [f"ready={state.ready} (/{state.source})"]
    if state.connected_peers is not None:
        parts.append(f"connected_peers={state.connected_peers}")
    if state.usable_peers is not None:
        parts.append(f"usable_peers={state.usable_peers}/{state.min_ready_peers} needed")
    for name in ("missing", "suspected", "connecting"):
        ids = getattr(state, name)
        if ids:
            parts.append(f"{name}=[{', '.join((names or {}).get(str(i).lower()) or short(i) for i in ids)}]")
    return " ".join(parts)


def short(node_id: object) -> str:
    text = str(node_id)
    return text[:10] + "…" if len(text) > 12 else text


# -- key server processes -------------------------------------------------------------------------


def freeze(pid: int) -> None:
    """SIGSTOP the key server's process group: its TCP connections stay open, nothing answers."""
    os.killpg(pid, signal.SIGSTOP)


def thaw(pid: int | None) -> None:
    """SIGCONT the key server's process group (a group already gone is no error)."""
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGCONT)


def thaw_all(state_dir: Path) -> None:
    """SIGCONT every key server of the devnet (before stopping it: a frozen node cannot take SIGTERM)."""
    state = devnet.DevnetState.load(state_dir)
    for node in state.nodes if state else []:
        if node.pid and devnet._alive(node.pid):
            thaw(node.pid)


def start_node(state_dir: Path, index: int, config: Path | None = None) -> int:
    """Start key server ``index`` of the devnet, on ``config`` (default: its own), as the devnet
    starts its nodes (``ocean-secret-store node`` in its own process group, logging to the node's
    log), record its pid in ``devnet.json`` (so ``devnet down`` stops it) and return at once: no
    waiting for the mesh (:func:`wait_ready` does that)."""
    state = devnet.DevnetState.require(state_dir)
    node = state.nodes[index]
    if devnet._alive(node.pid):
        raise RuntimeError(f"key server {index} is still running (pid {node.pid})")
    log = Path(node.log)
    with open(log, "ab") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "ocean_secret_store.cli", "node", "--config", str(config or node.config),
             "--log-file", str(log)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    node.pid = process.pid
    state.save()
    return process.pid
