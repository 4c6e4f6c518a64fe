"""Node-to-node message types of our cluster protocol and their strict JSON codec.

The wire format is ours (architecture.md): each message is one compact JSON object
``{"kind": <name>, "rid": <request id or null>, "reply_to": <request id or null>, ...fields}``
carried inside an authenticated, encrypted transport frame. Field values follow Parity's JSON
conventions (protocol.md §6.5): ``0x``-prefixed lowercase hex of fixed width for hashes,
scalars, points, addresses and signatures. Decoding validates every field (length, curve
membership, ranges) and raises :class:`~ocean_secret_store.exceptions.InvalidMessage`, so a
peer's malformed message can never reach a session.

Message semantics follow Parity's sessions (protocol.md §6.11) where they are sound; the
differences (one-round-trip consensus, Feldman-verified public shares, explicit commit) are
described in ``docs/cluster-protocol.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, Final, TypeVar, dataclass_transform

from ..crypto.curve import N, Point
from ..exceptions import InvalidMessage, InvalidPoint
from .bound import Bound, BoundSignatureError, parse_headers
from .hexcodec import parse_hex, to_hex

# -- field codecs --------------------------------------------------------------------------------

_Enc = Callable[[Any], Any]
_Dec = Callable[[Any], Any]


def _hex_field(value: Any, size: int | None = None) -> bytes:
    return parse_hex(value, "hex value", size, error=InvalidMessage)


def _fixed(size: int) -> tuple[_Enc, _Dec]:
    def enc(v: bytes) -> str:
        if len(v) != size:
            raise InvalidMessage(f"field must be {size} bytes, got {len(v)}")
        return to_hex(v)

    return enc, lambda v: _hex_field(v, size)


def _enc_point(p: Point) -> str:
    return to_hex(p.to_bytes())


def _dec_point(v: Any) -> Point:
    try:
        return Point.from_bytes(_hex_field(v, 64))
    except InvalidPoint as exc:
        raise InvalidMessage("a point field is not on secp256k1") from exc


def _enc_scalar(x: int) -> str:
    return to_hex((x % N).to_bytes(32, "big"))


def _dec_scalar(v: Any) -> int:
    x = int.from_bytes(_hex_field(v, 32), "big")
    if x >= N:
        raise InvalidMessage("a scalar field is not below the curve order")
    return x


def _dec_nonzero_scalar(v: Any) -> int:
    x = _dec_scalar(v)
    if x == 0:
        raise InvalidMessage("a secret scalar field is zero")
    return x


def _dec_int(v: Any) -> int:
    if type(v) is not int or v < 0 or v > 2**31:
        raise InvalidMessage("expected a small non-negative integer")
    return v


def _dec_bool(v: Any) -> bool:
    if type(v) is not bool:
        raise InvalidMessage("expected a boolean")
    return v


def _dec_str(v: Any) -> str:
    if not isinstance(v, str) or len(v) > 1024:
        raise InvalidMessage("expected a short string")
    return v


def _list(enc: _Enc, dec: _Dec, limit: int = 256) -> tuple[_Enc, _Dec]:
    def dec_list(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, list) or len(v) > limit:
            raise InvalidMessage("expected a bounded list")
        return tuple(dec(item) for item in v)

    return (lambda xs: [enc(x) for x in xs]), dec_list


def _optional(enc: _Enc, dec: _Dec) -> tuple[_Enc, _Dec]:
    return (lambda v: None if v is None else enc(v)), (lambda v: None if v is None else dec(v))


def _enc_bound(v: Bound) -> list[str]:
    return [v.header_value(), v.signature.hex()]


def _dec_bound(v: Any) -> Bound:
    # The two HTTP header values as the entry node received them; parsed by the same code.
    if not isinstance(v, list) or len(v) != 2 or not all(isinstance(x, str) and len(x) <= 256 for x in v):
        raise InvalidMessage("expected the two bound signature header values")
    try:
        bound = parse_headers(v[0], v[1])
    except BoundSignatureError as exc:
        raise InvalidMessage(exc.detail) from None
    if bound is None:
        raise InvalidMessage("expected the two bound signature header values")
    return bound


_H256 = _fixed(32)
_NODE = _fixed(64)
_ADDRESS = _fixed(20)
_SIGNATURE = _fixed(65)


def _dec_id_map(v: Any) -> dict[bytes, int]:
    if not isinstance(v, dict) or not v or len(v) > 256:
        raise InvalidMessage("expected a non-empty map of node ids to id numbers")
    out = {_NODE[1](k): _dec_nonzero_scalar(x) for k, x in v.items()}
    if len(set(out.values())) != len(out):
        raise InvalidMessage("id numbers must be distinct")
    return out


def _enc_id_map(m: Mapping[bytes, int]) -> dict[str, str]:
    return {to_hex(k): _enc_scalar(x) for k, x in sorted(m.items())}


CODECS: dict[str, tuple[_Enc, _Dec]] = {
    "h256": _H256,
    "node": _NODE,
    "address": _ADDRESS,
    "signature": _SIGNATURE,
    "point": (_enc_point, _dec_point),
    "scalar": (_enc_scalar, _dec_scalar),
    "secret": (_enc_scalar, _dec_nonzero_scalar),
    "int": (lambda v: v, _dec_int),
    "bool": (lambda v: v, _dec_bool),
    "str": (lambda v: v, _dec_str),
    "blob": (to_hex, _hex_field),
    "opt_blob": _optional(to_hex, _hex_field),
    "opt_point": _optional(_enc_point, _dec_point),
    "opt_address": _optional(*_ADDRESS),
    "opt_str": _optional(lambda v: v, _dec_str),
    "opt_bound": _optional(_enc_bound, _dec_bound),
    "points": _list(_enc_point, _dec_point),
    "nodes": _list(*_NODE),
    "h256s": _list(*_H256, limit=32),
    "blobs": _list(to_hex, _hex_field),
    "id_map": (_enc_id_map, _dec_id_map),
    "opt_id_map": _optional(_enc_id_map, _dec_id_map),
    "opt_node": _optional(*_NODE),
    "opt_h256": _optional(*_H256),
    "key_page": _list(*_H256, limit=512),
}

# -- messages ---------------------------------------------------------------------------------------

#: Every message class by its kind (the ``"kind"`` on the wire); filled by :func:`message`.
REGISTRY: dict[str, type[Message]] = {}


class Message:
    """Base of every cluster message; subclasses are frozen dataclasses made by :func:`message`."""

    __slots__ = ()
    KIND: ClassVar[str] = ""
    #: field name -> codec name in CODECS, in wire order
    SCHEMA: ClassVar[Mapping[str, str]] = MappingProxyType({})


MessageT = TypeVar("MessageT", bound=Message)


@dataclass_transform(frozen_default=True)
def message(kind: str, **schema: str) -> Callable[[type[MessageT]], type[MessageT]]:
    """Make the decorated class a frozen, slotted message dataclass sent as ``kind``.

    ``schema`` names the codec of every field, in the order of the fields. repr=False: several
    messages carry secret shares, and nothing may print them by accident.
    """

    def wrap(cls: type[MessageT]) -> type[MessageT]:
        made = dataclasses.dataclass(frozen=True, slots=True, repr=False)(cls)
        if not dataclasses.is_dataclass(made):  # narrows the type for fields(); always a dataclass here
            raise TypeError(f"{cls.__name__} is not a dataclass")
        names = [f.name for f in dataclasses.fields(made)]
        if names != list(schema):
            raise TypeError(f"{cls.__name__}: schema {list(schema)} does not match fields {names}")
        unknown = set(schema.values()) - CODECS.keys()
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown codecs {unknown}")
        if kind in REGISTRY:
            raise TypeError(f"{cls.__name__}: kind {kind!r} is already {REGISTRY[kind].__name__}")
        made.KIND = kind
        made.SCHEMA = MappingProxyType(dict(schema))
        REGISTRY[kind] = made
        return made

    return wrap


# Generic replies.
@message("Ack")
class Ack(Message):
    """A request succeeded and has nothing to return."""


@message("Error", error="str", detail="opt_str")
class ErrorReply(Message):
    """A request failed: ``error`` is the Parity variant name, ``detail`` its payload if it has one."""

    error: str
    detail: str | None


# Server key generation (DKG, protocol.md §2.5 with Feldman-verified public shares).
@message("GenInit", session="h256", author="address", threshold="int", id_numbers="id_map", owner="opt_address")
class GenInit(Message):
    """Master -> every node: reserve ``session`` (the key id) for a generation with these id numbers.

    ``owner`` is the key's owner-to-be that the author named (``X-Secret-Store-Owner``), recorded by
    every node with its share; None (absent on the wire, as an earlier node sends it) names none.
    """

    session: bytes
    author: bytes
    threshold: int
    id_numbers: dict[bytes, int]
    owner: bytes | None = None


@message("GenStart", session="h256")
class GenStart(Message):
    """Master -> every node: deal now; answered with ``GenReady`` once every check passed."""

    session: bytes


@message("GenDealing", session="h256", secret1="scalar", secret2="scalar", commitments="points")
class GenDealing(Message):
    """Dealer -> one node (one-way): its two secret shares and the dealer's Pedersen commitments."""

    session: bytes
    secret1: int
    secret2: int
    commitments: tuple[Point, ...]


