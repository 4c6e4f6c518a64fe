"""The ``ocean-secret-store`` command line.

Exit codes: 0 success, 1 the operation failed (one readable line on stderr; ``--debug`` adds
the traceback), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .exceptions import SecretStoreError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _cmd_node(args: argparse.Namespace) -> int:
    from .node.app import serve
    from .node.config import load_config

    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = load_config(args.config)
    try:
        import uvloop  # libuv's event loop: about half the per-message overhead of asyncio's own
    except ImportError:  # pragma: no cover - uvloop is a dependency on the platforms it supports
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
    return EXIT_OK


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _cmd_devnet(args: argparse.Namespace) -> int:
    from . import devnet

    state_dir = Path(args.state_dir)
    say = (lambda _: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    if args.devnet_command == "up":
        state = devnet.up(state_dir, args.nodes, acl=args.acl, fresh=args.fresh, say=say)
        _print(args, state, f"devnet up: {len(state['nodes'])} key servers, secret_store_url {state['secret_store_url']}, "
                            f"state in {state_dir / devnet.STATE_FILE}")
    elif args.devnet_command == "down":
        stopped = devnet.down(state_dir)
        _print(args, {"stopped": stopped}, f"devnet down: stopped {len(stopped)} process(es)")
    else:
        report = devnet.status(state_dir)
        lines = [f"{'node':<5} {'pid':>8} {'running':<8} {'healthy':<8} {'peers':>5}  url"]
        for n in report["nodes"]:
            lines.append(f"{n['node']:<5} {n['pid'] or '-':>8} {str(n['running']):<8} {str(n['healthy']):<8} "
                         f"{n['connected_peers'] if n['connected_peers'] is not None else '-':>5}  {n['http_url']}")
        chain = report["chain"]
        lines.append(f"chain {chain['anvil_pid'] or '-':>8} {str(chain['running']):<8} {'':<8} {'':>5}  {chain['chain_url']}")
        _print(args, report, "\n".join(lines))
        return EXIT_OK if report["healthy"] else EXIT_FAILED
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return EXIT_OK if run_demo(nodes=args.nodes, threshold=args.threshold) else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocean-secret-store", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    node = sub.add_parser("node", help="run one key server")
    node.add_argument("--config", required=True, help="node TOML config (see ocean_secret_store/node/config.py)")
    node.set_defaults(func=_cmd_node)

    dev = sub.add_parser("devnet", help="the embedded local cluster")
    dev_sub = dev.add_subparsers(dest="devnet_command", required=True)
    for name, text in (("up", "start a devnet"), ("down", "stop it"), ("status", "report its processes")):
        cmd = dev_sub.add_parser(name, help=text)
        cmd.add_argument("--state-dir", default=".devnet", help="where keys, configs, logs and devnet.json live")
        if name == "up":
            cmd.add_argument("--nodes", type=int, default=5)
            cmd.add_argument("--acl", choices=("contract", "none"), default="contract",
                             help="key servers check AccessSecretStoreCondition on chain (default) or nobody")
            cmd.add_argument("--fresh", action="store_true", help="wipe a stopped devnet's state first")
    dev.set_defaults(func=_cmd_devnet)

    demo = sub.add_parser("demo", help="run the end-to-end demo")
    demo.add_argument("--nodes", type=int, default=5)
    demo.add_argument("--threshold", type=int, default=2)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (SecretStoreError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
