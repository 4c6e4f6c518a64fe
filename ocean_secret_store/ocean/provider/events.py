"""The provider's events handler: grants access and releases payment for paid agreements on its
DIDs, and refunds timed-out ones.

What Ocean's ``events-handler`` did beside Brizo (ocean.md §3.3, §4.4 steps 5, 6 and 8), as
one poller in the provider process:

1. Read ``LockRewardCondition.Fulfilled`` logs from the last block seen onward; each names an
   agreement whose consumer has locked the reward.
2. For each such agreement: read it back from ``AgreementStoreManager`` (template, DID, actors,
   condition ids). It is handled only if it is an ``EscrowAccessSecretStoreTemplate`` agreement,
   this provider is a provider of its DID (``DIDRegistry.isDIDProvider``) and, when the agreement
   names a ``provider`` actor, that actor is this provider (so two providers of one DID do not
   race for the same agreement).
3. Its terms are checked against the DDO: the condition ids recomputed locally with the DDO's
   price, the DID owner (or the DDO's publisher) as the payee and the agreement's consumer must
   equal those recorded on chain. A consumer who locked less than the price, or an escrow paying
   someone else, never gets access.
4. If the access condition is Unfulfilled: when it has timed out on chain
   (``ConditionStoreManager.isConditionTimedOut``) it is aborted
   (``AccessSecretStoreCondition.abortByTimeOut``), otherwise fulfilled
   (``AccessSecretStoreCondition.fulfill``: the on-chain grant). Then ``EscrowReward.fulfill``
   pays the publisher (access Fulfilled) or refunds the consumer (access Aborted).

Everything is recomputed from chain state on every pass, so the handler is idempotent and
survives restarts: an agreement whose escrow is no longer Unfulfilled is done, a crash between
the grant and the payment is finished on the next pass, and a restarted handler (``from_block``
0 by default) rescans the locks and skips what is settled. A failing agreement is retried on
later passes, up to ``max_attempts`` times per process lifetime.

:meth:`EventsHandler.run_once` does one pass synchronously (tests call it deterministically);
:meth:`EventsHandler.run` loops it in a worker thread (``asyncio.to_thread``) as an asyncio task
of the provider process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...chain.keeper import (
    ABORTED,
    ESCROW_ACCESS_TEMPLATE_ID,
    FULFILLED,
    UNFULFILLED,
    Keeper,
    to_address,
    translate_errors,
)
from ...exceptions import ChainError, OceanError
from ..did import id_to_did

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from ..ddo import DDO
    from ..metadata import MetadataStore

__all__ = ["AgreementInfo", "EventsHandler", "HandlerAction", "actor_type_names", "read_agreement"]

log = logging.getLogger(__name__)

#: The template actor types of an access agreement (setupContracts order).
ACTOR_TYPES: tuple[str, ...] = ("provider", "consumer")
_ZERO32 = bytes(32)


@dataclass(frozen=True)
class AgreementInfo:
    """An agreement as recorded by ``AgreementStoreManager`` (ocean.md §4.3)."""

    agreement_id: bytes
    did: bytes
    did_owner: str
    template_id: bytes
    condition_ids: tuple[bytes, ...]
    #: ``blockNumberUpdated``: set when the agreement is created (0.13 never updates it).
    block_number: int
    #: actor type name (``"provider"``, ``"consumer"``) -> checksum address.
    actors: dict[str, str] = field(default_factory=dict)

    @property
    def consumer(self) -> str | None:
        return self.actors.get("consumer")

    @property
    def provider(self) -> str | None:
        return self.actors.get("provider")


_type_names_lock = threading.Lock()
_type_names_cache: dict[tuple[int, str], dict[bytes, str]] = {}


def actor_type_names(keeper: Keeper) -> dict[bytes, str]:
    """Actor type id -> name for the template actor types, read once per keeper."""
    key = (id(keeper), keeper.address("TemplateStoreManager"))
    with _type_names_lock:
        cached = _type_names_cache.get(key)
    if cached is None:
        cached = {
            bytes(keeper.call("TemplateStoreManager", "getTemplateActorTypeId", name)): name for name in ACTOR_TYPES
        }
        with _type_names_lock:
            _type_names_cache[key] = cached
    return cached


def read_agreement(keeper: Keeper, agreement_id: bytes) -> AgreementInfo | None:
    """The agreement with its actors by type, or None if no such agreement exists on chain."""
    did, did_owner, template_id, condition_ids, _updated_by, block_number = keeper.call(
        "AgreementStoreManager", "getAgreement", agreement_id
    )
    if bytes(did) == _ZERO32:
        return None
    names = actor_type_names(keeper)
    actors: dict[str, str] = {}
    for actor in keeper.call("AgreementStoreManager", "getAgreementActors", agreement_id):
        type_id = bytes(keeper.call("AgreementStoreManager", "getActorType", agreement_id, actor))
        name = names.get(type_id)
        if name is not None and name not in actors:
            actors[name] = to_address(actor)
    return AgreementInfo(
        agreement_id=agreement_id, did=bytes(did), did_owner=to_address(did_owner), template_id=bytes(template_id),
        condition_ids=tuple(bytes(c) for c in condition_ids), block_number=int(block_number), actors=actors,
    )


@dataclass(frozen=True)
class HandlerAction:
    """One thing a pass did (or decided) about one agreement; ``action`` is one of
    ``granted``, ``aborted``, ``paid``, ``refunded``, ``settled``, ``ignored``, ``waiting``, ``failed``."""

    agreement_id: str
    action: str
    detail: str = ""


class EventsHandler:
    """Polls lock-reward events and settles this provider's agreements (see the module docstring).

    :param keeper: the keeper contracts (its transactions are signed with ``provider_account``).
    :param metadata: where the DDOs live (``resolve(did) -> DDO``).
    :param provider_account: the provider's eth-account ``LocalAccount``.
    :param poll_interval: seconds between passes in :meth:`run`.
    :param from_block: the first block whose lock events are read (0: rescan everything).
    :param max_attempts: passes on which a failing agreement is retried before it is given up
        (until the process restarts).
    """

    def __init__(
        self,
        keeper: Keeper,
        metadata: MetadataStore,
        provider_account: LocalAccount,
        poll_interval: float = 0.2,
        *,
        from_block: int = 0,
        max_attempts: int = 5,
    ) -> None:
        self.keeper = keeper
        self.metadata = metadata
        self.account = provider_account
        self.address = to_address(provider_account.address)
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self._next_block = from_block
        #: agreement id -> failed attempts so far; entries leave when the agreement is done.
        self._pending: dict[bytes, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        # run_once may be called from a test thread while the task also runs; one pass at a time.
        self._pass_lock = threading.Lock()

    @property
    def pending(self) -> list[str]:
        """Agreement ids (``0x`` hex) seen locked and not settled yet."""
        return ["0x" + a.hex() for a in self._pending]

    # -- one pass ----------------------------------------------------------------------------

    def run_once(self) -> list[HandlerAction]:
        """Read new lock events, then try to settle every pending agreement once; returns what was done."""
        with self._pass_lock:
            with translate_errors(self.keeper.w3, "chain", "eth_blockNumber"):
                latest = int(self.keeper.w3.eth.block_number)
            if latest >= self._next_block:
                for entry in self.keeper.events("LockRewardCondition", "Fulfilled", from_block=self._next_block):
                    self._pending.setdefault(bytes(entry["args"]["_agreementId"]), 0)
                # Logs mined after `latest` may already be in this batch; reading them again next
                # time is harmless because settling is idempotent.
                self._next_block = latest + 1
            actions: list[HandlerAction] = []
            for agreement_id in list(self._pending):
                actions.extend(self._settle_guarded(agreement_id))
            return actions

    def _settle_guarded(self, agreement_id: bytes) -> list[HandlerAction]:
        label = "0x" + agreement_id.hex()
        try:
            actions, done = self._settle(agreement_id)
        except Exception as exc:  # noqa: BLE001 - one agreement's failure must not stall the others
            attempts = self._pending.get(agreement_id, 0) + 1
            if attempts >= self.max_attempts:
                self._pending.pop(agreement_id, None)
                log.error("agreement %s: giving up after %d failed attempts: %s", label, attempts, exc)
            else:
                self._pending[agreement_id] = attempts
                log.warning("agreement %s: attempt %d failed, will retry: %s", label, attempts, exc)
            return [HandlerAction(label, "failed", str(exc))]
        if done:
            self._pending.pop(agreement_id, None)
        return actions

    def _ddo(self, did: bytes) -> DDO:
        return self.metadata.resolve(id_to_did(did))

    def _settle(self, agreement_id: bytes) -> tuple[list[HandlerAction], bool]:
        """Actions taken and whether the agreement needs no further pass."""
        label = "0x" + agreement_id.hex()
        keeper = self.keeper
        info = read_agreement(keeper, agreement_id)
        if info is None:
            return [HandlerAction(label, "ignored", "no such agreement")], True
        reason = self._not_served(info)
        if reason is not None or info.consumer is None:
            return [HandlerAction(label, "ignored", reason or "the agreement names no consumer")], True

        lock_id, access_id, escrow_id = info.condition_ids
        state = {
            cid: int(keeper.call("ConditionStoreManager", "getConditionState", cid)) for cid in info.condition_ids
        }
        if state[escrow_id] != UNFULFILLED:
            return [HandlerAction(label, "settled", f"escrow state {state[escrow_id]}")], True
        if state[lock_id] != FULFILLED:
            return [HandlerAction(label, "ignored", "the reward is not locked")], True

        try:
            ddo = self._ddo(info.did)
        except OceanError as exc:
            # The DDO may reach the metadata store after the agreement; try again next pass.
            return [HandlerAction(label, "waiting", f"DDO not available: {exc}")], False
        price = ddo.price
        receiver = self._payee(info, ddo, price)
        if receiver is None:
            log.warning("agreement %s: its conditions do not match the DDO's terms (price %d); not served",
                        label, price)
            return [HandlerAction(label, "ignored", "the agreement's conditions do not match the DDO's terms")], True

        actions: list[HandlerAction] = []
        if state[access_id] == UNFULFILLED:
            if keeper.call("ConditionStoreManager", "isConditionTimedOut", access_id):
                keeper.transact(self.account, "AccessSecretStoreCondition", "abortByTimeOut", access_id)
                state[access_id] = ABORTED
                actions.append(HandlerAction(label, "aborted", "access timed out"))
                log.info("agreement %s: access timed out, aborted", label)
            else:
                keeper.fulfill_access(self.account, agreement_id, info.did, info.consumer)
                state[access_id] = FULFILLED
                actions.append(HandlerAction(label, "granted", info.consumer))
                log.info("agreement %s: access granted to %s", label, info.consumer)
        if state[access_id] in (FULFILLED, ABORTED):
            keeper.fulfill_escrow(self.account, agreement_id, price, receiver, info.consumer, lock_id, access_id)
            paid = state[access_id] == FULFILLED
            actions.append(HandlerAction(label, "paid" if paid else "refunded", receiver if paid else info.consumer))
            log.info("agreement %s: escrow %s", label, "released to the publisher" if paid else "refunded")
        else:
            actions.append(HandlerAction(label, "ignored", f"access state {state[access_id]}"))
        return actions, True

    def _not_served(self, info: AgreementInfo) -> str | None:
        """Why this provider does not serve the agreement, or None if it does."""
        if info.template_id != ESCROW_ACCESS_TEMPLATE_ID or len(info.condition_ids) != 3:
            return "not an EscrowAccessSecretStoreTemplate agreement"
        if not self.keeper.is_did_provider(info.did, self.address):
            return "this provider is not a provider of the DID"
        if info.provider is not None and info.provider != self.address:
            return "another provider is the agreement's provider"
        return None

    def _payee(self, info: AgreementInfo, ddo: DDO, price: int) -> str | None:
        """The escrow receiver for which the recomputed condition ids match the chain, if any."""
        candidates = [info.did_owner]
        with contextlib.suppress(ChainError, OceanError, TypeError, ValueError):
            publisher = to_address(str(ddo.publisher))
            if publisher not in candidates:
                candidates.append(publisher)
        if info.consumer is None:
            raise OceanError(f"agreement 0x{info.agreement_id.hex()} names no consumer")
        for receiver in candidates:
            expected = self.keeper.agreement_condition_ids(info.agreement_id, info.did, info.consumer, receiver, price)
            if tuple(expected) == info.condition_ids:
                return receiver
        return None

    # -- as an asyncio task ------------------------------------------------------------------

    async def run(
        self, stop: asyncio.Event | None = None, *, on_pass: Callable[[list[HandlerAction]], Any] | None = None
    ) -> None:
        """Run passes every ``poll_interval`` seconds (each in a worker thread) until ``stop`` is set."""
        stop = stop or asyncio.Event()
        self._stop = stop
        while not stop.is_set():
            try:
                actions = await asyncio.to_thread(self.run_once)
                if on_pass is not None:
                    on_pass(actions)
            except (ChainError, OceanError) as exc:
                log.warning("events handler pass failed, retrying: %s", exc)
            except Exception as exc:  # noqa: BLE001 - the poller must outlive any one bad pass
                log.error("events handler pass failed unexpectedly (%s), retrying: %s", type(exc).__name__, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)

    def start(self) -> asyncio.Task[None]:
        """Start :meth:`run` as a task of the running loop."""
        if self._task is None or self._task.done():
            self._stop = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self.run(self._stop), name="ocean-events-handler")
        return self._task

    async def stop(self) -> None:
        """Stop the task started by :meth:`start` (after its current pass)."""
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # noqa: BLE001 - stopping must not fail on the task's last error
                log.warning("events handler stopped with %s: %s", type(exc).__name__, exc)