@message("GenPublics", session="h256", coefficients="points")
class GenPublics(Message):
    """Dealer -> every node (one-way): the Feldman commitments of its polynomial."""

    session: bytes
    coefficients: tuple[Point, ...]


@message("GenReady", public="point", digest="opt_h256")
class GenReady(Message):
    """Node -> master, answering ``GenStart``: the joint public key this node computed, and the
    digest of the version commitments ``D`` it computed (``resharing.version_digest``): every node
    must store the same ``D``, from which the next redistribution names a cheating dealer."""

    public: Point
    digest: bytes | None = None


@message("GenCommit", session="h256")
class GenCommit(Message):
    """Master -> every node: store your share; the key exists once every node answered."""

    session: bytes


@message("GenAbort", session="h256")
class GenAbort(Message):
    """Master -> every node (one-way): forget the generation."""

    session: bytes


# Document key storing: prepare, then commit or abort (docs/cluster-protocol.md), and the status
# query with which holders resolve a store left unfinished.
@message("StorePrepare", key_id="h256", tx="h256", signature="signature", common_point="point",
         encrypted_point="point", operation="opt_str", bound="opt_bound")
class StorePrepare(Message):
    """Entry node -> every node: check the store and record ``(C, E)`` as pending under ``tx``.

    ``tx`` is a fresh random transaction id. ``bound`` is the requester's bound signature
    (protocol/bound.py) when the request carried one, for ``operation`` (``store_document_key``,
    or ``generate_document_key`` for endpoint 3), so every member checks it and claims its nonce
    itself. Both may be absent on the wire (None). Answered with ``StorePrepared``.
    """

    key_id: bytes
    tx: bytes
    signature: bytes
    common_point: Point
    encrypted_point: Point
    operation: str | None = None
    bound: Bound | None = None


