"""The one exception tree of ocean_secret_store; every error the package raises is in it.

::

    * SecretStoreError
      x CryptoError                       (also a ValueError: bad input to the maths)
        + InvalidScalar                   wrong length, zero, or >= n
        + InvalidPoint                    wrong length, not on secp256k1, or the point at infinity
        + InvalidSignature                unparseable, unrecoverable (v = 27/28) or not verifying
        + DecryptionFailed                ECIES blob too short, bad prefix or authentication tag
        + InvalidShare                    a VSS share that does not match its commitments
        + InvalidThreshold                t outside 0 <= t < n, or too few shares for t
        + MalformedHex                    a JSON hex value without "0x", of odd or wrong length, or not hex
      x KeyServerError                    an error of Parity's key server error enum (protocol.md §1.6);
        |                                 .parity_name and str() are Parity's variant and display text
        + AccessDenied, ConsensusUnreachable, ConsensusTemporaryUnreachable           (HTTP 403)
        + ServerKeyIsNotFound, DocumentKeyIsNotFound                                   (HTTP 404)
        + InsufficientRequesterData, ServerKeyAlreadyGenerated, DocumentKeyAlreadyStored (HTTP 400)
        + NodeDisconnected, NotEnoughNodesForThreshold, InvalidMessage,
          InvalidStateForRequest, InternalError, ...                                   (HTTP 500)
        + DatabaseError > KeyVersionNotFound                                           (HTTP 500)
        + TooManyRequests                 ours: a quota or the session cap; .retry_after (HTTP 429)
      x ConfigError                       a node or Ocean config setting is missing or invalid; .key names it
      x ClientError                       the HTTP client got no answer (bad node URL, transport failure)
        + NodeUnreachable                 no answer from the node URL(s) in .urls (refused, timed out)
      x ChainError                        keeper contracts / Ethereum node: artifact, anvil, deployment, transaction
        + ArtifactError                   a keeper-contracts artifact is missing, malformed or cannot be linked
        + ChainUnreachable                no JSON-RPC answer from the chain URL in .url
        + ContractReverted                a call/transaction reverted; .contract, .function, .reason
      x OceanError                        the Ocean pipeline plugin: DIDs, DDOs, the metadata store
        + InvalidDid                      not did:op:<64 hex> / 0x<64 hex> / <64 hex>
        + DidMismatch                     a DDO's DID/checksums do not match its services' attributes.main
        + AssetNotFound                   no DDO for this DID in the metadata store
        + EncryptorUnavailable            publishing refused: no encryptor enabled/installed under that name

A few classes live beside the one layer that raises them, still under this root:
``keyfile.KeystoreError`` (+ ``WrongPassword``; ``client.keystore.UnknownAccount``),
``protocol.http.BadRequest`` / ``BadResponse``, ``protocol.bound.BoundSignatureError``
(InsufficientRequesterData), ``chain.acl.ChainQueryFailed`` (+ ``PermissionQueryFailed``; ChainError),
``node.acl.AccessCheckFailed`` (InternalError), ``node.cluster.PeerTimeout`` (NodeDisconnected),
``node.channel.HandshakeFailed`` (+ ``PeerRefused``; NodeDisconnected), ``FrameRejected``
(InvalidMessage), ``FrameTooLarge`` (SerializationError), ``client.rpc.JsonRpcError``,
``ocean.provider.policy.FetchRefused`` (OceanError), ``node.backup.BackupError``,
``protocol.key_versions.KeyVersionsError``, ``devnet.DevnetError`` and ``cli_tools.UsageError``.
Only the Parity variants above register in :data:`KEY_SERVER_ERRORS`; the refinements answer as
the variant they derive from (``TooManyRequests`` as Parity's Internal with its own text and status).

Messages say what is wrong with the input; they never contain secret material (shares,
document keys, private keys), only lengths, public values and positions.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SecretStoreError(Exception):
    """Root of every error raised by ocean_secret_store."""


class CryptoError(SecretStoreError, ValueError):
    """A cryptographic input or result is invalid."""


class InvalidScalar(CryptoError):
    """A 32-byte scalar is malformed, zero, or not below the curve order."""


class InvalidPoint(CryptoError):
    """A 64-byte point is malformed, not on secp256k1, or the point at infinity."""


class InvalidSignature(CryptoError):
    """A signature cannot be parsed, cannot be recovered, or does not verify."""


class DecryptionFailed(CryptoError):
    """An ECIES ciphertext is malformed or fails authentication."""


class InvalidShare(CryptoError):
    """A secret share does not match the commitments its dealer published."""


class InvalidThreshold(CryptoError):
    """A threshold is out of range for the number of participants or shares."""


class MalformedHex(CryptoError):
    """A ``0x``-hex value (JSON-RPC parameter or body field) is malformed or of the wrong size."""


#: Every variant of Parity's key server error enum by its Parity name (the node-to-node wire and
#: the clients look errors up here). Filled by :meth:`KeyServerError.__init_subclass__`.
KEY_SERVER_ERRORS: dict[str, type[KeyServerError]] = {}


class KeyServerError(SecretStoreError):
    """An error of Parity's key server error enum (protocol.md §1.6), raised by nodes and clients.

    ``parity_name`` is the Rust variant name (also used on the node-to-node wire), ``status``
    the HTTP status the Parity HTTP listener maps it to, and ``str(error)`` the exact display
    text Parity sends: ``text`` for payload-less variants, ``"<prefix>: <detail>"`` for the
    others. A class that sets its own ``parity_name`` is a Parity variant and registers itself
    in :data:`KEY_SERVER_ERRORS`; subclasses of a variant (``KeyVersionNotFound``,
    ``PeerTimeout``, ...) only refine it and keep its name, status and text.
    """

    parity_name: ClassVar[str] = "Internal"
    status: ClassVar[int] = 500
    #: Display text of payload-less variants; variants with a detail use ``prefix``.
    text: ClassVar[str] = ""
    prefix: ClassVar[str] = "Internal error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "parity_name" not in cls.__dict__:
            return  # a refinement of a variant: it answers as that variant
        if cls.parity_name in KEY_SERVER_ERRORS:
            taken = KEY_SERVER_ERRORS[cls.parity_name].__name__
            raise TypeError(f"{cls.__name__}: Parity's {cls.parity_name} is already the class {taken}")
        KEY_SERVER_ERRORS[cls.parity_name] = cls

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail
        super().__init__(self.display())

    def display(self) -> str:
        if self.text:
            return self.text
        return f"{self.prefix}: {self.detail}" if self.detail is not None else self.prefix


class AccessDenied(KeyServerError):
    """Parity's ``AccessDenied``: Access denied."""

    parity_name = "AccessDenied"
    status = 403
    text = "Access denied"


