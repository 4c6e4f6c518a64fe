"""The node's CORS policy: the ``cors`` setting and, per request, Parity's decision from ``Origin`` and ``Host``.

Parity's HTTP listener delegates to jsonrpc-server-utils (protocol.md §1.7): ``"none"`` admits no
cross origin, ``"*"``/``"all"``/``"any"`` every one, otherwise a comma-separated list of origins,
``null`` and globset globs (``http://*.example.com``). This is node policy, not wire format: the
codec in :mod:`ocean_secret_store.protocol.http` only names the status of a rejected request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from ..protocol.http import parse_rust_uint

__all__ = ["ALLOW_ALL", "CorsDecision", "CorsOutcome", "CorsPolicy"]

#: Setting values (and list entries) that stand for every origin.
ALLOW_ALL: Final = frozenset({"*", "all", "any"})
_NONE: Final = "none"
_NULL: Final = "null"
_MAX_PORT: Final = 0xFFFF


class CorsOutcome(Enum):
    """What the node does with a request, given its ``Origin`` and ``Host`` headers (§1.7)."""

    #: Serve it; on success add ``Access-Control-Allow-Origin`` if the decision carries a value.
    ALLOW = "allow"
    #: Serve it, no CORS header: there is no ``Origin``, or it is the node's own host.
    NOT_REQUIRED = "not_required"
    #: Do not read or parse it: answer ``404`` with an empty body.
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class CorsDecision:
    """A CORS outcome and the ``Access-Control-Allow-Origin`` value for success responses, if any.

    Parity adds the header only to success responses and only for an explicit origin, so an
    allowed ``null`` origin yields :attr:`CorsOutcome.ALLOW` with no header value.
    """

    outcome: CorsOutcome
    allow_origin: str | None = None

    @property
    def rejected(self) -> bool:
        return self.outcome is CorsOutcome.REJECT


# -- jsonrpc-server-utils' origin and host normalisation -----------------------------------------

_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# http::HeaderValue::to_str succeeds only for visible ASCII, space and tab; otherwise Parity
# sees no header at all.
_HEADER_TEXT: Final = re.compile(r"[\t\x20-\x7e]*")


def _header_text(value: str | None) -> str | None:
    if value is None or not _HEADER_TEXT.fullmatch(value):
        return None
    return value


def _host_string(text: str) -> str:
    """jsonrpc-server-utils ``Host::parse`` then its string form: ``hostname[:port]``, lowercased."""
    # pre_process: drop a "scheme://", keep what precedes the first '/', lowercase.
    pieces = text.split("://")
    host = (pieces[1] if len(pieces) > 1 else pieces[0]).split("/")[0].lower()
    parts = host.split(":")
    if len(parts) == 1:
        return parts[0]
    port = parse_rust_uint(parts[1], _MAX_PORT)
    # A numeric port is normalised ("080" -> "80"); anything else is kept as a pattern.
    return f"{parts[0]}:{port if port is not None else parts[1]}"


def _origin_parts(text: str) -> tuple[str, str]:
    """jsonrpc-server-utils ``Origin::parse``: its string form ``scheme://host[:port]`` and host part."""
    pieces = text.split("://")
    scheme = pieces[0].lower() if len(pieces) > 1 else "http"
    host = _host_string(pieces[1] if len(pieces) > 1 else pieces[0])
    return f"{scheme}://{host}", host


# -- globset patterns ----------------------------------------------------------------------------


def _glob_class(pattern: str, start: int) -> tuple[str, int] | None:
    """Parse a globset ``[...]`` class starting after '['; return its regex and the next index."""
    i = start
    negated = i < len(pattern) and pattern[i] in "!^"
    if negated:
        i += 1
    ranges: list[list[str]] = []
    first, in_range = True, False
    while True:
        if i >= len(pattern):
            return None
        c = pattern[i]
        i += 1
        if c == "]" and not first:
            break
        if c == "-" and not first and not in_range:
            in_range = True
        elif in_range:
            ranges[-1][1] = c
            if ranges[-1][1] < ranges[-1][0]:
                return None
            in_range = False
        else:
            ranges.append([c, c])
        first = False
    if in_range:
        ranges.append(["-", "-"])
    body = "".join(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}" for lo, hi in ranges)
    return f"[{'^' if negated else ''}{body}]", i