@message("StorePrepared", holder="bool")
class StorePrepared(Message):
    """Node -> entry node: prepared (``holder``), or holds no share of the key (nothing to store)."""

    holder: bool


@message("StoreCommit", key_id="h256", tx="h256")
class StoreCommit(Message):
    """Entry node -> every holder that prepared ``tx``: make the pending document key the key's own."""

    key_id: bytes
    tx: bytes


@message("StoreAbort", key_id="h256", tx="h256")
class StoreAbort(Message):
    """Entry node -> every holder that prepared ``tx``: forget ``tx`` (the pending goes with its last one)."""

    key_id: bytes
    tx: bytes


@message("StoreStatusRequest", key_id="h256")
class StoreStatusRequest(Message):
    """Holder -> holder, resolving a pending document key: what do you hold of ``key_id``?"""

    key_id: bytes


@message("StoreStatus", holder="bool", committed_common="opt_point", committed_encrypted="opt_point",
         pending_common="opt_point", pending_encrypted="opt_point")
class StoreStatus(Message):
    """Answer to ``StoreStatusRequest``: the committed document key, the pending one (each a point
    pair, or absent), and whether the node holds a share of the key at all."""

    holder: bool
    committed_common: Point | None
    committed_encrypted: Point | None
    pending_common: Point | None
    pending_encrypted: Point | None

    def __post_init__(self) -> None:
        if (self.committed_common is None) != (self.committed_encrypted is None) or (
            (self.pending_common is None) != (self.pending_encrypted is None)
        ):
            raise InvalidMessage("StoreStatus: a document key is two points or none")
        if not self.holder and (self.committed_common is not None or self.pending_common is not None):
            raise InvalidMessage("StoreStatus: a node without a share holds no document key")


# Key metadata (negotiation when the entry node holds no share).
@message("KeyInfoRequest", key_id="h256")
class KeyInfoRequest(Message):
    """Entry node -> peer: what do you hold of ``key_id``?"""

    key_id: bytes


@message("KeyInfo", found="bool", threshold="int", author="opt_address", public="opt_point",
         has_document_key="bool", versions="h256s", holders="nodes")
class KeyInfo(Message):
    """Peer -> entry node: the key's public metadata (``found`` False: no share, the rest empty)."""

    found: bool
    threshold: int
    author: bytes | None
    public: Point | None
    has_document_key: bool
    versions: tuple[bytes, ...]
    holders: tuple[bytes, ...]


# Decryption: consensus and partial decryption in one round trip (protocol.md §2.7).
@message("Decrypt", key_id="h256", signature="signature", version="h256", access_key="secret",
         group="nodes", shadow="bool")
class DecryptRequest(Message):
    """Entry node -> group member: check access, then compute your part for this group."""

    key_id: bytes
    signature: bytes
    version: bytes
    access_key: int
    group: tuple[bytes, ...]
    shadow: bool


