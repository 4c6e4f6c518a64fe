"""The ``stack`` commands of the command line: ``stack init`` (the whole devnet as a Docker compose
project), ``stack deploy`` (the project's one-shot contract deployment, run in its ``deploy``
container), ``stack status`` (its health through the published ports) and ``stack replace-node``
(a key server replaced by a new container through a servers-set change).

Registered on the main parser by :func:`add_stack_commands`; each handler imports what it runs, so
``--help`` stays fast, and the help texts spell out ``stack``'s defaults.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from .cli_tools import AdminProgress, UsageError, admin_summary, load_account

__all__ = ["add_stack_commands"]

#: As stack.DEPLOYER_KEY_ENV (kept equal by a test; the module is not imported for --help).
DEPLOYER_KEY_ENV = "OCEAN_SS_DEPLOYER_KEY"


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text, flush=True)


def _say(args: argparse.Namespace) -> Any:
    return (lambda _: None) if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))


def _ports(entries: list[str] | None) -> dict[str, int]:
    ports: dict[str, int] = {}
    for entry in entries or ():
        service, sep, port = entry.partition("=")
        if not sep or not port.isdigit():
            raise UsageError(f"--port {entry!r}: expected SERVICE=PORT, e.g. node0=18082")
        ports[service.strip()] = int(port)
    return ports


def _cmd_init(args: argparse.Namespace) -> int:
    from .exceptions import ConfigError  # noqa: PLC0415 -- each command imports what it runs (fast --help)
    from .stack import init_stack  # noqa: PLC0415 -- as above

    given = {name: value for name in ("threshold_max", "image", "project")
             if (value := getattr(args, name)) is not None}  # unset options keep stack's defaults
    try:
        plan = init_stack(Path(args.out), nodes=args.nodes, ports=_ports(args.port), say=_say(args), **given)
    except ConfigError as exc:
        if exc.key in ("ports", "project", "nodes", "threshold_max"):
            raise UsageError(str(exc)) from None
        raise
    up = shlex.join(plan.up_command())
    state = plan.state
    lines = [
        (f"stack init: {len(state.nodes)} key servers (threshold_max {state.threshold_max}), chain, deploy, rpc, "
         f"provider, aquarius and files in {plan.out}"),
        f"  {plan.compose_file}   the services",
        f"  {plan.env_file}           ports, image, dev passwords and keys (mode 0600)",
        f"  {state.path}    for host clients (devnet.json), with {state.ocean_config}",
        f"  {plan.cluster.out}     the key servers' keys, configs and data (cluster init)",
        "bring it up:",
        f"  {up}",
        "and see it:",
        f"  ocean-secret-store stack status --stack-dir {shlex.quote(str(plan.out))}",
    ]
    data = {"out": str(plan.out), "project": plan.project, "compose_file": str(plan.compose_file),
            "env_file": str(plan.env_file), "devnet_json": str(state.path), "ports": dict(plan.ports),
            "up": plan.up_command()}
    _print(args, data, "\n".join(lines))
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from .stack import deploy_stack  # noqa: PLC0415 -- each command imports what it runs (fast --help)

    if args.timeout <= 0:
        raise UsageError("--timeout must be > 0 seconds")
    deployer = load_account(args.key_env, None, None)
    result = deploy_stack(args.chain_url, Path(args.stack_dir), deployer, timeout=args.timeout, say=_say(args))
    done = "deployed" if result["deployed"] else "already deployed"
    _print(args, result, f"stack deploy: keeper contracts {done} at {args.chain_url} ({result['seconds']:.1f} s)")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from .stack import stack_status  # noqa: PLC0415 -- each command imports what it runs (fast --help)

    report = stack_status(Path(args.stack_dir))
    lines = [f"stack in {report['state_dir']}: {'healthy' if report['healthy'] else 'NOT healthy'}"]
    for node in report["nodes"]:
        state = "ready" if node["ready"] else ("answers, not ready" if node["answers"] else "no answer")
        lines.append(f"  node{node['node']}  {node['http_url']}  {state} (usable peers {node['usable_peers']})")
    for name, service in report["services"].items():
        lines.append(f"  {name:<8} {service['url']}  {'answers' if service['answers'] else 'no answer'}")
    _print(args, report, "\n".join(lines))
    return 0 if report["healthy"] else 1


def _cmd_replace_node(args: argparse.Namespace) -> int:
    from .exceptions import ConfigError  # noqa: PLC0415 -- each command imports what it runs (fast --help)
    from .stack import replace_node  # noqa: PLC0415 -- as above

    if args.timeout <= 0:
        raise UsageError("--timeout must be > 0 seconds")
    progress = AdminProgress("servers-set change")
    try:
        result = replace_node(Path(args.stack_dir), args.index, project=args.project, force=args.force,
                              timeout=args.timeout, on_progress=progress, say=_say(args))
        if progress.drawn:
            progress({"progress": result["report"]})  # the bar ends where the session did
    except ConfigError as exc:
        if exc.key == "index":
            raise UsageError(str(exc)) from None
        raise
    finally:
        progress.finish()
    old = result["replaced"]
    text = (f"replaced node {args.index} ({old['service']}, {old['public'][:18]}..) by {result['service']}: "
            f"{result['public']} at {result['http_url']}; servers-set change {admin_summary(result['report'])} "
            f"({result['seconds']:.1f} s)")
    _print(args, result, text)
    return 0


def add_stack_commands(sub: Any) -> None:
    """Add ``stack`` to the main parser's subcommands."""
    stack = sub.add_parser("stack", help="the whole devnet as a Docker compose project")
    stack_sub = stack.add_subparsers(dest="stack_command", required=True)
    init = stack_sub.add_parser(
        "init", help="write a compose project of the whole devnet (runs cluster init for its key servers)",
        description="Write, in a new folder OUT, compose.yaml (chain, contract deployment, N key servers, the "
        "JSON-RPC face, the provider, Aquarius and the file server, each its own container), .env (published "
        "ports on 127.0.0.1, image, dev passwords and keys; mode 0600), the key servers' folders (cluster init, "
        "in OUT/cluster) and devnet.json, ocean.ini and config.ini for host clients, as `devnet up` writes them. "
        "It prints the docker-compose command that brings the stack up.")
    init.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder for everything")
    init.add_argument("--nodes", type=int, default=5, help="the number of key servers (default 5)")
    init.add_argument("--threshold-max", type=int, metavar="T",
                      help="the highest key threshold served (default nodes - 1): a node is healthy once it "
                      "reaches T peers")
    init.add_argument("--image", help="the image every service runs (default ocean-secret-store:latest; in .env "
                      "as OCEAN_SS_IMAGE, which the shell's variable overrides when compose runs)")
    init.add_argument("--project", metavar="NAME",
                      help="the compose project name written into .env (default: the folder's name)")
    init.add_argument("--port", action="append", metavar="SERVICE=PORT",
                      help="publish SERVICE (chain, node0.., rpc, provider, aquarius, files) on this port of "
                      "127.0.0.1 (repeatable; default: free ports)")
    init.set_defaults(func=_cmd_init)

    deploy = stack_sub.add_parser(
        "deploy", help="deploy the keeper contracts where the stack's plan says (its deploy container runs this)",
        description="Wait for the chain, then deploy keeper-contracts 0.13.2 at the addresses of STACK_DIR/"
        "stack.json unless they are there already (exit 0 at once then); a partial deployment is an error. The "
        f"deployer's private key comes from the environment (--key-env, default {DEPLOYER_KEY_ENV}).")
    deploy.add_argument("--chain-url", required=True, metavar="URL", help="the chain's JSON-RPC URL")
    deploy.add_argument("--stack-dir", required=True, metavar="DIR",
                        help="the folder with stack.json (a stack's stack/ folder, /stack in its containers)")
    deploy.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                        help="how long to wait for the chain (default 120)")
    deploy.add_argument("--key-env", default=DEPLOYER_KEY_ENV, metavar="VAR",
                        help=f"environment variable holding the deployer's private key (default {DEPLOYER_KEY_ENV})")
    deploy.set_defaults(func=_cmd_deploy)

    status = stack_sub.add_parser(
        "status", help="the stack's health through its published ports (exit 1 unless healthy)",
        description="Each key server's readiness and whether each service answers, through the ports the "
        "stack's devnet.json names.")
    status.add_argument("--stack-dir", required=True, metavar="DIR", help="the folder stack init wrote")
    status.set_defaults(func=_cmd_status)

    replace = stack_sub.add_parser(
        "replace-node", help="replace key server N by a new container in one servers-set change",
        description="Make a new key server (DIR/cluster/node<k>, host keyserver<k>, a free published port), list "
        "it in every node's [cluster] (SIGHUP), start its container, wait until it is connected to every running "
        "node, then change the servers set to (set - node N + new node) through another node, signed with "
        "accounts.admin of devnet.json; then stop and remove node N's container, unlist it (SIGHUP) and update "
        "compose.yaml, .env, devnet.json (the new node takes place N), ocean.ini, config.ini and "
        "stack/provider.ini, and SIGHUP the provider, which rereads its key server list. Node N may be dead; "
        "every other node must answer.")
    replace.add_argument("index", type=int, metavar="N", help="the node's index in devnet.json's nodes")
    replace.add_argument("--stack-dir", required=True, metavar="DIR", help="the folder stack init wrote")
    replace.add_argument("--project", metavar="NAME",
                         help="the compose project the stack runs as (default: .env's COMPOSE_PROJECT_NAME)")
    replace.add_argument("--force", action="store_true",
                         help="go on although some keys cannot keep t+1 shares (they are reported and left)")
    replace.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                         help="how long to wait for the new node to connect to every running node (default 120)")
    replace.set_defaults(func=_cmd_replace_node)
