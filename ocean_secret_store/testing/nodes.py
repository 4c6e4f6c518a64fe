"""Key servers started inside the test process: ``count`` real nodes (their HTTP API and node-to-node
listeners on loopback) on one :class:`~.servers.ServerThread` loop, connected to each other."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..crypto.curve import Point, random_scalar
from ..node.app import RunningNode, start_node
from ..node.config import NodeConfig
from .servers import LOOPBACK, ServerThread, free_port

__all__ = ["in_process_cluster"]


@contextlib.contextmanager
def in_process_cluster(root: Path, count: int, settings: Callable[[int], Mapping[str, Mapping[str, Any]]],
                       *, timeout: float = 20.0) -> Iterator[tuple[ServerThread, list[RunningNode]]]:
    """Start ``count`` nodes, each with a fresh key, a node-to-node port and a free HTTP port on
    127.0.0.1 and its data in ``root/node<i>``, every one in each other's ``[cluster]``; yield the loop
    and the nodes once all are connected, and stop them however the block ends.

    ``settings(i)`` gives node i's other config sections (``acl`` is required by the parser), merged
    over ``[node]`` and ``[cluster]`` section by section.
    """
    secrets = [random_scalar() for _ in range(count)]
    ports = [free_port() for _ in range(count)]
    cluster = {"0x" + Point.generator_mul(s).to_bytes().hex(): f"{LOOPBACK}:{p}"
               for s, p in zip(secrets, ports, strict=True)}
    server = ServerThread(timeout=timeout + 10)
    nodes: list[RunningNode] = []
    try:
        for index, (secret, port) in enumerate(zip(secrets, ports, strict=True)):
            mapping: dict[str, Any] = {
                "node": {"secret": f"0x{secret:064x}", "listen": f"{LOOPBACK}:{port}",
                         "http_listen": f"{LOOPBACK}:0", "data_dir": f"node{index}"},
                "cluster": cluster,
            }
            for section, values in settings(index).items():
                mapping[section] = {**mapping.get(section, {}), **values}
            nodes.append(server.run(start_node(NodeConfig.from_mapping(mapping, root))))
        for node in nodes:
            if not server.run(node.transport.wait_connected(timeout=timeout)):
                raise TimeoutError(f"the {count} in-process nodes did not connect within {timeout:.0f} s")
        yield server, nodes
    finally:
        for node in nodes:
            server.run(node.stop())
        server.close()
