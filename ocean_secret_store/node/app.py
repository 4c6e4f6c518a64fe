"""Wiring and lifecycle of one key server process: config -> storage, access checker, transport,
cluster core and HTTP API; graceful stop on SIGTERM/SIGINT; SIGHUP reloads the ``[cluster]``
address book from the config file (:meth:`RunningNode.reload`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from aiohttp import web

from ..crypto.hashes import address_of
from ..exceptions import ConfigError
from ..lifecycle import bound_port, on_reload_signal, wait_for_stop_signal
from ..metrics import CountingAudit, NodeMetrics, service_registry
from ..protocol.addresses import HostPort
from ..serving import GuardedAppRunner, guarded_site
from .acl import AccessChecker, AllowAll, ContractAccessChecker, StaticAllowList
from .audit import AuditLog
from .channel import short_id
from .cluster import ClusterCore
from .config import AclConfig, NodeConfig, load_config
from .http_api import make_app
from .quotas import GenerationQuota
from .storage import MIGRATION_STEP, SqliteKeyStorage
from .transport import Transport

log = logging.getLogger(__name__)

#: The audit log's file name inside the node's data directory.
AUDIT_FILE = "audit.jsonl"
#: The background migration of schema <= 5 records: records a step (one transaction under the
#: storage lock), and the least pause after a step; the pause is at least as long as the step took,
#: so that the migration takes at most half of the storage's time and retrievals wait one step at most.
MIGRATION_PAUSE = 0.005
#: After a step that failed (a disk error): the next try.
MIGRATION_RETRY = 30.0


def build_access_checker(config: AclConfig) -> AccessChecker:
    if config.kind == "none":
        log.warning("access checks are disabled (acl kind = none): every requester is allowed")
        return AllowAll()
    if config.kind == "allow_list":
        return StaticAllowList(config.allowed, config.keys)
    if config.kind == "contract":
        if config.chain_url is None or config.contract is None:
            raise ConfigError("acl: the contract checker needs chain_url and contract", key="acl")
        return ContractAccessChecker(config.chain_url, config.contract)
    raise ConfigError(f"acl.kind: unknown checker {config.kind!r}", key="acl.kind")


@dataclass
class RunningNode:
    config: NodeConfig
    core: ClusterCore
    transport: Transport
    runner: web.AppRunner
    storage: SqliteKeyStorage
    audit: AuditLog
    #: The background migration of the records to schema 6 (None: nothing to migrate at start).
    migration: asyncio.Task[None] | None = None

    @property
    def http_port(self) -> int:
        return bound_port(self.runner)

    def reload(self, config: NodeConfig) -> list[str]:
        """Apply ``config``'s ``[cluster]`` address book to the running node's connections: new
        peers are connected, removed ones disconnected and refused, moved ones re-dialed
        (:meth:`Transport.set_peers`). Nothing else is applied: the result is one note per other
        section that differs from the running config (it needs a restart). The servers set (who
        holds keys) is not the address book: it changes only by an admin session (docs/operators.md).

        :raises ConfigError: ``config`` has another node secret (nothing is applied then).
        """
        if config.node_secret != self.config.node_secret:
            raise ConfigError(
                f"node.secret: the new config is another node's (0x{config.node_id.hex()[:16]}..), not this "
                f"node's (0x{self.config.node_id.hex()[:16]}..); a running node cannot change its key",
                key="node.secret")
        notes = restart_notes(self.config, config)
        self.transport.set_peers({node: (hp.host, hp.port) for node, hp in config.peers.items()})
        self.config = replace(self.config, cluster=config.cluster)
        return notes

    async def stop(self) -> None:
        if self.migration is not None:  # between two steps, or after the one running now
            self.migration.cancel()
            await asyncio.gather(self.migration, return_exceptions=True)
        await self.runner.cleanup()
        await self.transport.stop()
        await self.core.stop()
        await self.core.acl.close()
        await asyncio.to_thread(self.storage.close)
        self.audit.close()


async def start_node(config: NodeConfig) -> RunningNode:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    storage = SqliteKeyStorage(config.storage_path, config.node_secret)
    acl = build_access_checker(config.acl)
    audit = AuditLog(config.data_dir / AUDIT_FILE, config.address, max_bytes=config.audit.max_bytes,
                     backups=config.audit.backups)
    metrics = NodeMetrics(service_registry())  # this node's own registry: GET /metrics
    core_ref: list[ClusterCore] = []

    async def on_message(peer: bytes, payload: bytes) -> None:
        await core_ref[0].on_message(peer, payload)

    async def on_disconnected(peer: bytes) -> None:
        core_ref[0].on_peer_disconnected(peer)

    transport = Transport(
        config.node_secret,
        listen=(config.listen.host, config.listen.port),
        peers={node: (hp.host, hp.port) for node, hp in config.peers.items()},
        on_message=on_message,
        on_disconnected=on_disconnected,
        keepalive_interval=config.timeouts.keepalive,
        connect_timeout=config.timeouts.connect,
    )
    core = ClusterCore(
        node_secret=config.node_secret,
        nodes=config.cluster.keys(),
        net=transport,
        storage=storage,
        acl=acl,
        session_timeout=config.timeouts.session,
        audit=CountingAudit(audit, metrics),
        max_sessions=config.quotas.max_sessions,
        require_bound=config.require_bound_signatures,
        keepalive=config.timeouts.keepalive,
        hedge_max=config.timeouts.hedge,
        min_ready_peers=config.min_ready_peers,
        admin_public=config.admin_public,
        metrics=metrics,
    )
    core_ref.append(core)
    await core.start()
    await transport.start()
    # Header-read timeout and per-address cap (config [http]): a slow-loris holds no socket for long.
    admin = None if config.admin_public is None else address_of(config.admin_public)
    app = make_app(core, config.cors, GenerationQuota(config.quotas, admin=admin))  # [quotas]: 429 over a limit
    runner = GuardedAppRunner(app, config.serving, access_log=None, handle_signals=False)
    await runner.setup()
    ssl_context = config.tls.context("http") if config.tls is not None else None
    site = guarded_site(runner, config.http_listen.host, config.http_listen.port, reuse_address=True,
                        ssl_context=ssl_context)
    await site.start()
    metrics.records_to_migrate.set(0)
    migration = None
    if storage.migrating:  # a schema <= 5 database: its records converted while the node serves
        migration = asyncio.get_running_loop().create_task(migrate_records(storage, metrics), name="migration")
    return RunningNode(config, core, transport, runner, storage, audit, migration)


async def migrate_records(storage: SqliteKeyStorage, metrics: NodeMetrics, step: int = MIGRATION_STEP,
                          pause: float = MIGRATION_PAUSE) -> None:
    """Run :meth:`SqliteKeyStorage.migrate_step` until it is done, each step in a thread (the lock
    is held per step only), pausing after each at least as long as it took; the
    ``records_to_migrate`` gauge follows. A step that fails (the disk) is tried again later: the
    records read in either format meanwhile."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            done = await asyncio.to_thread(storage.migrate_step, step)
        except Exception as exc:  # noqa: BLE001 -- the node serves on; the step is repeated later
            log.error("the background conversion of the records failed (%s: %s); trying again in %.0f s",
                      type(exc).__name__, exc, MIGRATION_RETRY)
            await asyncio.sleep(MIGRATION_RETRY)
            continue
        metrics.records_to_migrate.set(done.remaining)
        if done.done:
            return
        await asyncio.sleep(max(pause, loop.time() - started))