class ConsensusUnreachable(KeyServerError):
    """Parity's ``ConsensusUnreachable``: Consensus unreachable."""

    parity_name = "ConsensusUnreachable"
    status = 403
    text = "Consensus unreachable"


class ConsensusTemporaryUnreachable(KeyServerError):
    """Parity's ``ConsensusTemporaryUnreachable``: Consensus temporary unreachable."""

    parity_name = "ConsensusTemporaryUnreachable"
    status = 403
    text = "Consensus temporary unreachable"


class ServerKeyIsNotFound(KeyServerError):
    """Parity's ``ServerKeyIsNotFound``: Server key with this ID is not found."""

    parity_name = "ServerKeyIsNotFound"
    status = 404
    text = "Server key with this ID is not found"


class DocumentKeyIsNotFound(KeyServerError):
    """Parity's ``DocumentKeyIsNotFound``: Document key with this ID is not found."""

    parity_name = "DocumentKeyIsNotFound"
    status = 404
    text = "Document key with this ID is not found"


class ServerKeyAlreadyGenerated(KeyServerError):
    """Parity's ``ServerKeyAlreadyGenerated``: Server key with this ID is already generated."""

    parity_name = "ServerKeyAlreadyGenerated"
    status = 400
    text = "Server key with this ID is already generated"


