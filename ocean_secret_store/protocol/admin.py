"""What an administrator signs for an admin session, and checking it (protocol.md §1.4.9, §2.11).

Parity's servers-set change (``POST /admin/servers_set_change/{old}/{new}``) carries two ECDSA
signatures by the administrator key: over the servers-set hash of the *old* set (every node
connected to the master, the master included) and over that of the *new* set (the body). We keep
that byte for byte. Our own admin sessions, proactive refresh and repair, reuse the same two
signatures with the second one domain-separated, so that no signature made for one operation
authorizes another:

* ``change``:  old = ``H(old set)``, new = ``H(new set)`` (Parity's);
* ``refresh``: old = ``H(set)``, new = ``keccak256(REFRESH_LABEL || H(set))``;
* ``repair``:  old = ``H(set)``, new = ``keccak256(REPAIR_LABEL || H(set) || target node id)``.

``H`` is :func:`~ocean_secret_store.crypto.hashes.servers_set_hash`.

``GET /admin/status`` answers anybody with counts only; the administrator's signed status request,
``GET /admin/status/{expiry}/{signature}``, also names the keys an admin session left behind or
failed to move (key ids: a key id seen early is what front-running a DID's key needs). Its signature
is over ``keccak256(STATUS_LABEL || node id || expiry)`` (the 64-byte id of the node asked, the
expiry a unix time as 8 bytes big-endian), valid until ``expiry`` and at most
:data:`MAX_STATUS_LIFETIME` seconds ahead of the node's clock: one node, one minute.

Pure: no I/O (the caller passes the time).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ..crypto.curve import Point
from ..crypto.hashes import keccak256, servers_set_hash
from ..crypto.signatures import recover_public, sign_raw_hash
from ..exceptions import AccessDenied, InvalidSignature, SecretStoreError

__all__ = [
    "MAX_STATUS_LIFETIME", "OPERATIONS", "REFRESH_LABEL", "REPAIR_LABEL", "STATUS_LABEL", "AdminRequest",
    "AdminRequestError", "sign_request", "sign_status", "signed_hashes", "status_hash", "verify_status",
]

REFRESH_LABEL: Final = b"ocean-secret-store/admin/refresh/v1"
REPAIR_LABEL: Final = b"ocean-secret-store/admin/repair/v1"
STATUS_LABEL: Final = b"ocean-secret-store/admin/status/v1"
#: Seconds ahead of the node's clock a signed status request may expire, at most.
MAX_STATUS_LIFETIME: Final = 60
#: The admin operations, by their name on the wire.
OPERATIONS: Final = ("change", "refresh", "repair")


class AdminRequestError(SecretStoreError, ValueError):
    """An admin request that is malformed (not a refusal: nothing is signed wrong yet)."""


def _ids(nodes: Iterable[bytes | Point]) -> tuple[bytes, ...]:
    out = sorted({n.to_bytes() if isinstance(n, Point) else bytes(n) for n in nodes})
    if any(len(n) != 64 for n in out):
        raise AdminRequestError("a node id is 64 bytes")
    return tuple(out)


def signed_hashes(operation: str, old_set: Iterable[bytes | Point], new_set: Iterable[bytes | Point],
                  target: bytes | None = None) -> tuple[bytes, bytes]:
    """The two hashes the administrator signs for ``operation`` (the module doc).

    :raises AdminRequestError: an unknown operation, a refresh or repair whose sets differ, a repair
        without a target in the set, or a target given for another operation.
    """
    old, new = _ids(old_set), _ids(new_set)
    if operation not in OPERATIONS:
        raise AdminRequestError(f"unknown admin operation {operation!r}")
    if (target is not None) != (operation == "repair"):
        raise AdminRequestError("a repair names its target node; no other operation does")
    old_hash, new_hash = servers_set_hash(old), servers_set_hash(new)
    if operation == "change":
        return old_hash, new_hash
    if old != new:
        raise AdminRequestError(f"a {operation} keeps the servers set: the old and new sets must be equal")
    if operation == "refresh":
        return old_hash, keccak256(REFRESH_LABEL + new_hash)
    if target is None or bytes(target) not in new:
        raise AdminRequestError("the node to repair is not in the servers set")
    return old_hash, keccak256(REPAIR_LABEL + new_hash + bytes(target))


@dataclass(frozen=True, slots=True)
class AdminRequest:
    """One admin session as the administrator signed it."""

    operation: str
    old_set: tuple[bytes, ...]
    new_set: tuple[bytes, ...]
    old_signature: bytes
    new_signature: bytes
    target: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "old_set", _ids(self.old_set))
        object.__setattr__(self, "new_set", _ids(self.new_set))
        signed_hashes(self.operation, self.old_set, self.new_set, self.target)  # shape checks

    def verify(self, admin_public: Point | None) -> None:
        """Both signatures recover to ``admin_public``.

        :raises AccessDenied: no administrator key is configured, or a signature is not the
            administrator's over these sets (Parity's answer to both).
        """
        if admin_public is None:
            raise AccessDenied("this key server has no administrator key (admin_public)")
        for signature, digest in zip((self.old_signature, self.new_signature),
                                     signed_hashes(self.operation, self.old_set, self.new_set, self.target),
                                     strict=True):
            try:
                signer = recover_public(signature, digest)
            except InvalidSignature as exc:
                raise AccessDenied("an admin signature does not recover") from exc
            if signer != admin_public:
                raise AccessDenied("an admin signature is not the administrator's over these sets")

    def same_session(self, other: AdminRequest) -> bool:
        """Whether ``other`` asks for the same change (a resume), whatever its signatures."""
        return (self.operation, self.old_set, self.new_set, self.target) == (
            other.operation, other.old_set, other.new_set, other.target)


def sign_request(admin_secret: int, operation: str, old_set: Iterable[bytes | Point],
                 new_set: Iterable[bytes | Point], target: bytes | None = None) -> AdminRequest:
    """An :class:`AdminRequest` signed with the administrator's key (CLI, devnet, tests)."""
    old, new = _ids(old_set), _ids(new_set)
    old_hash, new_hash = signed_hashes(operation, old, new, target)
    return AdminRequest(operation, old, new, sign_raw_hash(admin_secret, old_hash),
                        sign_raw_hash(admin_secret, new_hash), target)