@message("Decrypted", shadow_point="point", decrypt_shadow="opt_blob")
class DecryptResponse(Message):
    """Member -> entry node: its shadow point, and for shadow retrieval its encrypted decrypt shadow."""

    shadow_point: Point
    decrypt_shadow: bytes | None


# Schnorr signing (protocol.md §2.8): nonce round, then partial signatures.
@message("SchnorrNonce", session="h256", key_id="h256", signature="signature", version="h256",
         message_hash="h256")
class SchnorrNonceRequest(Message):
    """Entry node -> member: check access and draw a single-use nonce for ``session``."""

    session: bytes
    key_id: bytes
    signature: bytes
    version: bytes
    message_hash: bytes


@message("SchnorrNonceReply", nonce_public="point")
class SchnorrNonceReply(Message):
    """Member -> entry node: the public part of its nonce."""

    nonce_public: Point


@message("SchnorrPartial", session="h256", group="nodes", challenge="secret")
class SchnorrPartialRequest(Message):
    """Entry node -> member: sign the challenge with the session's nonce (then forget the nonce)."""

    session: bytes
    group: tuple[bytes, ...]
    challenge: int


@message("SchnorrPartialReply", partial="scalar")
class SchnorrPartialReply(Message):
    """Member -> entry node: its partial signature."""

    partial: int


@message("SchnorrCancel", session="h256")
class SchnorrCancel(Message):
    """Entry node -> member: drop the nonce of an abandoned attempt."""

    session: bytes


# Threshold ECDSA signing (protocol.md §2.9) over a group of 2t+1 holders: the sub-sharings in one
# round, the inversion, the partial signatures (docs/cluster-protocol.md, "ECDSA signing").
CODECS["digests"] = _list(*_H256)


@message("EcdsaStart", session="h256", key_id="h256", signature="signature", version="h256", group="nodes",
         message_hash="h256")
class EcdsaStart(Message):
    """Entry node -> each other member of ``group`` (2t+1 holders of ``version``, sorted): check access,
    deal your four sub-sharings to the group (``EcdsaDealing``), verify every member's, and answer
    ``EcdsaDealt`` (or ``EcdsaComplaint`` naming a dealer whose pairs fail its commitments).
    ``session`` is fresh for every attempt; ``message_hash`` is what the attempt signs."""

    session: bytes
    key_id: bytes
    signature: bytes
    version: bytes
    group: tuple[bytes, ...]
    message_hash: bytes


@message("EcdsaDealing", session="h256", nonce1="scalar", nonce2="scalar", inversion1="scalar",
         inversion2="scalar", zero1="scalar", zero2="scalar", mask1="scalar", mask2="scalar",
         nonce_commitments="points", inversion_commitments="points", zero_commitments="points",
         mask_commitments="points", nonce_public_share="point")
class EcdsaDealing(Message):
    """Member -> member (one-way, the entry node included): the pairs ``(f(x_j), g(x_j))`` of the
    dealer's nonce, inversion-helper, zero and mask sub-sharings for the receiver, and the dealer's
    commitments (the same to every member: ``EcdsaDealt.digests`` checks that). One that arrives
    before its ``EcdsaStart`` waits for it (bounded)."""

    session: bytes
    nonce1: int
    nonce2: int
    inversion1: int
    inversion2: int
    zero1: int
    zero2: int
    mask1: int
    mask2: int
    nonce_commitments: tuple[Point, ...]
    inversion_commitments: tuple[Point, ...]
    zero_commitments: tuple[Point, ...]
    mask_commitments: tuple[Point, ...]
    nonce_public_share: Point


@message("EcdsaDealt", coeff_share="scalar", digests="digests")
class EcdsaDealt(Message):
    """Member -> entry node, answering ``EcdsaStart``: ``u_i = k_i·alpha_i + z_i`` and, per dealer in
    the group's order, the SHA-256 digest of the commitments this member received from it."""

    coeff_share: int
    digests: tuple[bytes, ...]


@message("EcdsaComplaint", dealers="nodes")
class EcdsaComplaint(Message):
    """Member -> entry node, answering ``EcdsaStart``: these dealers' pairs failed their commitments."""

    dealers: tuple[bytes, ...]


@message("EcdsaPartial", session="h256", inversed_nonce_coeff="secret")
class EcdsaPartial(Message):
    """Entry node -> member: ``u^-1``; answer your partial signature (then forget the attempt)."""

    session: bytes
    inversed_nonce_coeff: int


@message("EcdsaPartialReply", partial="scalar")
class EcdsaPartialReply(Message):
    """Member -> entry node: its masked partial signature."""

    partial: int