class DocumentKeyAlreadyStored(KeyServerError):
    """Parity's ``DocumentKeyAlreadyStored``: Document key with this ID is already stored."""

    parity_name = "DocumentKeyAlreadyStored"
    status = 400
    text = "Document key with this ID is already stored"


class InsufficientRequesterData(KeyServerError):
    """Parity's ``InsufficientRequesterData``: Insufficient requester data."""

    parity_name = "InsufficientRequesterData"
    status = 400
    prefix = "Insufficient requester data"


class NodeDisconnected(KeyServerError):
    """Parity's ``NodeDisconnected``: node required for this operation is currently disconnected."""

    parity_name = "NodeDisconnected"
    status = 500
    text = "node required for this operation is currently disconnected"


class NotEnoughNodesForThreshold(KeyServerError):
    """Parity's ``NotEnoughNodesForThreshold``: not enough nodes for passed threshold."""

    parity_name = "NotEnoughNodesForThreshold"
    status = 500
    text = "not enough nodes for passed threshold"


class InvalidNodeId(KeyServerError):
    """Parity's ``InvalidNodeId``: invalid node id has been passed."""

    parity_name = "InvalidNodeId"
    status = 500
    text = "invalid node id has been passed"


class DuplicateSessionId(KeyServerError):
    """Parity's ``DuplicateSessionId``: session with the same id is already registered."""

    parity_name = "DuplicateSessionId"
    status = 500
    text = "session with the same id is already registered"


class NoActiveSessionWithId(KeyServerError):
    """Parity's ``NoActiveSessionWithId``: no active session with given id."""

    parity_name = "NoActiveSessionWithId"
    status = 500
    text = "no active session with given id"


class TooEarlyForRequest(KeyServerError):
    """Parity's ``TooEarlyForRequest``: session is not yet ready to process this request."""

    parity_name = "TooEarlyForRequest"
    status = 500
    text = "session is not yet ready to process this request"


class InvalidStateForRequest(KeyServerError):
    """Parity's ``InvalidStateForRequest``: session is in invalid state for processing this request."""

    parity_name = "InvalidStateForRequest"
    status = 500
    text = "session is in invalid state for processing this request"


class InvalidNodeForRequest(KeyServerError):
    """Parity's ``InvalidNodeForRequest``: invalid node for this request."""

    parity_name = "InvalidNodeForRequest"
    status = 500
    text = "invalid node for this request"


class InvalidMessage(KeyServerError):
    """Parity's ``InvalidMessage``: invalid message is received."""

    parity_name = "InvalidMessage"
    status = 500
    text = "invalid message is received"


class InvalidMessageVersion(KeyServerError):
    """Parity's ``InvalidMessageVersion``: unsupported message is received."""

    parity_name = "InvalidMessageVersion"
    status = 500
    text = "unsupported message is received"


class ReplayProtection(KeyServerError):
    """Parity's ``ReplayProtection``: replay message is received."""

    parity_name = "ReplayProtection"
    status = 500
    text = "replay message is received"


class ExclusiveSessionActive(KeyServerError):
    """Parity's ``ExclusiveSessionActive``: Exclusive session active."""

    parity_name = "ExclusiveSessionActive"
    status = 500
    text = "Exclusive session active"


class HasActiveSessions(KeyServerError):
    """Parity's ``HasActiveSessions``: Unable to start exclusive session."""

    parity_name = "HasActiveSessions"
    status = 500
    text = "Unable to start exclusive session"


class InternalError(KeyServerError):
    """Parity's ``Internal``: Internal error."""

    parity_name = "Internal"
    status = 500
    prefix = "Internal error"


class DatabaseError(KeyServerError):
    """Parity's ``Database``: Database error."""

    parity_name = "Database"
    status = 500
    prefix = "Database error"


class SerializationError(KeyServerError):
    """Parity's ``Serde``: Serialization error."""

    parity_name = "Serde"
    status = 400
    prefix = "Serialization error"


class KeyVersionNotFound(DatabaseError):
    """A key share record has no version with the requested hash (Parity: a Database error)."""


class KeysWouldBeLost(InternalError):
    """An admin session refused before changing anything: some keys would end with fewer than
    ``t + 1`` shares (not a Parity variant: Parity made them irrecoverable silently). 409: the
    same request passes with force, or once the nodes it needs are back."""

    status = 409
    prefix = "Keys would be lost"


