"""What the HTTP benches share: a percentile and a Parity-answer check (imported by the benches,
which run as scripts with this folder first on sys.path)."""

from __future__ import annotations

import aiohttp

from ocean_secret_store.protocol import http as codec


def pct(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples`` by nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def expect(response: aiohttp.ClientResponse) -> bytes:
    """The body of a 200 answer; any other status raises with Parity's error text."""
    body = await response.read()
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {codec.decode_error_body(body) if body else ''}")
    return body