@message("EcdsaCancel", session="h256")
class EcdsaCancel(Message):
    """Entry node -> member (one-way): forget the attempt (its shares and sub-sharings)."""

    session: bytes


# Delegation: an entry node without a share asks a holder to run the operation as entry (§6.9).
@message("Delegate", operation="str", key_id="h256", signature="signature", version="h256",
         message_hash="opt_blob")
class DelegateRequest(Message):
    """Entry node without a share -> a holder of ``version``: run ``operation`` (``shadow``, ``plain``
    or ``schnorr``, with ``message_hash``) for this requester as the entry node, and answer with its result."""

    operation: str
    key_id: bytes
    signature: bytes
    version: bytes
    message_hash: bytes | None


@message("DelegatedShadow", decrypted_secret="point", common_point="point", decrypt_shadows="blobs")
class DelegatedShadow(Message):
    """Holder -> entry node: a shadow retrieval's result (nothing in it reveals the document key)."""

    decrypted_secret: Point
    common_point: Point
    decrypt_shadows: tuple[bytes, ...]


@message("DelegatedBlob", blob="blob")
class DelegatedBlob(Message):
    """Holder -> entry node: a result encrypted to the requester (a document key, a Schnorr signature)."""

    blob: bytes


# Admin sessions: servers-set change, refresh, repair (docs/cluster-protocol.md, "Servers-set change").
@message("AdminInit", session="h256", operation="str", old_set="nodes", new_set="nodes", target="opt_node",
         old_signature="signature", new_signature="signature", force="bool")
class AdminInit(Message):
    """Master -> every node of the old and new sets: verify the administrator's signatures and mark
    the admin session (persisted, exclusive against other admin sessions and key generation).

    ``operation`` is ``change``, ``refresh`` or ``repair`` (``target``: the node to repair).
    ``force``: the administrator forced the session; it then supersedes another unfinished session
    marked on the node, unless that one is visibly running there."""

    session: bytes
    operation: str
    old_set: tuple[bytes, ...]
    new_set: tuple[bytes, ...]
    target: bytes | None
    old_signature: bytes
    new_signature: bytes
    force: bool = False


@message("AdminKeysRequest", session="h256", after="h256")
class AdminKeysRequest(Message):
    """Master -> node: the key ids you hold above ``after`` (zero: from the first), in order."""

    session: bytes
    after: bytes


@message("AdminKeys", key_ids="key_page", more="bool")
class AdminKeys(Message):
    """Node -> master: a page of its key ids (ascending) and whether more follow."""

    key_ids: tuple[bytes, ...]
    more: bool


@message("AdminDone", session="h256")
class AdminDone(Message):
    """Master -> every node: every key is on the new set; make it the servers set, end the session."""

    session: bytes


@message("AdminCancel", session="h256")
class AdminCancel(Message):
    """Master -> every node: the session changed nothing (refused after its preflight); end it."""

    session: bytes


@message("ReshareInfo", found="bool", threshold="int", public="opt_point", active="opt_h256", epoch="int",
         id_numbers="opt_id_map", max_epoch="int", others="h256s", document_key="bool")
class ReshareInfo(Message):
    """One node's record of one key (an item of ``ReshareInfos``): the active version (hash, epoch,
    id numbers), the highest epoch of any version it holds, the hashes of every other version it
    holds (inactive ones, and older active ones a prune has not dropped yet), and whether it holds
    the key's document key (a node restored from a backup taken before the key's store has none)."""

    found: bool
    threshold: int
    public: Point | None
    active: bytes | None
    epoch: int
    id_numbers: dict[bytes, int] | None
    max_epoch: int
    others: tuple[bytes, ...]
    document_key: bool = True


def _enc_item(cls: type[Message]) -> _Enc:
    def enc(item: Message) -> dict[str, Any]:
        if not isinstance(item, cls):
            raise InvalidMessage(f"expected {cls.KIND}")
        return {name: CODECS[codec][0](getattr(item, name)) for name, codec in cls.SCHEMA.items()}

    return enc


def _dec_item(cls: type[Message]) -> _Dec:
    def dec(value: Any) -> Message:
        if not isinstance(value, dict) or set(value) != set(cls.SCHEMA):
            raise InvalidMessage(f"expected {cls.KIND} fields")
        return cls(**{name: CODECS[codec][1](value[name]) for name, codec in cls.SCHEMA.items()})

    return dec


CODECS["reshare_infos"] = _list(_enc_item(ReshareInfo), _dec_item(ReshareInfo), limit=512)


@message("ReshareProbes", session="h256", key_ids="key_page")
class ReshareProbes(Message):
    """Master -> node: what versions of each of these keys do you hold? (one page of keys)"""

    session: bytes
    key_ids: tuple[bytes, ...]