# -- the administrator's status request -----------------------------------------------------------


def status_hash(node_id: bytes, expiry: int) -> bytes:
    """What the administrator signs to read ``node_id``'s full admin status until ``expiry`` (module doc)."""
    if len(node_id) != 64 or not 0 <= expiry < 2**64:
        raise AdminRequestError("a status request names a 64-byte node id and a unix time")
    return keccak256(STATUS_LABEL + bytes(node_id) + expiry.to_bytes(8, "big"))


def sign_status(admin_secret: int, node_id: bytes, expiry: int) -> bytes:
    """The administrator's signature of a status request to ``node_id``, valid until ``expiry``."""
    return sign_raw_hash(admin_secret, status_hash(node_id, expiry))


def verify_status(signature: bytes, node_id: bytes, expiry: int, admin_public: Point | None, now: float) -> None:
    """A status request to ``node_id`` signed by the administrator, not expired, not valid for too long.

    :raises AccessDenied: no administrator key is configured, the request expired (or expires more
        than :data:`MAX_STATUS_LIFETIME` seconds ahead of ``now``), or the signature is not the
        administrator's over this node and expiry.
    """
    if admin_public is None:
        raise AccessDenied("this key server has no administrator key (admin_public)")
    if not now <= expiry <= now + MAX_STATUS_LIFETIME:
        raise AccessDenied(f"the status request has expired or is valid for more than {MAX_STATUS_LIFETIME} s")
    try:
        signer = recover_public(signature, status_hash(node_id, expiry))
    except InvalidSignature as exc:
        raise AccessDenied("the status request's signature does not recover") from exc
    if signer != admin_public:
        raise AccessDenied("the status request is not signed by the administrator")