class BadAdminRequest(InternalError):
    """An admin request that cannot be what an administrator meant (a repair of a node outside the
    servers set, a refresh that changes the set): 400 (not a Parity variant)."""

    status = 400
    prefix = "Bad admin request"


class TooManyRequests(KeyServerError):
    """A quota refused the request: HTTP 429, ``"Too many requests: <what>; retry in <s> s"``
    (node/quotas.py raises it; clients get it back from a 429 answer or a batch entry's error).

    Not one of Parity's variants (Parity had no quotas), so it does not register in
    ``KEY_SERVER_ERRORS``; a Parity-era client reads it as an internal error with this text.
    ``retry_after`` is the number of seconds after which the same request may pass (a client
    gets the answer's ``Retry-After`` header, or else the text's "retry in"); nothing was done
    for a refused request, so it may be sent again as it is. ``quota`` names the limit that
    refused it (the quota refusals metric): ``requester_generations``, ``address_rate``,
    ``requester_rate``, ``sessions`` (this node's session cap) or ``peer_sessions`` (a member's,
    reported through this node); a client does not know it and has ``unknown``.
    """

    status: ClassVar[int] = 429
    prefix: ClassVar[str] = "Too many requests"

    def __init__(self, detail: str | None = None, retry_after: float = 1.0, quota: str = "sessions") -> None:
        self.retry_after = retry_after
        self.quota = quota
        super().__init__(detail)


class AdminSessionIncomplete(InternalError):
    """An admin session ran but some keys did not move; the session stays marked: run the same
    request again to resume it (not a Parity variant)."""

    prefix = "Admin session incomplete"


class ConfigError(SecretStoreError):
    """A node configuration is unreadable or a setting is missing or invalid.

    ``key`` is the dotted name of the offending setting (``"node.secret"``), or None for the file.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class ClientError(SecretStoreError):
    """The HTTP client could not get an answer from the key servers (not a key server's answer).

    Key server answers are :class:`KeyServerError` subclasses; this covers what happens before
    one: an unusable node URL, or a transport failure. Messages name node base URLs only, never
    request paths (which carry the requester signature).
    """


class NodeUnreachable(ClientError):
    """No answer from the key server node(s) in ``urls``: connection refused or reset, or timed out."""

    def __init__(self, message: str, urls: tuple[str, ...] = ()) -> None:
        self.urls = urls
        super().__init__(message)


class ChainError(SecretStoreError):
    """The chain layer failed: keeper artifacts, the local anvil, deployment or a transaction."""


class ArtifactError(ChainError):
    """A keeper-contracts artifact is missing, malformed, or its library placeholders cannot be linked."""


class ChainUnreachable(ChainError):
    """The Ethereum JSON-RPC endpoint at ``url`` did not answer (refused, reset, timed out)."""

    def __init__(self, message: str, url: str | None = None) -> None:
        self.url = url
        super().__init__(message)


class ContractReverted(ChainError):
    """A contract call or transaction reverted; names the contract, the function and the revert reason."""

    def __init__(self, contract: str, function: str, reason: str) -> None:
        self.contract = contract
        self.function = function
        self.reason = reason
        super().__init__(f"{contract}.{function} reverted: {reason}")


class OceanError(SecretStoreError):
    """The Ocean pipeline plugin failed: a DID, a DDO, the metadata store, publishing or consuming."""


class InvalidDid(OceanError):
    """A DID or asset id is not ``did:op:<64 hex>``, ``0x<64 hex>`` or ``<64 hex>`` (32 bytes)."""


class DidMismatch(OceanError):
    """A DDO does not verify: its DID or checksums differ from those of its services' ``attributes.main``."""


class AssetNotFound(OceanError):
    """The metadata store holds no DDO for the requested DID."""


class EncryptorUnavailable(OceanError):
    """Publishing is refused: encryption is switched off or no plugin offers the configured encryptor.

    File URLs are never published in clear, so without an encryptor there is no publishing.
    """
