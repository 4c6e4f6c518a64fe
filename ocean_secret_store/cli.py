"""The ``ocean-secret-store`` command line.

Exit codes: 0 success, 1 the operation failed (one readable line on stderr; ``--debug`` adds
the traceback), 2 bad usage, 130 interrupted. ``--json`` (before the command) prints results as
JSON. Private keys come from a keystore file or an environment variable, never from an argument.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .cli_tools import UsageError
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
        state = devnet.up(state_dir, args.nodes, acl=args.acl, provider_backend=args.provider_backend,
                          fresh=args.fresh, say=say)
        # The state file holds dev keys and passwords (mode 0600): stdout gets everything else.
        public = {k: v for k, v in state.items() if k not in ("accounts", "rpc_accounts")}
        public["accounts"] = {role: a["address"] for role, a in state.get("accounts", {}).items()}
        public["state_file"] = str(state_dir.resolve() / devnet.STATE_FILE)
        _print(args, public, f"devnet up: {len(state['nodes'])} key servers, secret_store_url "
                             f"{state['secret_store_url']}, state in {state_dir / devnet.STATE_FILE}")
    elif args.devnet_command == "down":
        stopped = devnet.down(state_dir)
        _print(args, {"stopped": stopped}, f"devnet down: stopped {len(stopped)} process(es)")
    else:
        report = devnet.status(state_dir)
        lines = [f"{'node':<5} {'pid':>8} {'running':<8} {'healthy':<8} {'peers':>5}  url"]
        for n in report["nodes"]:
            lines.append(f"{n['node']:<5} {n['pid'] or '-':>8} {str(n['running']):<8} {str(n['healthy']):<8} "
                         f"{n['connected_peers'] if n['connected_peers'] is not None else '-':>5}  {n['http_url']}")
        for name, service in report["services"].items():
            lines.append(f"{name:<9}{service['pid'] or '-':>4} {str(service['running']):<8} {'':<8} {'':>5}  "
                         f"{service['url']}")
        _print(args, report, "\n".join(lines))
        return EXIT_OK if report["healthy"] else EXIT_FAILED
    return EXIT_OK


def _account(args: argparse.Namespace) -> Any:
    from .cli_tools import load_account

    return load_account(args.key_env, args.keystore, args.password_env)


def _cmd_keys(args: argparse.Namespace) -> int:
    from .cli_tools import UsageError
    from .crypto.curve import Point, random_scalar
    from .crypto.hashes import address_of, checksum_address

    if args.keys_command == "generate":
        secret = random_scalar()
        if args.keystore_out:
            from .client.keystore import write_keystore

            if not args.password_env or args.password_env not in os.environ:
                raise UsageError("--keystore-out needs --password-env naming the variable with the password")
            out = write_keystore(Path(args.keystore_out), secret.to_bytes(32, "big"), os.environ[args.password_env])
        elif args.out:
            out = Path(args.out)
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("0x" + secret.to_bytes(32, "big").hex() + "\n")
        else:
            raise UsageError("say where the new key goes: --out FILE (hex, mode 0600) or --keystore-out DIR")
        public = Point.generator_mul(secret)
    else:
        account = _account(args)
        public = Point.from_sec1(_public_of(account))
        out = None
    info = {"public": "0x" + public.to_bytes().hex(), "address": checksum_address(address_of(public))}
    if out is not None:
        info["written"] = str(out)
    _print(args, info, "\n".join(f"{k}: {v}" for k, v in info.items()))
    return EXIT_OK


def _public_of(account: Any) -> bytes:
    from coincurve import PrivateKey

    return PrivateKey(bytes(account.key)).public_key.format(compressed=False)


def _cmd_encrypt(args: argparse.Namespace) -> int:
    from .cli_tools import CountingReader, Progress, cluster_urls, key_id_from, open_in, open_out
    from .client.client import SecretStoreClient
    from .crypto import document

    key_id = key_id_from(args.key_id, args.did)
    client = SecretStoreClient(cluster_urls(args.url, args.devnet), _account(args))
    if args.reuse:
        document_key = client.recover_document_key(key_id)
    else:
        server_public = client.generate_server_key(key_id, args.threshold)
        document_key, common, encrypted = document.generate_document_key(server_public)
        client.store_document_key(key_id, common, encrypted)
    src, dst = open_in(args.input), open_out(args.output)
    size = os.fstat(src.fileno()).st_size if args.input not in (None, "-") else None
    progress = Progress(size, "encrypting", args.progress)
    try:
        written = document.encrypt_stream(document_key, CountingReader(src, progress), dst)  # type: ignore[arg-type]
    finally:
        progress.finish()
        for f in (src, dst):
            if f not in (sys.stdin.buffer, sys.stdout.buffer):
                f.close()
    if args.output not in (None, "-") or args.json:
        _print(args, {"key_id": "0x" + key_id.hex(), "bytes_written": written, "threshold": args.threshold,
                      "new_key": not args.reuse}, f"encrypted {written - 16} bytes under key 0x{key_id.hex()}")
    return EXIT_OK


def _cmd_decrypt(args: argparse.Namespace) -> int:
    import tempfile

    from .cli_tools import Progress, cluster_urls, key_id_from, open_in, open_out
    from .client.client import SecretStoreClient
    from .crypto import document

    key_id = key_id_from(args.key_id, args.did)
    client = SecretStoreClient(cluster_urls(args.url, args.devnet), _account(args))
    document_key = client.recover_document_key(key_id)
    src = open_in(args.input)
    if not src.seekable():  # the IV is at the end: spool a pipe first
        spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)
        while chunk := src.read(1 << 20):
            spool.write(chunk)
        spool.seek(0)
        src = spool  # type: ignore[assignment]
    dst = open_out(args.output)
    progress = Progress(None, "decrypting", args.progress)
    try:
        written = document.decrypt_stream(document_key, src, dst)
        progress(written)
    finally:
        progress.finish()
        for f in (src, dst):
            if f not in (sys.stdin.buffer, sys.stdout.buffer):
                f.close()
    if args.output not in (None, "-") or args.json:
        _print(args, {"key_id": "0x" + key_id.hex(), "bytes_written": written},
               f"decrypted {written} bytes with key 0x{key_id.hex()}")
    return EXIT_OK


def _ocean(args: argparse.Namespace) -> Any:
    from .ocean.host import Ocean

    config = args.config or str(Path(args.devnet or ".devnet") / "ocean.ini")
    return Ocean(config)


def _cmd_publish(args: argparse.Namespace) -> int:
    ocean = _ocean(args)
    metadata = json.loads(Path(args.metadata).read_text())
    ddo = ocean.assets.create(metadata, _account(args), providers=args.provider or None, threshold=args.threshold)
    _print(args, ddo.as_dict(), f"published {ddo.did}")
    return EXIT_OK


def _cmd_consume(args: argparse.Namespace) -> int:
    from .cli_tools import UsageError

    ocean = _ocean(args)
    account = _account(args)
    agreement = args.agreement_id
    if agreement is None:
        if not args.order:
            raise UsageError("give --agreement-id of an existing agreement, or --order to order the asset first")
        agreement = ocean.assets.order(args.did, 2, account)
        if not args.json:
            print(f"ordered: agreement {agreement}", file=sys.stderr)
    folder = ocean.assets.consume(agreement, args.did, 2, account, args.dest, args.index, direct=args.direct)
    files = sorted(str(p) for p in folder.iterdir())
    _print(args, {"did": args.did, "agreement_id": agreement, "files": files}, "\n".join(files))
    return EXIT_OK


def _cmd_rpc(args: argparse.Namespace) -> int:
    from .client.rpc import main_rpc

    return main_rpc(args.rest)


def _cmd_provider(args: argparse.Namespace) -> int:
    from .ocean.provider.app import main_provider

    return main_provider(args.rest)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return EXIT_OK if run_demo(nodes=args.nodes) else EXIT_FAILED


def _account_args(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--key-env", help="environment variable holding the account's private key (hex)")
    cmd.add_argument("--keystore", help="Ethereum v3 keystore file of the account")
    cmd.add_argument("--password-env", help="environment variable holding the keystore password")


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
            cmd.add_argument("--provider-backend", choices=("secret-store", "provider-key"), default="secret-store",
                             help="the provider's access-control backend")
    dev.set_defaults(func=_cmd_devnet)

    keys = sub.add_parser("keys", help="node and account keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser("generate", help="generate a new secp256k1 key (e.g. a node key)")
    gen.add_argument("--out", help="write the private key as hex to this new file (mode 0600)")
    gen.add_argument("--keystore-out", help="write an Ethereum v3 keystore into this directory instead")
    gen.add_argument("--password-env", help="environment variable holding the keystore password")
    show = keys_sub.add_parser("show", help="show the public key and address of a key")
    _account_args(show)
    keys.set_defaults(func=_cmd_keys)

    for name, text, func in (("encrypt", "encrypt a document under a new (or existing) threshold key",
                              _cmd_encrypt),
                             ("decrypt", "decrypt a document with a key retrieved through shadows", _cmd_decrypt)):
        cmd = sub.add_parser(name, help=text)
        target = cmd.add_mutually_exclusive_group(required=True)
        target.add_argument("--key-id", help="server key id: 64 hex digits")
        target.add_argument("--did", help="an Ocean DID (did:op:...); the key id is its 32 bytes")
        cmd.add_argument("--url", action="append", help="key server URL (repeatable or comma-separated)")
        cmd.add_argument("--devnet", help="take the key server URLs from DIR/devnet.json (default .devnet)")
        cmd.add_argument("--in", dest="input", help="input file (default: stdin)")
        cmd.add_argument("--out", dest="output", help="output file (default: stdout)")
        cmd.add_argument("--progress", action="store_true", help="show progress on stderr")
        _account_args(cmd)
        if name == "encrypt":
            cmd.add_argument("--threshold", type=int, default=0, help="t: t+1 key servers needed to decrypt")
            cmd.add_argument("--reuse", action="store_true", help="use the key id's stored document key")
        cmd.set_defaults(func=func)

    publish = sub.add_parser("publish", help="publish an asset (Ocean: DDO, encrypted files, DID on chain)")
    publish.add_argument("--metadata", required=True, help="JSON file with the asset's metadata ({'main': {...}})")
    publish.add_argument("--provider", action="append", help="DID provider address (repeatable)")
    publish.add_argument("--threshold", type=int, help="override the configured threshold")
    consume = sub.add_parser("consume", help="order (optionally) and download an asset")
    consume.add_argument("--did", required=True)
    consume.add_argument("--agreement-id", help="an existing agreement (0x hex)")
    consume.add_argument("--order", action="store_true", help="create the agreement and lock the price first")
    consume.add_argument("--dest", default="downloads", help="download folder")
    consume.add_argument("--index", type=int, help="only this file of the asset")
    consume.add_argument("--direct", action="store_true",
                         help="decrypt the file list yourself through the Secret Store instead of via the provider")
    for cmd, func in ((publish, _cmd_publish), (consume, _cmd_consume)):
        cmd.add_argument("--config", help="squid-py style INI (default: DEVNET/ocean.ini)")
        cmd.add_argument("--devnet", help="devnet state dir whose ocean.ini to use (default .devnet)")
        _account_args(cmd)
        cmd.set_defaults(func=func)

    rpc = sub.add_parser("rpc", help="Parity-compatible secretstore_* JSON-RPC face (see: rpc --help)",
                         add_help=False)
    rpc.add_argument("rest", nargs=argparse.REMAINDER)
    rpc.set_defaults(func=_cmd_rpc)
    provider = sub.add_parser("provider", help="Brizo-shaped provider service (see: provider --help)",
                              add_help=False)
    provider.add_argument("rest", nargs=argparse.REMAINDER)
    provider.set_defaults(func=_cmd_provider)

    demo = sub.add_parser("demo", help="run the end-to-end demo")
    demo.add_argument("--nodes", type=int, default=5)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    position = next((i for i, a in enumerate(argv) if a not in ("--debug", "--json")), len(argv))
    if position < len(argv) and argv[position] in ("rpc", "provider"):
        # These two parse their own options (they also run as `python -m` modules).
        entry = {"rpc": _cmd_rpc, "provider": _cmd_provider}[argv[position]]
        return int(entry(argparse.Namespace(rest=argv[position + 1:])))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (SecretStoreError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
