"""The provider's rules as data: origins and addresses as the fetch policy (:mod:`.fetch`) judges
them (an origin, scheme, host and port, parsed from a URL or from ``[provider] allowed_origins``,
and why an address is not one to connect to), and the limits' defaults. Standard library only, so
the configuration checks these settings at load without importing aiohttp."""

from __future__ import annotations

import ipaddress
from typing import Final, NamedTuple
from urllib.parse import urlsplit

from ...exceptions import OceanError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_REDIRECTS",
    "DEFAULT_MAX_SIGNATURE_LIFETIME",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_TOTAL_TIMEOUT",
    "FetchRefused",
    "IPAddress",
    "Origin",
    "address_kind",
    "origin_of",
    "parse_origin",
]

#: ``[provider] max_file_bytes``: bytes the provider proxies from an origin for one request (4 GiB).
DEFAULT_MAX_BYTES: Final = 4 * 1024**3
#: ``[provider] fetch_connect_timeout``: seconds to resolve an origin's name and connect.
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
#: ``[provider] fetch_read_timeout``: seconds an origin may stay silent while sending.
DEFAULT_READ_TIMEOUT: Final = 60.0
#: ``[provider] fetch_total_timeout``: seconds for one request to an origin, to its last byte.
DEFAULT_TOTAL_TIMEOUT: Final = 3600.0
#: ``[provider] max_redirects``: redirects followed, each target checked.
DEFAULT_MAX_REDIRECTS: Final = 5
#: ``[provider] max_signature_lifetime``: how far ``signatureExpiry`` may be ahead of the provider's clock.
DEFAULT_MAX_SIGNATURE_LIFETIME: Final = 3600

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchRefused(OceanError):
    """The provider will not fetch this URL; ``rule`` names the rule (:mod:`.fetch`'s docstring)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class Origin(NamedTuple):
    """An origin as the policy compares it: scheme, lowercased host (no brackets), port."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def origin_of(url: str) -> Origin:
    """The origin of ``url``; :class:`FetchRefused` (rule ``scheme``) if it is not http(s) or malformed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchRefused("scheme", "the file's URL is malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise FetchRefused("scheme", f"the provider fetches only http and https URLs, not {scheme or '(none)'!r}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise FetchRefused("scheme", "the file's URL names no host")
    if not host.isascii():  # the name aiohttp resolves and connects by is the IDNA (punycode) one
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise FetchRefused("scheme", "the file's host name is not a valid international name") from None
    return Origin(scheme, host, port if port is not None else _DEFAULT_PORTS[scheme])


def parse_origin(text: str) -> Origin:
    """``scheme://host[:port]`` (nothing after it but an optional ``/``) as an :class:`Origin`.

    :raises ValueError: with the reason.
    """
    value = text.strip()
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError(f"not a URL: {value!r}") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"an origin is scheme://host[:port] with no path, query or credentials, got {value!r}")
    try:
        return origin_of(value)
    except FetchRefused as exc:
        raise ValueError(f"{exc} ({value!r})") from None


def address_kind(address: IPAddress) -> str | None:
    """Why the provider must not connect to ``address`` (``"loopback"``, ``"private"``, ...); None if global."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1 to the kernel
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-global", not address.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)
