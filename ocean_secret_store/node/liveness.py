"""Failure detection between key servers: round-trip estimates, hedge delays and suspicion.

A frozen peer (SIGSTOP, a swapped-out VM, a link that silently drops packets) keeps its TCP
connection open, so the transport alone notices it only when keep-alives go unanswered for
seconds. The cluster core notices it sooner, from two signals, and this module keeps the books
(pure: the caller passes the time, nothing here does I/O):

* **Per-request round trips.** Every answered request is a sample of that peer's latency,
  smoothed as TCP does (RFC 6298: ``srtt``, ``rttvar``). :meth:`Liveness.hedge_delay` is how
  long an operation waits for a member before asking a spare: ``srtt + 4 rttvar`` of the
  slowest member waited for, clamped to ``[min_hedge, max_hedge]``.
* **Suspicion.** A member an operation hedged around is *suspected* at once; so is a peer
  silent (no frame at all, keep-alive pongs included) for longer than ``silence``. A suspected
  peer is chosen last for new groups. Suspicion ends with the first frame heard from the peer
  after it began: a live but busy peer answers the keep-alive probe the core sends when it
  suspects it within a round trip, a frozen one does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

#: RFC 6298's gains for the smoothed round trip and its variation.
_ALPHA: Final = 1 / 8
_BETA: Final = 1 / 4


@dataclass(slots=True)
class _Peer:
    srtt: float | None = None
    rttvar: float = 0.0
    suspected_at: float | None = None
    samples: int = 0


@dataclass(slots=True)
class Liveness:
    """Round-trip estimates and suspicion for every peer of one node.

    ``last_heard(peer)`` gives the time (same clock as ``now``) of the last frame received from
    ``peer``, or None if none was since it connected.
    """

    last_heard: Callable[[bytes], float | None]
    #: Floor and ceiling of the hedge delay, seconds.
    min_hedge: float = 0.02
    max_hedge: float = 0.5
    #: A connected peer silent for longer than this is suspected (keep-alives keep live links busier).
    silence: float = 2.0
    _peers: dict[bytes, _Peer] = field(default_factory=dict)

    def _peer(self, peer: bytes) -> _Peer:
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _Peer()
        return state

    # -- samples -------------------------------------------------------------------------------

    def observe(self, peer: bytes, rtt: float) -> None:
        """An answer came ``rtt`` seconds after its request."""
        state = self._peer(peer)
        state.samples += 1
        if state.srtt is None:
            state.srtt, state.rttvar = rtt, rtt / 2
        else:
            state.rttvar = (1 - _BETA) * state.rttvar + _BETA * abs(state.srtt - rtt)
            state.srtt = (1 - _ALPHA) * state.srtt + _ALPHA * rtt

    def estimate(self, peer: bytes) -> float | None:
        """``srtt + 4 rttvar`` of ``peer`` (None before its first answer)."""
        state = self._peers.get(peer)
        if state is None or state.srtt is None:
            return None
        return state.srtt + 4 * state.rttvar

    def hedge_delay(self, peers: Iterable[bytes]) -> float:
        """How long to wait for ``peers`` before asking spares: the slowest estimate, clamped.
        A peer never measured counts as the ceiling's quarter (a fresh node is not hedged at once)."""
        worst = 0.0
        for peer in peers:
            estimate = self.estimate(peer)
            worst = max(worst, estimate if estimate is not None else self.max_hedge / 4)
        return min(max(worst, self.min_hedge), self.max_hedge)

    # -- suspicion -----------------------------------------------------------------------------

    def suspect(self, peer: bytes, now: float) -> bool:
        """Suspect ``peer`` from ``now`` on; True if it was not suspected before."""
        state = self._peer(peer)
        fresh = not self._still_suspected(peer, state)
        if fresh:
            state.suspected_at = now
        return fresh

    def _still_suspected(self, peer: bytes, state: _Peer) -> bool:
        if state.suspected_at is None:
            return False
        heard = self.last_heard(peer)
        if heard is not None and heard > state.suspected_at:
            state.suspected_at = None  # heard from it since: suspicion over
            return False
        return True

    def is_suspected(self, peer: bytes, now: float, connected: bool = True) -> bool:
        """Suspected by an operation (until heard from again), or, if connected, silent for too long."""
        if self._still_suspected(peer, self._peer(peer)):
            return True
        if not connected:
            return False
        heard = self.last_heard(peer)
        return heard is not None and now - heard > self.silence

    def describe(self, peer: bytes) -> dict[str, float | int | None]:
        """Figures for ``/ready`` and ``/health`` (milliseconds)."""
        state = self._peers.get(peer)
        if state is None or state.srtt is None:
            return {"srtt_ms": None, "rttvar_ms": None, "samples": 0}
        return {"srtt_ms": round(state.srtt * 1e3, 3), "rttvar_ms": round(state.rttvar * 1e3, 3),
                "samples": state.samples}
