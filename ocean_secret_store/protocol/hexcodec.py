"""The one ``0x``-hex codec of the package: JSON-RPC parameters, HTTP response bodies, cluster
messages and stored records all spell binary values as ``"0x"`` + hex digits.

Callers differ only in which error they raise (``MalformedHex`` for JSON-RPC, ``InvalidMessage``
for a peer's message, a response or storage error elsewhere), so the error is a parameter.
Messages say what is wrong, never the value (it may be a secret).
"""

from __future__ import annotations

from collections.abc import Callable

from ..exceptions import MalformedHex

ErrorFactory = Callable[[str], Exception]


def parse_hex(
    value: object,
    what: str,
    size: int | None = None,
    *,
    prefix: bool | None = True,
    error: ErrorFactory = MalformedHex,
) -> bytes:
    """Decode ``value``: a string of an even number of hex digits (either case, no whitespace).

    ``prefix`` True requires ``"0x"``, None accepts it optionally (``0x`` or ``0X``: Ocean passed
    document ids bare and documents prefixed), False forbids it. ``size`` demands exactly that many
    bytes. ``what`` names the value in the error, which is built by ``error(message)``.
    """
    if not isinstance(value, str):
        raise error(f"{what} must be a hex string, got {type(value).__name__}")
    has_prefix = value[:2] in ("0x", "0X") if prefix is None else value.startswith("0x")
    if prefix is True and not has_prefix:
        raise error(f"{what} must be a 0x-prefixed hex string")
    digits = value[2:] if has_prefix and prefix is not False else value
    if len(digits) % 2:
        raise error(f"{what} must have an even number of hex digits, got {len(digits)}")
    # bytes.fromhex refuses every character but hex digits and whitespace, and skips whitespace:
    # all of it was digits exactly when two of them became each byte. (A regex check first cost
    # a third of the codec's time on the cluster's message path.)
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raw = b""
    if 2 * len(raw) != len(digits):
        raise error(f"{what} contains characters that are not hex digits")
    if size is not None and len(raw) != size:
        raise error(f"{what} must be {size} bytes ({2 * size} hex digits), got {len(raw)}")
    return raw


def to_hex(data: bytes) -> str:
    """``"0x"`` + lowercase hex: the JSON form of every binary value."""
    return "0x" + bytes(data).hex()
