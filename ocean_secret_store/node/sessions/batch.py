"""Batch shadow retrieval (ours, beyond Parity; docs/http-api.md, "Batch shadow retrieval"): many
keys' document key shadows in one request, each checked as a single retrieval is.

The entry node checks each key as :mod:`.decryption` does (the key and its document key held here,
its own access decision for that key's requester), then groups the keys by their holders and
threshold: keys of one cluster normally share both. For each group of keys (in exchanges of at
most :data:`CHUNK` keys, run at once) it runs attempts over ``t`` other holders like a single
retrieval (:func:`.groups.hedged`): ONE ``DecryptBatch`` per member carries every key of the
exchange, each with its requester's signature, the key version and a fresh access key of its own.
Every member checks each key as a single ``Decrypt`` (version, group, its own access decision about
that key's requester, audited per key) and answers each key with its shadow point and decrypt
shadow (encrypted to that key's requester) or with its refusal of that key.

The decrypt shadows of one answer (a member's, or the entry node's own for one attempt) are
encrypted with ONE ECIES ephemeral key per requester (:class:`~...crypto.ecies.Encryptor`): a fresh
ephemeral scalar for each (answer, requester), never kept past the answer, never used for another
requester, and each decrypt shadow in Parity's ECIES format with its own random IV, so that a client
opens each one alone as before (and one that keeps a :class:`~...crypto.ecies.Decryptor` over the
answer does one ECDH per member and requester instead of one per key). The encryptor's docstring
has the argument why many messages under one ECIES key are as safe as separate ones.

A member that fails as a whole (disconnects, times out, is over its session cap) is replaced, and
a slow one hedged around, for the whole exchange. A key that some member refused or could not serve
(access denied in its view, a stale version) leaves the batch and runs as a single retrieval
(``fallback``), which replaces refusing members as usual: per key, the answer is the one a single
retrieval would give. So are keys this node cannot run itself (no usable share here: delegated).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from ...crypto import ecies, shadows
from ...crypto.curve import Point, random_scalar
from ...exceptions import (
    AccessDenied,
    ConsensusUnreachable,
    InternalError,
    InvalidMessage,
    InvalidNodeForRequest,
    KeyServerError,
)
from ...protocol import messages as m
from ..storage import KeyVersion
from .base import Core, Requester, RequestHandlers
from .decryption import ShadowResult, _compute, _Document, _document, _validate_group
from .groups import Attempt, Group, MemberFailures, hedged, requests_away

#: Most keys of one exchange with a group: a larger batch runs as several exchanges at once, each with
#: a group of its own (:func:`_exchanges`), so that the members' work is spread over the holders and
#: overlaps with this node's.
CHUNK: Final = 64
#: Fewest keys an exchange is split down to, to spread a batch over disjoint groups.
MIN_EXCHANGE: Final = 16
#: Access decisions a node asks at once for one batch (each may be a chain call).
ACL_CONCURRENCY: Final = 16
#: Keys that left a batch and run as single retrievals at once.
FALLBACK_CONCURRENCY: Final = 8
#: Seconds of member work a batch adds per key to the hedge delay: a member's own work is ~0.25 ms
#: per key (its shadow, one ECIES encryption, the signature's recovery, the audit line), and a hedge
#: repeats the whole exchange, so the margin is wide (a host shared with other busy processes).
#: Every key of the batch counts, not only an exchange's: a member works on its exchanges at once.
HEDGE_PER_KEY: Final = 0.005
#: The operation name of each key of a batch in the audit log (a batch's key is a shadow retrieval).
OPERATION: Final = "shadow_decryption"

Fallback = Callable[[bytes, bytes, Requester], Awaitable[ShadowResult]]
Outcome = ShadowResult | KeyServerError


@dataclass(frozen=True, slots=True)
class BatchEntry:
    """One key of a batch, as the entry node received it (the requester already recovered)."""

    key_id: bytes
    signature: bytes
    requester: Requester


@dataclass(frozen=True, slots=True, repr=False)
class _Ready:
    index: int
    entry: BatchEntry
    document: _Document
    version: KeyVersion


async def _bounded_all(limit: int, coros: Sequence[Awaitable[Outcome]]) -> list[Outcome]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[Outcome]) -> Outcome:
        async with semaphore:
            try:
                return await coro
            except KeyServerError as exc:
                return exc

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def _prepare(core: Core, index: int, entry: BatchEntry) -> _Ready | KeyServerError | None:
    """The entry node's checks of one key; None: not runnable here (no usable share: a single retrieval)."""
    share = await core.load_key(entry.key_id)
    if share is None or not share.usable:
        return None
    try:
        document = await _document(core, entry.key_id)
    except KeyServerError as exc:
        return exc
    decision = await core.access(entry.requester, entry.key_id, share.author, share.owner)
    if not decision.allowed:
        return ConsensusUnreachable(decision.reason)  # as a single retrieval: the reason is only audited
    return _Ready(index, entry, document, share.last_version)


