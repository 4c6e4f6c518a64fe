"""The deployment commands of the command line: ``tools install-anvil`` (the devnet's chain for an
installed package) and ``cluster init`` (configs and keys for N key servers on N machines).

Registered on the main parser by :func:`add_deploy_commands`; each handler imports what it runs
(``cluster_init`` costs about 0.25 s of imports), so the options default to None and the help texts
spell out ``cluster_init``'s defaults (a test keeps them equal).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .cli_tools import UsageError, split_urls
from .exceptions import ConfigError
from .tools import ANVIL_ENV, ANVIL_PACKAGE, ANVIL_VERSION

__all__ = ["add_deploy_commands"]


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text, flush=True)


def _say(args: argparse.Namespace) -> Any:
    return (lambda _: None) if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))


def _cmd_install_anvil(args: argparse.Namespace) -> int:
    from .tools import install_anvil  # noqa: PLC0415 -- each command imports what it runs (fast --help)

    binary = install_anvil(args.version, force=args.force, say=_say(args))
    _print(args, {"anvil": str(binary), "version": args.version}, str(binary))
    return 0


def _acl(args: argparse.Namespace) -> dict[str, Any]:
    if args.acl == "none":
        if args.chain_url or args.acl_contract:
            raise UsageError("--chain-url/--acl-contract are for --acl contract")
        return {"kind": "none"}
    if not args.chain_url or not args.acl_contract:
        raise UsageError("--acl contract (the default) needs --chain-url URL and --acl-contract 0x<address of "
                         "AccessSecretStoreCondition>; --acl none lets every requester in (tests and demos only)")
    return {"kind": "contract", "chain_url": args.chain_url, "contract": args.acl_contract}


def _cmd_cluster_init(args: argparse.Namespace) -> int:
    from . import cluster_init  # noqa: PLC0415 -- each command imports what it runs (fast --help)

    entries = split_urls(args.hosts)
    if args.nodes is not None and args.nodes != len(entries):
        raise UsageError(f"--nodes {args.nodes} but --hosts names {len(entries)} host(s): one host per node")
    ports = {name: value for name in ("http_port", "cluster_port") if (value := getattr(args, name)) is not None}
    try:
        hosts = cluster_init.parse_hosts(entries, **ports)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    given = {name: value for name in ("password_env", "admin_password_env", "tls_days", "image")
             if (value := getattr(args, name)) is not None}  # unset options keep cluster_init's defaults
    plan = cluster_init.init_cluster(Path(args.out), hosts, args.threshold_max, tls=args.tls, bind=args.bind,
                                     acl=_acl(args), kdf=args.kdf, say=_say(args), **given)
    _print(args, {**plan.to_json(), "out": str(plan.out)},
           f"cluster init: {len(plan.nodes)} key servers in {plan.out}; read {plan.out / 'README.txt'}")
    return 0


def add_deploy_commands(sub: Any) -> None:
    """Add ``tools`` and ``cluster`` to the main parser's subcommands."""
    tools = sub.add_parser("tools", help="install the external tools the devnet runs (anvil)")
    tools_sub = tools.add_subparsers(dest="tools_command", required=True)
    install = tools_sub.add_parser(
        "install-anvil", help=f"install {ANVIL_PACKAGE} with npm into the user cache",
        description=f"Install {ANVIL_PACKAGE} (npm) into ~/.cache/ocean-secret-store/anvil/VERSION, where "
        f"`devnet up` finds it. anvil is looked for in ${ANVIL_ENV}, a checkout's tools/node_modules, this "
        "cache, then PATH.")
    install.add_argument("--version", default=ANVIL_VERSION, help=f"the npm package version (default {ANVIL_VERSION})")
    install.add_argument("--force", action="store_true", help="reinstall over an existing install")
    install.set_defaults(func=_cmd_install_anvil)

    cluster = sub.add_parser("cluster", help="deploy key servers on several machines")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    init = cluster_sub.add_parser(
        "init", help="generate keys, configs and compose files for N key servers on N hosts",
        description="Generate, in a new folder OUT, one folder per key server (keystore, node.toml with every "
        "peer's address, compose.yaml, TLS certificate with --tls), the administrator key, cluster.json and a "
        "README.txt saying which folder goes to which machine. Keystore passwords come from the environment "
        "and are written nowhere.")
    init.add_argument("--hosts", action="append", required=True, metavar="HOST,HOST,...",
                      help="one host per node (DNS name or IP), comma-separated or repeated; HOST:HTTP_PORT:"
                      "CLUSTER_PORT gives a node its own ports (IPv6 in brackets then)")
    init.add_argument("--nodes", type=int, help="the number of nodes (checked against --hosts)")
    init.add_argument("--threshold-max", type=int, required=True, metavar="T",
                      help="the highest key threshold served: any T+1 nodes serve a key; a node reports ready "
                      "once it reaches T peers")
    init.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder for everything")
    init.add_argument("--http-port", type=int, help="the key servers' HTTP API port (default 8082, Parity's)")
    init.add_argument("--cluster-port", type=int, help="the node-to-node port (default 8083, Parity's)")
    init.add_argument("--bind", default="0.0.0.0", metavar="ADDRESS",
                      help="the address the nodes listen on (default 0.0.0.0: every interface)")
    init.add_argument("--tls", action="store_true",
                      help="https: a CA (OUT/ca) and a certificate per node naming its host and container")
    init.add_argument("--tls-days", type=int, help="validity of the CA and certificates (default 365)")
    init.add_argument("--password-env", metavar="VAR",
                      help="environment variable holding the node keystores' password; {i} in it gives each "
                      "node its own, e.g. NODE{i}_PASSWORD (default OCEAN_SS_NODE_PASSWORD)")
    init.add_argument("--admin-password-env", metavar="VAR",
                      help="environment variable holding the admin keystore's password (default "
                      "OCEAN_SS_ADMIN_PASSWORD)")
    init.add_argument("--kdf", choices=("scrypt", "pbkdf2"), default="scrypt",
                      help="keystore KDF: scrypt (default, about 0.7 s per unlock) or Parity's light pbkdf2 "
                      "(10,240 rounds: test clusters)")
    init.add_argument("--acl", choices=("contract", "none"), default="contract",
                      help="key servers check AccessSecretStoreCondition on chain (default) or let everyone in")
    init.add_argument("--chain-url", metavar="URL", help="Ethereum JSON-RPC URL, for --acl contract")
    init.add_argument("--acl-contract", metavar="0x..", help="AccessSecretStoreCondition's address, for --acl contract")
    init.add_argument("--image", help="the image the compose files run (default ocean-secret-store:latest; "
                      "$OCEAN_SS_IMAGE overrides it when compose runs)")
    init.set_defaults(func=_cmd_cluster_init)
