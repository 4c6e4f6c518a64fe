"""What the provider may fetch for a consumer, and fetching it: the origin policy (no loopback,
private, link-local, metadata or other non-global address unless the exact origin is allowed), the
address checked after resolving and the connection pinned to it, redirects followed by hand and
checked on every hop, and the size and time caps.

A publisher chooses the file URLs the provider fetches; without this policy an asset whose URL is
``http://127.0.0.1:<key server>/health`` (or the provider's own API, or a cloud metadata address)
made the provider read it and hand it to whoever bought access (issue 11, finding 5).

The rules, in the order they are checked on each hop (the first URL and every redirect target):

1. ``scheme``: only ``http`` and ``https``;
2. ``origin allowed``: an origin (scheme, host, port) listed in ``[provider] allowed_origins``
   is fetched wherever it resolves to; every other origin goes through rule 3;
3. ``address``: the host is resolved (an IP literal is taken as it is) and every address must be
   global: not loopback, private (RFC 1918, ULA fc00::/7), shared (100.64.0.0/10), link-local
   (169.254.0.0/16 holds the cloud metadata services, fe80::/10), unspecified, multicast,
   reserved or otherwise non-global (IPv4-mapped IPv6 addresses are judged as the IPv4 address).
   A name with any such address is refused. The connection then goes to the addresses checked
   and to no other: the session's resolver answers only with them (no second lookup, so no
   DNS-rebinding window), while the URL, and so the Host header and TLS's server name, keep
   the name;
4. ``redirects``: 301/302/303/307/308 are followed by this module (never by aiohttp), at most
   ``max_redirects`` times, each target checked from rule 1;
5. ``size``: an origin that announces more than ``max_bytes`` (Content-Length) is refused before
   anything is sent; one that sends more is cut off at the cap (the provider drops the consumer's
   connection, so the body is visibly short);
6. ``timeout``: ``connect_timeout`` to resolve and connect, ``read_timeout`` between reads,
   ``total_timeout`` for one hop from request to the last byte.

A refusal is a :class:`FetchRefused` naming the rule and what is wrong, never the URL: the URL is
the secret the provider keeps from the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ...serving import client_ssl_context
from .policy import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_REDIRECTS,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_TOTAL_TIMEOUT,
    FetchRefused,
    IPAddress,
    Origin,
    address_kind,
    origin_of,
    parse_origin,
)

__all__ = ["FetchPolicy", "FetchRefused", "open_origin"]

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FetchPolicy:
    """The provider's fetch rules and limits (the ``[provider]`` keys and defaults in :mod:`.policy`)."""

    #: Origins fetched wherever they resolve to (e.g. a file server on loopback).
    allowed_origins: frozenset[Origin] = field(default_factory=frozenset)
    max_bytes: int = DEFAULT_MAX_BYTES
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    #: A PEM CA bundle trusted for https origins besides the system CAs (the devnet's ``tls_ca``).
    ca_file: str | None = None

    @classmethod
    def allowing(cls, origins: Iterable[str], **limits: Any) -> FetchPolicy:
        """A policy allowing ``origins`` (``scheme://host[:port]`` texts), with ``limits`` as fields.

        :raises ValueError: an origin is malformed.
        """
        return cls(allowed_origins=frozenset(parse_origin(o) for o in origins), **limits)

    async def addresses(self, url: str) -> tuple[Origin, list[ResolveResult]]:
        """Rules 1-3 for one URL: its origin and the addresses a connection may go to.

        :raises FetchRefused: the URL breaks a rule.
        """
        origin = origin_of(url)
        allowed = origin in self.allowed_origins
        try:
            literal: IPAddress | None = ipaddress.ip_address(origin.host.split("%", 1)[0])
        except ValueError:
            literal = None
        if literal is not None:
            if not allowed and (kind := address_kind(literal)) is not None:
                raise _address_refusal(kind)
            return origin, []  # aiohttp connects to a literal without asking the resolver
        try:
            async with asyncio.timeout(self.connect_timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(origin.host, origin.port,
                                                                     type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            raise FetchRefused("address", "the file's host name does not resolve") from None
        results: list[ResolveResult] = []
        for family, _, proto, _, sockaddr in infos:
            host = str(sockaddr[0])
            if not allowed and (kind := address_kind(ipaddress.ip_address(host.split("%", 1)[0]))) is not None:
                raise _address_refusal(kind)
            results.append(ResolveResult(hostname=origin.host, host=host, port=origin.port, family=family,
                                         proto=proto, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV))
        if not results:
            raise FetchRefused("address", "the file's host name does not resolve")
        return origin, results


def _address_refusal(kind: str) -> FetchRefused:
    where = " (where cloud metadata services answer)" if kind == "link-local" else ""
    return FetchRefused("address", f"the file's host has a {kind} address{where}, which the provider does not "
                                   "fetch from (an operator may allow an exact origin: [provider] allowed_origins)")


class _PinnedResolver(AbstractResolver):
    """Answers only with the addresses the policy checked for the current hop; any other name fails."""

    def __init__(self) -> None:
        self.pinned: dict[tuple[str, int], list[ResolveResult]] = {}

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = self.pinned.get((host.rstrip(".").lower(), port))
        if not found:
            raise OSError(f"no checked address for {host}")  # a bug, not a user's error: aiohttp wraps it
        return found

    async def close(self) -> None:
        return None


@contextlib.asynccontextmanager
async def open_origin(policy: FetchPolicy, url: str,
                      headers: Mapping[str, str] | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
    """GET ``url`` under ``policy`` (rules 1-4 and 6); the final response, its body not yet read.

    One session (and connection pool) per call: its resolver knows only this call's checked
    addresses. Decoding is off, so Content-Length and Content-Range stay the origin's.

    :raises FetchRefused: a rule refused a hop.
    :raises aiohttp.ClientError, TimeoutError: the origin could not be reached or read in time.
    """
    resolver = _PinnedResolver()
    timeout = aiohttp.ClientTimeout(total=policy.total_timeout, sock_connect=policy.connect_timeout,
                                    sock_read=policy.read_timeout)
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False,
                                     ssl=client_ssl_context(policy.ca_file))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                     trust_env=False) as session:
        for _hop in range(policy.max_redirects + 1):
            origin, addresses = await policy.addresses(url)
            if addresses:
                resolver.pinned[(origin.host, origin.port)] = addresses
            response = await session.get(url, headers=dict(headers or {}), allow_redirects=False)
            location = response.headers.get("Location")
            if response.status in _REDIRECTS and location:
                response.release()
                url = urljoin(url, location)
                continue
            try:
                yield response
            finally:
                response.release()
            return
    raise FetchRefused("redirects", f"the file's origin redirected more than {policy.max_redirects} times")