@message("ReshareInfos", infos="reshare_infos")
class ReshareInfos(Message):
    """Node -> master: one ``ReshareInfo`` per key asked, in order."""

    infos: tuple[ReshareInfo, ...]


@message("ReshareInit", session="h256", admin="h256", key_id="h256", version="h256", dealers="id_map",
         id_numbers="id_map", epoch="int")
class ReshareInit(Message):
    """Master -> dealer: redistribute ``version`` of ``key_id`` from ``dealers`` (node -> its id
    number in ``version``) to the new version ``id_numbers`` at ``epoch``: deal now (a
    ``ReshareDealing`` to every receiver); answered once sent."""

    session: bytes
    admin: bytes
    key_id: bytes
    version: bytes
    dealers: dict[bytes, int]
    id_numbers: dict[bytes, int]
    epoch: int


@message("ReshareDealing", session="h256", subshare="secret", commitments="points", author="address",
         threshold="int", public="point", common_point="opt_point", encrypted_point="opt_point",
         owner="opt_address")
class ReshareDealing(Message):
    """Dealer -> receiver (one-way): ``h_i(x_j)``, the dealer's commitments, and the key's public
    record (what a new holder stores; every dealer must send the same). A dealing that arrives before
    its ``ReshareReceive`` waits for it (bounded)."""

    session: bytes
    subshare: int
    commitments: tuple[Point, ...]
    author: bytes
    threshold: int
    public: Point
    common_point: Point | None
    encrypted_point: Point | None
    owner: bytes | None


@message("ReshareReceive", session="h256", admin="h256", key_id="h256", version="h256", dealers="id_map",
         id_numbers="id_map", epoch="int")
class ReshareReceive(Message):
    """Master -> receiver (the fields of ``ReshareInit``): take part as a receiver; verify every
    dealing and compute your new share; answer the digest of the new version's commitments."""

    session: bytes
    admin: bytes
    key_id: bytes
    version: bytes
    dealers: dict[bytes, int]
    id_numbers: dict[bytes, int]
    epoch: int


@message("ReshareReceived", digest="h256")
class ReshareReceived(Message):
    """Receiver -> master: the digest of the version commitments it computed."""

    digest: bytes


@message("ReshareCommits", sessions="key_page", digests="key_page")
class ReshareCommits(Message):
    """Master -> receiver, for a batch of keys: every receiver of ``sessions[i]`` computed
    ``digests[i]``; store each new version, inactive. Answered with ``ReshareFinished`` naming the
    sessions that failed here."""

    sessions: tuple[bytes, ...]
    digests: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.sessions) != len(self.digests):
            raise InvalidMessage("ReshareCommits: one digest per session")


@message("ReshareFinish", session="h256", stage="str", key_ids="key_page", versions="key_page")
class ReshareFinish(Message):
    """Master -> node, for a page of keys, ``stage`` ``activate``: each version (``versions[i]`` of
    ``key_ids[i]``) is committed on every holder, use it from now on; ``prune``: it is active on
    every holder, drop every other version (a node the admin session removes drops the key).
    Answered with ``ReshareFinished``."""

    session: bytes
    stage: str
    key_ids: tuple[bytes, ...]
    versions: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.key_ids) != len(self.versions):
            raise InvalidMessage("ReshareFinish: one version per key")
        if self.stage not in ("activate", "prune"):
            raise InvalidMessage("ReshareFinish: the stage is activate or prune")


@message("ReshareFinished", failed="key_page")
class ReshareFinished(Message):
    """Node -> master: the keys (sessions, for ``ReshareCommits``) of the page this node could not
    finish (the rest are done)."""

    failed: tuple[bytes, ...]


@message("ReshareAbort", session="h256")
class ReshareAbort(Message):
    """Master -> participants (one-way): forget this key's redistribution."""

    session: bytes


# Batch shadow retrieval (ours, beyond Parity; docs/cluster-protocol.md, "Batch retrieval"): one
# exchange per member carries many keys' shadow decryptions for one group.
@message("DecryptBatchItem", key_id="h256", signature="signature", version="h256", access_key="secret")
class DecryptBatchItem(Message):
    """One key of a ``DecryptBatch``: its requester's signature, the version and a fresh access key."""

    key_id: bytes
    signature: bytes
    version: bytes
    access_key: int


@message("DecryptBatchResult", shadow_point="opt_point", decrypt_shadow="opt_blob", error="opt_str",
         detail="opt_str")
class DecryptBatchResult(Message):
    """One key's answer in a ``DecryptedBatch``: the shadow point and decrypt shadow, or the error
    (a Parity variant name, and its detail if it has one) that this member answers for that key."""

    shadow_point: Point | None
    decrypt_shadow: bytes | None
    error: str | None
    detail: str | None