def _shadow(core: Core, document: _Document, version: KeyVersion, group: tuple[bytes, ...], access_key: int,
            requester: Requester, encryptors: dict[Point, ecies.Encryptor]) -> m.DecryptResponse:
    """This node's shadow of one key of a batch, as a single retrieval's (``decryption._compute`` in
    shadow mode), its decrypt shadow sealed by the answer's one encryptor for that key's requester."""
    encryptor = encryptors.get(requester.public)
    if encryptor is None:
        encryptor = encryptors[requester.public] = ecies.Encryptor(requester.public, rng=core.rng)
    return _compute(core, document, version, group, access_key, requester, True, encryptor)


async def _attempt(core: Core, ready: Sequence[_Ready], attempt: Attempt) -> dict[int, Outcome | None]:
    """One attempt with one group for every key of ``ready``: each key's result, or None for a key
    some member did not serve (it runs as a single retrieval)."""
    group = tuple(sorted([core.node_id, *attempt.chosen]))
    access_keys = [random_scalar(core.rng) for _ in ready]
    request = m.DecryptBatchRequest(group=group, items=tuple(
        m.DecryptBatchItem(key_id=r.entry.key_id, signature=r.entry.signature, version=r.version.hash,
                           access_key=a) for r, a in zip(ready, access_keys, strict=True)))
    timeout = core.session_timeout
    pending = asyncio.ensure_future(attempt.round(
        {n: core.request(n, request, m.DecryptBatchResponse, timeout, sample=False) for n in attempt.chosen}))
    try:
        await requests_away()  # then this node's own part, while the members compute theirs
        own = []
        encryptors: dict[Point, ecies.Encryptor] = {}  # this attempt's own answer: one per requester
        for i, (r, access_key) in enumerate(zip(ready, access_keys, strict=True)):
            own.append(_shadow(core, r.document, r.version, group, access_key, r.entry.requester, encryptors))
            if i % 32 == 31:
                await asyncio.sleep(0)  # a long batch does not hold the event loop
        inverses = shadows.access_key_inverses(access_keys)  # one modular inversion for the exchange
        answers = await pending
    finally:
        pending.cancel()
    malformed = {n: InvalidMessage("a batch was answered with another number of results")
                 for n, a in answers.items() if len(a.results) != len(ready)}
    if malformed:
        raise MemberFailures(malformed)
    # each group member's answers in group order (this node's own among them)
    sources: list[Sequence[m.DecryptBatchResult | m.DecryptResponse]] = [
        own if n == core.node_id else answers[n].results for n in group]
    out: dict[int, Outcome | None] = {}
    for position, (r, access_key) in enumerate(zip(ready, access_keys, strict=True)):
        points: list[Point] = []
        blobs: list[bytes] = []
        for results in sources:
            part = results[position]
            if part.shadow_point is None or part.decrypt_shadow is None:
                break
            points.append(part.shadow_point)
            blobs.append(part.decrypt_shadow)
        else:
            threshold = r.document.share.threshold
            out[r.index] = ShadowResult(
                decrypted_secret=shadows.combine_shadow_points(points, access_key, r.document.encrypted_point,
                                                               threshold, inverses[position]),
                common_point=shadows.requester_common_point(r.document.common_point, threshold),
                decrypt_shadows=tuple(blobs),
            )
            continue
        out[r.index] = None  # some member did not serve it: a single retrieval
    return out


