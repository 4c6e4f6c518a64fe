"""TCP endpoints as configs and command lines write them: ``host:port`` or ``[v6]:port``.

One parser for the node config, the provider, the RPC face and the Ocean config, so every place
accepts and refuses the same spellings.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

_HOSTNAME: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
_IPV6: Final = re.compile(r"[0-9A-Fa-f:.]+")
MAX_PORT: Final = 65535


class HostPort(NamedTuple):
    """A TCP endpoint; ``str()`` gives ``host:port`` (``[v6]:port`` for IPv6)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(text: str, allow_zero: bool = False) -> HostPort:
    """``host:port`` or ``[v6]:port``; the host is an IP address or a DNS name.

    ``allow_zero`` admits port 0 (the kernel chooses; for listen addresses).

    :raises ValueError: with the reason (callers wrap it in their own error).
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError('expected "host:port"')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _IPV6.fullmatch(host) or ":" not in host:
            raise ValueError("bad IPv6 address")
    elif ":" in host or not _HOSTNAME.fullmatch(host):
        raise ValueError("bad host (IPv6 addresses go in brackets)")
    port = int(port_text)
    lowest = 0 if allow_zero else 1
    if not lowest <= port <= MAX_PORT:
        raise ValueError(f"port must be in {lowest}..{MAX_PORT}")
    return HostPort(host, port)