#: The most keys one batch message carries (a batch of 256 takes about 100 KB on the wire, well
#: inside a channel frame).
MAX_DECRYPT_BATCH: Final = 256
CODECS["decrypt_items"] = _list(_enc_item(DecryptBatchItem), _dec_item(DecryptBatchItem), limit=MAX_DECRYPT_BATCH)
CODECS["decrypt_results"] = _list(_enc_item(DecryptBatchResult), _dec_item(DecryptBatchResult),
                                  limit=MAX_DECRYPT_BATCH)


@message("DecryptBatch", group="nodes", items="decrypt_items")
class DecryptBatchRequest(Message):
    """Entry node -> group member: for each item, check access and compute your shadow decryption
    for this group; answer every item (a refusal of one key is that key's result)."""

    group: tuple[bytes, ...]
    items: tuple[DecryptBatchItem, ...]


@message("DecryptedBatch", results="decrypt_results")
class DecryptBatchResponse(Message):
    """Member -> entry node: one ``DecryptBatchResult`` per item, in order."""

    results: tuple[DecryptBatchResult, ...]


# Batch server key generation (ours, beyond Parity; docs/cluster-protocol.md, "Batch generation"):
# one session generates many keys, each node's dealings for every key in one message per peer.

#: The most keys one batch generation session carries.
MAX_GEN_BATCH: Final = 256
#: The most points one batch generation message carries (keys x (t + 1) commitments): about 270 KB
#: on the wire, well inside a channel frame; a session's keys are bounded by it too
#: (:func:`gen_batch_size`).
MAX_GEN_BATCH_POINTS: Final = 2048