def restart_notes(running: NodeConfig, new: NodeConfig) -> list[str]:
    """One line per config section other than ``[cluster]`` in which ``new`` differs from
    ``running``, naming the settings (never their values: ``[node]`` holds the secret)."""
    before, after = running.to_mapping(), new.to_mapping()
    notes = []
    for section in sorted((before.keys() | after.keys()) - {"cluster"}):
        old, now = before.get(section, {}), after.get(section, {})
        changed = sorted(key for key in old.keys() | now.keys() if old.get(key) != now.get(key))
        if changed:
            notes.append(f"[{section}] {', '.join(changed)} changed: not applied (needs a restart)")
    return notes


def describe_peer_changes(before: Mapping[bytes, HostPort], after: Mapping[bytes, HostPort]) -> str:
    """The difference of two address books for a log line: short ids (and new addresses) only."""
    parts = []
    added = [node for node in after if node not in before]
    removed = [node for node in before if node not in after]
    moved = [node for node in after if node in before and after[node] != before[node]]
    if added:
        parts.append("peers added " + ", ".join(f"{short_id(n)} ({after[n]})" for n in added))
    if removed:
        parts.append("peers removed " + ", ".join(short_id(n) for n in removed))
    if moved:
        parts.append("peers moved " + ", ".join(f"{short_id(n)} to {after[n]}" for n in moved))
    return "; ".join(parts) or "peers unchanged"


async def reload_from_file(node: RunningNode, path: Path) -> bool:
    """Load ``path`` and apply it (:meth:`RunningNode.reload`), logging the outcome; never raises.

    False when the file does not load or is refused: the node then runs on unchanged.
    """
    try:
        # A keystore unlock may take a second (scrypt): not on the event loop.
        config = await asyncio.to_thread(load_config, path)
        before = node.config.peers
        notes = node.reload(config)
    except ConfigError as exc:
        log.error("reload of %s refused, the node runs on unchanged: %s", path, exc)
        return False
    except Exception:
        log.exception("reload of %s failed, the node runs on unchanged", path)
        return False
    log.info("reloaded %s: %s", path, describe_peer_changes(before, config.peers))
    for note in notes:
        log.warning("reload of %s: %s", path, note)
    return True


async def serve(config: NodeConfig, config_path: Path | str | None = None) -> None:
    """Run a node until SIGTERM or SIGINT; with ``config_path`` (the file ``config`` came from),
    SIGHUP reloads that file's ``[cluster]`` address book (:func:`reload_from_file`)."""
    node = await start_node(config)
    log.info(
        "key server 0x%s.. listening: %s %s:%d, cluster %s", config.node_id.hex()[:16],
        "https" if config.tls is not None else "http", config.http_listen.host, node.http_port, config.listen,
    )
    reloads: set[asyncio.Task[bool]] = set()
    remove_handler = None
    if config_path is not None:
        path = Path(config_path).resolve()
        lock = asyncio.Lock()  # one reload at a time, in the order the signals came

        async def reload() -> bool:
            async with lock:
                log.info("SIGHUP: reloading %s", path)
                return await reload_from_file(node, path)

        def on_sighup() -> None:
            task = asyncio.get_running_loop().create_task(reload(), name="reload")
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        remove_handler = on_reload_signal(on_sighup)
    await wait_for_stop_signal()
    log.info("stopping")
    if remove_handler is not None:
        remove_handler()
    for task in list(reloads):
        task.cancel()
    await asyncio.gather(*reloads, return_exceptions=True)
    await node.stop()