def _glob_regex(pattern: str) -> re.Pattern[str] | None:
    """A case-insensitive matcher for a globset pattern, or None where globset rejects it.

    Supported as in globset with default options: ``*`` and ``**`` (any run, '/' included),
    ``?``, ``[...]`` classes (``!`` or ``^`` negates), ``{a,b}`` alternatives (not nested) and
    backslash escapes.
    """
    out: list[str] = []
    i, in_alternates = 0, False
    while i < len(pattern):
        c = pattern[i]
        i += 1
        if c == "*":
            # Consecutive stars mean the same; one ".*" keeps the regex free of backtracking blow-ups.
            if not out or out[-1] != ".*":
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\":
            if i >= len(pattern):
                return None
            out.append(re.escape(pattern[i]))
            i += 1
        elif c == "[":
            parsed = _glob_class(pattern, i)
            if parsed is None:
                return None
            regex, i = parsed
            out.append(regex)
        elif c == "{":
            if in_alternates:
                return None
            in_alternates = True
            out.append("(?:")
        elif c == "}":
            if not in_alternates:
                return None
            in_alternates = False
            out.append(")")
        elif c == "," and in_alternates:
            out.append("|")
        else:
            out.append(re.escape(c))
    if in_alternates:
        return None
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class _OriginMatcher:
    """One list entry, compiled: any non-null origin, the ``null`` origin, or an origin glob."""

    entry: str
    #: The normalised origin (``scheme://host[:port]``) used as a glob, and its compiled form.
    pattern: str = ""
    regex: re.Pattern[str] | None = None

    @classmethod
    def compile(cls, entry: str) -> _OriginMatcher:
        if entry in ALLOW_ALL or entry == _NULL:
            return cls(entry)
        pattern = _origin_parts(entry)[0]
        return cls(entry, pattern, _glob_regex(pattern))

    @property
    def is_null(self) -> bool:
        return self.entry == _NULL

    def matches(self, origin: str) -> bool:
        """Whether a non-null origin is admitted by this entry."""
        if self.entry in ALLOW_ALL:
            return True
        if self.is_null:
            return False
        if self.regex is None:
            # globset refused the pattern: jsonrpc-server-utils falls back to ASCII-caseless equality.
            return self.pattern.translate(_ASCII_LOWER) == origin.translate(_ASCII_LOWER)
        return self.regex.fullmatch(origin) is not None


# -- the policy ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """The node's ``cors`` setting (``--secretstore-http-cors``) and jsonrpc-server-utils' per-request rule.

    ``allow_all`` admits every origin, ``null`` included; otherwise ``origins`` lists the admitted
    entries (empty: no cross origin at all). An entry ``"*"``/``"all"``/``"any"`` in the list
    admits every origin except ``null``, as in Parity. ``str()`` gives the setting back.
    """

    allow_all: bool = False
    origins: tuple[str, ...] = ()
    _matchers: tuple[_OriginMatcher, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once per policy, not once per request.
        object.__setattr__(self, "_matchers", tuple(_OriginMatcher.compile(entry) for entry in self.origins))

    @classmethod
    def parse(cls, setting: str) -> CorsPolicy:
        """``"none"`` -> nobody; ``"*"``/``"all"``/``"any"`` -> everybody; else comma-separated origins.

        Unlike Parity we strip whitespace around list entries, so ``"a, b"`` means ``a`` and ``b``;
        an empty entry or one with inner whitespace is refused (a typo, never an origin). As in
        Parity, the list is split on every comma, so a glob alternative ``{a,b}`` cannot be
        written here (:meth:`from_entries` accepts it).

        :raises ValueError: the setting is malformed (the config layer names the key).
        """
        text = setting.strip()
        if text == _NONE:
            return cls()
        if text in ALLOW_ALL:
            return cls(allow_all=True)
        origins = tuple(part.strip() for part in text.split(","))
        if not text or any(not origin or any(c.isspace() for c in origin) for origin in origins):
            raise ValueError("expected none, *, all, any or comma-separated origins without blanks")
        return cls(origins=origins)

    @classmethod
    def from_entries(cls, entries: Iterable[str] | None) -> CorsPolicy:
        """A policy from a list of entries (``None`` allows every origin); each entry is ``"*"``,
        ``"all"`` or ``"any"`` (any non-null origin), ``"null"``, or an origin glob."""
        if entries is None:
            return cls(allow_all=True)
        return cls(origins=tuple(entries))

    def __str__(self) -> str:
        if self.allow_all:
            return "*"
        return ",".join(self.origins) if self.origins else _NONE

    def decide(self, origin: str | None, host: str | None) -> CorsDecision:
        """Decide from the raw ``Origin`` and ``Host`` header values (None when absent)."""
        origin = _header_text(origin)
        host = _header_text(host)
        if origin is None:
            return CorsDecision(CorsOutcome.NOT_REQUIRED)
        # Same-origin requests need no CORS: the origin's host[:port] is the Host header.
        if host is not None and origin.endswith(host) and _origin_parts(origin)[1] == host:
            return CorsDecision(CorsOutcome.NOT_REQUIRED)
        if origin == _NULL:
            # Only "allow all" or an explicit "null" entry admits it, and no header is sent.
            if self.allow_all or any(matcher.is_null for matcher in self._matchers):
                return CorsDecision(CorsOutcome.ALLOW)
            return CorsDecision(CorsOutcome.REJECT)
        if self.allow_all or any(matcher.matches(origin) for matcher in self._matchers):
            return CorsDecision(CorsOutcome.ALLOW, _origin_parts(origin)[0])
        return CorsDecision(CorsOutcome.REJECT)