def gen_batch_size(threshold: int) -> int:
    """The most keys of threshold ``threshold`` one batch generation session carries."""
    return max(1, min(MAX_GEN_BATCH, MAX_GEN_BATCH_POINTS // (threshold + 1)))


@message("GenBatchKey", key_id="h256", author="address", owner="opt_address")
class GenBatchKey(Message):
    """One key of a ``GenBatchInit``: its id, its author and the owner-to-be the author named."""

    key_id: bytes
    author: bytes
    owner: bytes | None


CODECS["gen_keys"] = _list(_enc_item(GenBatchKey), _dec_item(GenBatchKey), limit=MAX_GEN_BATCH)
CODECS["gen_key_ids"] = _list(*_H256, limit=MAX_GEN_BATCH)
CODECS["gen_errors"] = _list(lambda v: v, _dec_str, limit=MAX_GEN_BATCH)
CODECS["gen_scalars"] = _list(_enc_scalar, _dec_scalar, limit=MAX_GEN_BATCH)
CODECS["gen_points"] = _list(_enc_point, _dec_point, limit=MAX_GEN_BATCH_POINTS)


@message("GenBatchInit", session="h256", threshold="int", id_numbers="id_map", keys="gen_keys")
class GenBatchInit(Message):
    """Master -> every node: reserve these keys (each refused where it is stored or being generated)
    for one batch generation ``session`` with these id numbers; answered with ``GenBatchAccepted``."""

    session: bytes
    threshold: int
    id_numbers: dict[bytes, int]
    keys: tuple[GenBatchKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise InvalidMessage("GenBatchInit: no key")
        if len({k.key_id for k in self.keys}) != len(self.keys):
            raise InvalidMessage("GenBatchInit: a key id comes twice")


@message("GenBatchAccepted", refused="gen_key_ids", errors="gen_errors")
class GenBatchAccepted(Message):
    """Node -> master: the keys of the batch this node refuses, each with its error (a Parity variant
    name: ``ServerKeyAlreadyGenerated``, ``DuplicateSessionId``); it reserved every other one."""

    refused: tuple[bytes, ...]
    errors: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.refused) != len(self.errors):
            raise InvalidMessage("GenBatchAccepted: one error per refused key")


@message("GenBatchStart", session="h256", key_ids="gen_key_ids")
class GenBatchStart(Message):
    """Master -> every node: generate these keys of the batch (those no node refused), in this
    order, and release the others; deal now, answered with ``GenBatchReady`` once every check passed."""

    session: bytes
    key_ids: tuple[bytes, ...]


@message("GenBatchDealing", session="h256", keys="h256", secret1="gen_scalars", secret2="gen_scalars",
         commitments="gen_points")
class GenBatchDealing(Message):
    """Dealer -> one node (one-way): for every key of the batch in order, its two secret shares and
    its ``t + 1`` Pedersen commitments (flat: key after key). ``keys`` is the digest of the key ids
    dealt for (:func:`gen_batch_digest`)."""

    session: bytes
    keys: bytes
    secret1: tuple[int, ...]
    secret2: tuple[int, ...]
    commitments: tuple[Point, ...]


@message("GenBatchPublics", session="h256", keys="h256", coefficients="gen_points")
class GenBatchPublics(Message):
    """Dealer -> every node (one-way): the Feldman commitments of its polynomial for every key of
    the batch in order (flat: ``t + 1`` a key)."""

    session: bytes
    keys: bytes
    coefficients: tuple[Point, ...]


@message("GenBatchReady", publics="gen_points", digest="h256")
class GenBatchReady(Message):
    """Node -> master, answering ``GenBatchStart``: each key's joint public key in order, and one
    digest over every key's version commitments (``resharing.version_digest``, in order)."""

    publics: tuple[Point, ...]
    digest: bytes


@message("GenBatchCommit", session="h256")
class GenBatchCommit(Message):
    """Master -> every node: store the share of every key of the batch (one transaction)."""

    session: bytes


@message("GenBatchAbort", session="h256")
class GenBatchAbort(Message):
    """Master -> every node (one-way): forget the batch generation and release its keys."""

    session: bytes


def gen_batch_digest(key_ids: Sequence[bytes]) -> bytes:
    """SHA-256 over a batch's key ids in order (what a dealing names it deals for)."""
    digest = hashlib.sha256(b"ocean-secret-store/generation-batch/v1")
    digest.update(len(key_ids).to_bytes(4, "big"))
    for key_id in key_ids:
        digest.update(key_id)
    return digest.digest()


# -- envelope -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Envelope:
    """A message plus its request id (for requests) or the id it answers (for replies)."""

    body: Message
    rid: int | None = None
    reply_to: int | None = None


def encode(envelope: Envelope) -> bytes:
    body = envelope.body
    head = _JSON.encode({"kind": body.KIND, "rid": envelope.rid, "reply_to": envelope.reply_to})
    fields = _fields_json(body)
    # The same bytes as one json.dumps of the envelope's keys followed by the fields.
    return (head[:-1] + "," + fields + "}" if fields else head).encode()


#: One encoder for every message (json.dumps with separators makes a new one on each call).
_JSON: Final = json.JSONEncoder(separators=(",", ":"))
_ENVELOPE_KEYS: Final = frozenset({"kind", "rid", "reply_to"})
#: The last body encoded and its fields' JSON: an entry node sends one request body to each of the
#: t members of a round, which differ only in their request id; the fields (the group, the key id,
#: the signature) are encoded once. Bodies are frozen; the body is held, so its id is never reused.
_last_fields: tuple[Message, str] | None = None


def _fields_json(body: Message) -> str:
    """``"name":value,...`` of ``body``'s fields (no braces), as in the JSON object of the message."""
    global _last_fields  # noqa: PLW0603 -- a one-entry cache of the message last encoded
    last = _last_fields
    if last is not None and last[0] is body:
        return last[1]
    if not _ENVELOPE_KEYS.isdisjoint(body.SCHEMA):
        raise InvalidMessage(f"{body.KIND}: a field may not be named like an envelope key")
    text = _JSON.encode({name: CODECS[codec][0](getattr(body, name)) for name, codec in body.SCHEMA.items()})[1:-1]
    _last_fields = (body, text)
    return text


def envelope_ids(payload: bytes) -> tuple[int | None, int | None]:
    """``(rid, reply_to)`` of a message that :func:`decode` refused, if its envelope says (else None):
    so that a request or reply of another version fails at once instead of timing out."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    rid, reply_to = obj.get("rid"), obj.get("reply_to")
    return (rid if type(rid) is int and rid >= 0 else None,
            reply_to if type(reply_to) is int and reply_to >= 0 else None)


def decode(payload: bytes) -> Envelope:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage("message is not JSON") from exc
    if not isinstance(obj, dict):
        raise InvalidMessage("message is not a JSON object")
    kind = obj.get("kind")
    cls = REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidMessage("unknown message kind")
    rid, reply_to = obj.get("rid"), obj.get("reply_to")
    for ref in (rid, reply_to):
        if ref is not None and (type(ref) is not int or ref < 0):
            raise InvalidMessage("request ids are non-negative integers")
    values: dict[str, Any] = {}
    for name, codec in cls.SCHEMA.items():
        if name not in obj:
            if codec.startswith("opt_"):  # an optional field a node of an earlier version does not send
                values[name] = None
                continue
            raise InvalidMessage(f"{cls.KIND} lacks field {name}")
        try:
            values[name] = CODECS[codec][1](obj[name])
        except InvalidMessage as exc:
            raise InvalidMessage(f"{cls.KIND}.{name}: {exc.detail}") from None
    return Envelope(cls(**values), rid, reply_to)
