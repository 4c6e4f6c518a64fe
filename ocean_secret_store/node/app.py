"""Wiring and lifecycle of one key server process: config -> storage, access checker, transport,
cluster core and HTTP API; graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web

from ..exceptions import ConfigError
from ..lifecycle import bound_port, wait_for_stop_signal
from ..serving import GuardedAppRunner, guarded_site
from .acl import AccessChecker, AllowAll, ContractAccessChecker, StaticAllowList
from .audit import AuditLog
from .cluster import ClusterCore
from .config import AclConfig, NodeConfig
from .http_api import make_app
from .quotas import GenerationQuota
from .storage import SqliteKeyStorage
from .transport import Transport

log = logging.getLogger(__name__)

#: The audit log's file name inside the node's data directory.
AUDIT_FILE = "audit.jsonl"


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

    @property
    def http_port(self) -> int:
        return bound_port(self.runner)

    async def stop(self) -> None:
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
        audit=audit,
        max_sessions=config.quotas.max_sessions,
        require_bound=config.require_bound_signatures,
        keepalive=config.timeouts.keepalive,
        hedge_max=config.timeouts.hedge,
        min_ready_peers=config.min_ready_peers,
    )
    core_ref.append(core)
    await core.start()
    await transport.start()
    # Header-read timeout and per-address cap (config [http]): a slow-loris holds no socket for long.
    app = make_app(core, config.cors, GenerationQuota(config.quotas))  # [quotas]: 429 over a limit
    runner = GuardedAppRunner(app, config.serving, access_log=None, handle_signals=False)
    await runner.setup()
    ssl_context = config.tls.context("http") if config.tls is not None else None
    site = guarded_site(runner, config.http_listen.host, config.http_listen.port, reuse_address=True,
                        ssl_context=ssl_context)
    await site.start()
    return RunningNode(config, core, transport, runner, storage, audit)


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGTERM or SIGINT."""
    node = await start_node(config)
    log.info(
        "key server 0x%s.. listening: %s %s:%d, cluster %s", config.node_id.hex()[:16],
        "https" if config.tls is not None else "http", config.http_listen.host, node.http_port, config.listen,
    )
    await wait_for_stop_signal()
    log.info("stopping")
    await node.stop()
