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
        + NodeDisconnected, NotEnoughNodesForThreshold, InvalidMessage, SessionTimeout,
          InvalidStateForRequest, InternalError, ...                                   (HTTP 500)
        + DatabaseError > KeyVersionNotFound                                           (HTTP 500)
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
``node.acl.AccessCheckFailed`` (InternalError), ``node.cluster.PeerTimeout`` (NodeDisconnected),
``node.transport.HandshakeFailed`` / ``PeerRefused`` (NodeDisconnected), ``FrameRejected``
(InvalidMessage), ``FrameTooLarge`` (SerializationError), ``protocol.http.BadRequest`` /
``BadResponse``, ``client.keystore.KeystoreError`` (+ ``UnknownAccount``, ``WrongPassword``),
``client.rpc.JsonRpcError``, ``devnet.DevnetError`` and ``cli_tools.UsageError``.

Messages say what is wrong with the input; they never contain secret material (shares,
document keys, private keys), only lengths, public values and positions.
"""

from __future__ import annotations


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


class KeyServerError(SecretStoreError):
    """An error of Parity's key server error enum (protocol.md §1.6), raised by nodes and clients.

    ``parity_name`` is the Rust variant name (also used on the node-to-node wire), ``status``
    the HTTP status the Parity HTTP listener maps it to, and ``str(error)`` the exact display
    text Parity sends (for variants with a payload, ``"<prefix>: <detail>"``).
    """

    parity_name = "Internal"
    status = 500
    #: Display text of payload-less variants; variants with a detail use ``prefix``.
    text = ""
    prefix = "Internal error"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail
        super().__init__(self.display())

    def display(self) -> str:
        if self.text:
            return self.text
        return f"{self.prefix}: {self.detail}" if self.detail is not None else self.prefix


def _variant(name: str, status: int, text: str = "", prefix: str = "") -> type[KeyServerError]:
    cls = type(name, (KeyServerError,), {"parity_name": name, "status": status, "text": text, "prefix": prefix,
                                         "__doc__": f"Parity's ``{name}``: {text or prefix}."})
    cls.__module__ = __name__
    return cls


AccessDenied = _variant("AccessDenied", 403, "Access denied")
ConsensusUnreachable = _variant("ConsensusUnreachable", 403, "Consensus unreachable")
ConsensusTemporaryUnreachable = _variant("ConsensusTemporaryUnreachable", 403, "Consensus temporary unreachable")
ServerKeyIsNotFound = _variant("ServerKeyIsNotFound", 404, "Server key with this ID is not found")
DocumentKeyIsNotFound = _variant("DocumentKeyIsNotFound", 404, "Document key with this ID is not found")
ServerKeyAlreadyGenerated = _variant("ServerKeyAlreadyGenerated", 400, "Server key with this ID is already generated")
DocumentKeyAlreadyStored = _variant("DocumentKeyAlreadyStored", 400, "Document key with this ID is already stored")
InsufficientRequesterData = _variant("InsufficientRequesterData", 400, prefix="Insufficient requester data")
NodeDisconnected = _variant("NodeDisconnected", 500, "node required for this operation is currently disconnected")
NotEnoughNodesForThreshold = _variant("NotEnoughNodesForThreshold", 500, "not enough nodes for passed threshold")
InvalidNodeId = _variant("InvalidNodeId", 500, "invalid node id has been passed")
DuplicateSessionId = _variant("DuplicateSessionId", 500, "session with the same id is already registered")
NoActiveSessionWithId = _variant("NoActiveSessionWithId", 500, "no active session with given id")
TooEarlyForRequest = _variant("TooEarlyForRequest", 500, "session is not yet ready to process this request")
InvalidStateForRequest = _variant("InvalidStateForRequest", 500, "session is in invalid state for processing this request")
InvalidNodeForRequest = _variant("InvalidNodeForRequest", 500, "invalid node for this request")
InvalidMessage = _variant("InvalidMessage", 500, "invalid message is received")
InvalidMessageVersion = _variant("InvalidMessageVersion", 500, "unsupported message is received")
ReplayProtection = _variant("ReplayProtection", 500, "replay message is received")
ExclusiveSessionActive = _variant("ExclusiveSessionActive", 500, "Exclusive session active")
HasActiveSessions = _variant("HasActiveSessions", 500, "Unable to start exclusive session")
InternalError = _variant("Internal", 500, prefix="Internal error")
DatabaseError = _variant("Database", 500, prefix="Database error")
SerializationError = _variant("Serde", 400, prefix="Serialization error")

#: Our own: a session that did not finish within its configured timeout. Parity reports an
#: expired consensus session as ConsensusTemporaryUnreachable and generation as NodeDisconnected;
#: nodes raise those, and this subclass only adds which one timed out.


class SessionTimeout(NodeDisconnected):
    """A generation or storing session did not complete within its timeout (reported as NodeDisconnected)."""


#: Every KeyServerError variant by its Parity name (for the node-to-node wire and clients).
KEY_SERVER_ERRORS: dict[str, type[KeyServerError]] = {
    cls.parity_name: cls
    for cls in (
        AccessDenied, ConsensusUnreachable, ConsensusTemporaryUnreachable, ServerKeyIsNotFound,
        DocumentKeyIsNotFound, ServerKeyAlreadyGenerated, DocumentKeyAlreadyStored,
        InsufficientRequesterData, NodeDisconnected, NotEnoughNodesForThreshold, InvalidNodeId,
        DuplicateSessionId, NoActiveSessionWithId, TooEarlyForRequest, InvalidStateForRequest,
        InvalidNodeForRequest, InvalidMessage, InvalidMessageVersion, ReplayProtection,
        ExclusiveSessionActive, HasActiveSessions, InternalError, DatabaseError, SerializationError,
    )
}


class KeyVersionNotFound(DatabaseError):  # type: ignore[misc,valid-type]
    """A key share record has no version with the requested hash (Parity: a Database error)."""


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