def _exchanges(core: Core, ready: Sequence[_Ready]) -> list[tuple[Sequence[_Ready], Group]]:
    """The keys of one holder set split into exchanges, each with its group: as many exchanges as
    disjoint groups of ``t`` members the holders allow (each of at least :data:`MIN_EXCHANGE` keys),
    more where an exchange would exceed :data:`CHUNK`; equal sizes. Disjoint groups first, so that
    the members' work is spread over every holder (a batch of 100 on 5 nodes with t = 2: two
    exchanges of 50, with two members each, none shared)."""
    first = ready[0]
    threshold = first.document.share.threshold
    picked = Group.pick(core, first.version.id_numbers, threshold)
    candidates = [*picked.chosen, *picked.spares]
    disjoint = max(len(candidates) // threshold, 1) if threshold else 1
    parts = max(-(-len(ready) // CHUNK), min(disjoint, len(ready) // MIN_EXCHANGE), 1)
    size = -(-len(ready) // parts)
    out = []
    for part, start in enumerate(range(0, len(ready), size)):
        shift = (part * threshold) % len(candidates) if candidates else 0
        rotated = candidates[shift:] + candidates[:shift]
        group = Group(rotated[:threshold], rotated[threshold:], threshold, picked.holders)
        out.append((ready[start:start + size], group))
    return out


async def _run_exchange(core: Core, ready: Sequence[_Ready], group: Group,
                        batch_keys: int) -> dict[int, Outcome | None]:
    return await hedged(core, group, lambda attempt: _attempt(core, ready, attempt),
                        extra_delay=HEDGE_PER_KEY * batch_keys)


async def retrieve_shadows(core: Core, entries: Sequence[BatchEntry], fallback: Fallback) -> list[Outcome]:
    """Each entry's shadow retrieval result or error, in order (see the module's description)."""
    results: list[Outcome | None] = [None] * len(entries)
    semaphore = asyncio.Semaphore(ACL_CONCURRENCY)

    async def prepare(index: int, entry: BatchEntry) -> _Ready | KeyServerError | None:
        async with semaphore:
            return await _prepare(core, index, entry)

    prepared = await asyncio.gather(*(prepare(i, e) for i, e in enumerate(entries)))
    groups: dict[tuple[int, frozenset[bytes]], list[_Ready]] = {}
    for index, item in enumerate(prepared):
        if isinstance(item, KeyServerError):
            results[index] = item
        elif item is not None:
            key = (item.document.share.threshold, frozenset(item.version.id_numbers))
            groups.setdefault(key, []).append(item)

    async def run(ready: Sequence[_Ready], group: Group) -> None:
        try:
            outcomes = await _run_exchange(core, ready, group, len(entries))
        except KeyServerError as exc:  # no group for these keys: each gets the error
            outcomes = {r.index: exc for r in ready}
        for index, outcome in outcomes.items():
            results[index] = outcome

    exchanges: list[tuple[Sequence[_Ready], Group]] = []
    for ready in groups.values():
        try:
            exchanges += _exchanges(core, ready)
        except KeyServerError as exc:  # too few holders reachable for these keys: each gets the error
            for r in ready:
                results[r.index] = exc
    await asyncio.gather(*(run(ready, group) for ready, group in exchanges))
    single = [i for i, r in enumerate(results) if r is None]
    if single:
        done = await _bounded_all(FALLBACK_CONCURRENCY, [
            fallback(entries[i].key_id, entries[i].signature, entries[i].requester) for i in single])
        for index, outcome in zip(single, done, strict=True):
            results[index] = outcome
    return [r if r is not None else InternalError("a batch key was left without a result") for r in results]


# -- member ---------------------------------------------------------------------------------------


async def _on_item(core: Core, sender: bytes, group: tuple[bytes, ...], item: m.DecryptBatchItem,
                   encryptors: dict[Point, ecies.Encryptor]) -> m.DecryptBatchResult:
    try:
        document = await _document(core, item.key_id)
        share = document.share
        version = next((v for v in reversed(share.versions) if v.hash == item.version), None)
        if version is None:
            raise InvalidMessage("unknown key version")
        _validate_group(core, sender, share, version, group)
        requester = Requester.from_signature(item.signature, item.key_id)
        decision = await core.access(requester, item.key_id, share.author, share.owner)
        if not decision.allowed:
            core.audit_member(OPERATION, item.key_id, requester.address, "refused", decision.reason)
            raise AccessDenied()
        core.audit_member(OPERATION, item.key_id, requester.address, "allowed", decision.reason)
        answer = _shadow(core, document, version, group, item.access_key, requester, encryptors)
    except KeyServerError as exc:
        return m.DecryptBatchResult(shadow_point=None, decrypt_shadow=None, error=exc.parity_name, detail=exc.detail)
    return m.DecryptBatchResult(shadow_point=answer.shadow_point, decrypt_shadow=answer.decrypt_shadow, error=None,
                                detail=None)


async def _on_decrypt_batch(core: Core, sender: bytes, msg: m.DecryptBatchRequest) -> m.DecryptBatchResponse:
    if core.node_id not in msg.group or sender not in msg.group:
        raise InvalidNodeForRequest()
    semaphore = asyncio.Semaphore(ACL_CONCURRENCY)
    encryptors: dict[Point, ecies.Encryptor] = {}  # this answer's: one ephemeral key per requester

    async def one(item: m.DecryptBatchItem) -> m.DecryptBatchResult:
        async with semaphore:
            return await _on_item(core, sender, msg.group, item, encryptors)

    return m.DecryptBatchResponse(results=tuple(await asyncio.gather(*(one(item) for item in msg.items))))


REQUEST_HANDLERS: Final[RequestHandlers] = {m.DecryptBatchRequest: _on_decrypt_batch}
