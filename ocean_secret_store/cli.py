"""The ``ocean-secret-store`` command line: one argparse parser for every command.

Exit codes, for every command: 0 success, 1 the operation failed (one readable line on stderr;
``--debug`` adds the traceback), 2 bad usage, 130 interrupted. ``--json`` (before the command)
prints results as JSON; the services (``rpc``, ``provider``, ``files``, ``aquarius``) print their
URL as ``{"url": ...}`` once they listen (``--port-file`` also writes the bound port to a file, for
``--listen`` with port 0) and stop cleanly, exit code 0, on SIGTERM or SIGINT. Private keys come from a keystore file or
an environment variable, never from an argument.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_deploy import add_deploy_commands
from .cli_stack import add_stack_commands
from .cli_tools import UsageError, admin_summary
from .client.throttle import DEFAULT_FIRST_DELAY, DEFAULT_MAX_DELAY, PasswordThrottle
from .exceptions import SecretStoreError
from .protocol.addresses import HostPort, parse_host_port

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from .serving import ServingLimits, TlsFiles

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_RPC_LISTEN = "127.0.0.1:8545"


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text, flush=True)


def _service_logging(args: argparse.Namespace, service: str, **fields: str) -> None:
    """The service's logging from ``--log-file``, its rotation and ``--log-format``; in JSON, every
    line carries ``service`` and ``fields`` (a key server's ``node``: its address, as in its audit)."""
    from .lifecycle import configure_logging

    # Unset options keep lifecycle's defaults (one place for them).
    rotation = {key: value for key, value in (("max_bytes", args.log_max_bytes), ("backups", args.log_backups))
                if value is not None}
    try:
        configure_logging(debug=args.debug, log_file=args.log_file, log_format=args.log_format,
                          fields={"service": service, **fields}, **rotation)
    except ValueError as exc:
        raise UsageError(f"--log-max-bytes/--log-backups: {exc}") from None


def _serving_limits(args: argparse.Namespace) -> ServingLimits:
    from .serving import ServingLimits

    given = {key: value for key, value in (("header_timeout", args.header_timeout),
                                           ("max_connections_per_address", args.max_connections_per_address))
             if value is not None}  # unset options keep serving's defaults
    try:
        return ServingLimits(**given)
    except ValueError as exc:
        raise UsageError(f"--header-timeout/--max-connections-per-address: {exc}") from None


def _tls_files(args: argparse.Namespace) -> TlsFiles | None:
    """``--tls-cert``/``--tls-key`` (both or neither): the service serves https with them."""
    from .serving import TlsFiles

    if args.tls_cert is None and args.tls_key is None:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise UsageError("https needs both --tls-cert and --tls-key")
    return TlsFiles(args.tls_cert.resolve(), args.tls_key.resolve())


def _client_verify(args: argparse.Namespace) -> bool | str:
    """What a key server client checks https certificates against: ``--ca-file``, else the devnet's
    ``tls_ca`` when the URLs come from its devnet.json, else the system CAs."""
    from .devnet import DevnetState

    if args.ca_file is not None:
        return str(args.ca_file.resolve())
    if not args.url:
        state = DevnetState.load(Path(args.devnet or ".devnet"))
        if state is not None:
            return state.verify
    return True


def _listening(args: argparse.Namespace, what: str, url: str) -> None:
    """Say where a service listens; with ``--port-file``, also write the bound port there."""
    if args.port_file:
        # Atomically (rename), so a parent polling the file never reads half a number.
        target = Path(args.port_file)
        port = url.rsplit(":", 1)[1]
        with tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=f".{target.name}.", delete=False) as f:
            f.write(port + "\n")
        os.replace(f.name, target)
    print(json.dumps({"url": url}) if args.json else f"ocean-secret-store {what} listening on {url}", flush=True)


def _listen_address(text: str) -> HostPort:
    try:
        return parse_host_port(text, allow_zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT ({exc}), got {text!r}") from None


def _run_service(main: Coroutine[Any, Any, None]) -> int:
    try:
        import uvloop  # libuv's event loop: about half the per-message overhead of asyncio's own
    except ImportError:  # pragma: no cover - uvloop is a dependency on the platforms it supports
        asyncio.run(main)
    else:
        uvloop.run(main)
    return EXIT_OK


def _cmd_node(args: argparse.Namespace) -> int:
    from .node.app import serve
    from .node.config import load_config

    if args.config is None:
        raise UsageError("node: give --config FILE (the node's TOML config)")
    config = load_config(args.config)
    _service_logging(args, "node", node="0x" + config.address.hex())
    return _run_service(serve(config, args.config))


def _cmd_node_database(args: argparse.Namespace) -> int:
    """``node backup``, ``node restore`` and ``node verify`` (node/backup.py)."""
    from .node import backup
    from .node.config import load_config

    if getattr(args, "config", None) is None:
        raise UsageError(f"node {args.node_command}: give --config FILE (the node's TOML config)")
    config = load_config(args.config)
    if args.node_command == "dump":
        return _dump_node(args, config)
    if args.node_command == "backup":
        made = backup.make_backup(config.storage_path, config.node_secret, args.out)
        for damage in made.damaged[:10]:
            print(f"warning: damaged {damage.kind} {damage.name}: {damage.problem}", file=sys.stderr)
        _print(args, made.to_json(), f"backup of node 0x{config.node_id.hex()[:16]}..: {made.manifest.keys} keys, "
               f"{made.size} bytes in {made.seconds:.2f} s: {made.path}")
        return EXIT_OK
    if args.node_command == "restore":
        restored = backup.restore_backup(config.storage_path, config.node_secret, args.backup)
        kept = f"; the database it replaced is kept as {restored.kept}" if restored.kept else ""
        _print(args, restored.to_json(), f"restored {restored.manifest.keys} keys of {restored.manifest.created} into "
               f"{restored.database}{kept}. Start the node, then `node verify --peer URL` and `admin repair` "
               "(docs/operators.md, Backups)")
        return EXIT_OK
    return _verify_node(args, config)


def _dump_node(args: argparse.Namespace, config: Any) -> int:
    """``node dump``: one JSON object a line, each record in Parity's V3 layout without its shares."""
    from .node import backup
    from .protocol.hexcodec import parse_hex

    key_ids = None
    if args.key:
        key_ids = [parse_hex(key, "--key", 32, prefix=None, error=UsageError) for key in args.key]
    failed = 0
    for key_id, record in backup.dump_database(args.backup or config.storage_path, config.node_secret, key_ids):
        entry: dict[str, Any] = {"key_id": "0x" + key_id.hex()}
        if isinstance(record, str):
            entry["error"] = record
            failed += 1
        else:
            entry["record"] = record
        print(json.dumps(entry, separators=(",", ":")), flush=False)
    sys.stdout.flush()
    return EXIT_FAILED if failed else EXIT_OK


def _verify_node(args: argparse.Namespace, config: Any) -> int:
    from .cli_tools import split_urls
    from .client.admin import AdminClient
    from .node import backup
    from .protocol.key_versions import KeyVersionsPage

    manifest = None
    if args.backup is not None:
        manifest, check = backup.read_backup(args.backup, config.node_secret)
    else:
        check = backup.verify_database(config.storage_path, config.node_secret)
    peers: dict[str, KeyVersionsPage | str] = {}
    verify: bool | str = str(args.ca_file.resolve()) if args.ca_file is not None else True
    for url in split_urls(args.peer):
        try:
            with AdminClient(url, verify=verify) as client:
                peers[url] = client.key_versions(config.node_secret)
        except SecretStoreError as exc:
            peers[url] = str(exc)
    result = backup.Verification.of(config.node_id, args.backup or config.storage_path, check, manifest, peers)
    _print(args, result.to_json(), "\n".join(result.lines()))
    return EXIT_OK if result.ok else EXIT_FAILED


def _cmd_rpc(args: argparse.Namespace) -> int:
    from .client.rpc import serve_rpc

    if not args.keystore.is_dir():
        raise UsageError(f"keystore directory {args.keystore} does not exist")
    _service_logging(args, "rpc")
    listen: HostPort = args.listen
    if not 0 <= args.wrong_password_delay <= args.wrong_password_delay_max:
        raise UsageError("--wrong-password-delay must be between 0 and --wrong-password-delay-max")
    throttle = PasswordThrottle(args.wrong_password_delay, args.wrong_password_delay_max)
    return _run_service(serve_rpc(args.keystore, listen.host, listen.port, args.chain_url,
                                  ready=lambda url: _listening(args, "rpc", url),
                                  allow_unlock=args.allow_unlock, throttle=throttle,
                                  limits=_serving_limits(args), tls=_tls_files(args)))


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _provider_overrides(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """The provider's options as config keys: they win over the INI file and the environment."""
    from .cli_tools import split_urls

    metadata = args.metadata_store
    if metadata is not None and not metadata.startswith(("http://", "https://")):
        metadata = _absolute(metadata)
    pairs = {
        ("keeper-contracts", "keeper.url"): args.chain_url,
        ("keeper-contracts", "contracts.file"): _absolute(args.contracts_json),
        ("resources", "metadata.store"): metadata,
        ("secret-store", "cluster_urls"): ", ".join(split_urls(args.secret_store_url)) or None,
        ("provider", "backend"): args.backend,
        ("provider", "listen"): str(args.listen) if args.listen else None,
        ("provider", "file_root"): _absolute(args.file_root),
    }
    overrides: dict[str, dict[str, str]] = {}
    for (section, key), value in pairs.items():
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return overrides


def _cmd_provider(args: argparse.Namespace) -> int:
    from .cli_tools import load_account
    from .ocean.config import load_config
    from .ocean.provider.app import serve_provider, settings_from_config

    if not args.config:
        needed = {"--chain-url": args.chain_url, "--contracts-json": args.contracts_json,
                  "--metadata-store": args.metadata_store}
        if args.backend != "provider-key":
            needed["--secret-store-url"] = args.secret_store_url
        absent = [flag for flag, value in needed.items() if not value]
        if absent:
            raise UsageError(f"without --config, give {', '.join(absent)}")
    config = load_config(args.config, overrides=_provider_overrides(args))
    if args.key_env or args.keystore:
        account = load_account(args.key_env, args.keystore, args.password_env)
    else:
        account = load_account(config.provider_key_env, config.provider_keystore, config.provider_password_env)
    settings = settings_from_config(config, account, events=not args.no_events,
                                    poll_interval=args.poll_interval, from_block=args.from_block)
    settings.serving = _serving_limits(args)
    if (tls := _tls_files(args)) is not None:
        settings.tls = tls
    _service_logging(args, "provider")
    overrides = _provider_overrides(args)

    def reload_urls() -> list[str]:  # SIGHUP: the config's key server list again (the flags still win)
        return list(load_config(args.config, overrides=overrides).cluster_urls)

    return _run_service(serve_provider(settings, ready=lambda url: _listening(args, "provider", url),
                                       reload_urls=reload_urls if args.config else None))


def _cmd_devnet(args: argparse.Namespace) -> int:
    from . import devnet

    state_dir = Path(args.state_dir)
    say = (lambda _: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    if args.devnet_command == "up":
        state = devnet.up(state_dir, args.nodes, acl=args.acl, provider_backend=args.provider_backend,
                          fresh=args.fresh, tls=args.tls, say=say)
        # The state file holds dev keys and passwords (mode 0600): stdout gets everything else.
        public = {k: v for k, v in state.to_json().items() if k not in ("accounts", "rpc_accounts")}
        public["accounts"] = {role: key.address for role, key in state.accounts.items()}
        public["state_file"] = str(state.path)
        _print(args, public, f"devnet up: {len(state.nodes)} key servers, secret_store_url "
                             f"{state.secret_store_url}, state in {state.path}")
    elif args.devnet_command == "down":
        stopped = devnet.down(state_dir)
        _print(args, {"stopped": stopped}, f"devnet down: stopped {len(stopped)} process(es)")
    else:
        report = devnet.status(state_dir)
        lines = [f"{'node':<5} {'pid':>8} {'running':<8} {'healthy':<8} {'peers':>5}  url"]
        lines += [f"{n['node']:<5} {n['pid'] or '-':>8} {n['running']!s:<8} {n['healthy']!s:<8} "
                  f"{n['connected_peers'] if n['connected_peers'] is not None else '-':>5}  {n['http_url']}"
                  for n in report["nodes"]]
        lines += [f"{name:<9}{service['pid'] or '-':>4} {service['running']!s:<8} {'':<8} {'':>5}  {service['url']}"
                  for name, service in report["services"].items()]
        _print(args, report, "\n".join(lines))
        return EXIT_OK if report["healthy"] else EXIT_FAILED
    return EXIT_OK


def _cmd_devnet_nodes(args: argparse.Namespace) -> int:
    from . import devnet
    from .cli_tools import AdminProgress

    state_dir = Path(args.state_dir)
    say = (lambda _: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    progress = AdminProgress("servers-set change")
    try:
        if args.devnet_command == "remove-node":
            nodes = devnet.DevnetState.require(state_dir).nodes
            public = nodes[args.index].public if 0 <= args.index < len(nodes) else None
            report = devnet.remove_node(state_dir, args.index, force=args.force, on_progress=progress, say=say)
            data: dict[str, Any] = {"removed": args.index, "public": public, "report": report}
            text = f"removed node {args.index} ({public}); servers-set change {admin_summary(report)}"
        else:
            change = devnet.add_node if args.devnet_command == "add-node" else functools.partial(
                devnet.replace_node, index=args.index)
            index, report = change(state_dir, force=args.force, on_progress=progress, say=say)
            node = devnet.DevnetState.require(state_dir).nodes[index]
            data = {"node": index, "public": node.public, "http_url": node.http_url, "report": report}
            verb = "added" if args.devnet_command == "add-node" else f"replaced node {args.index} by"
            text = f"{verb} node {index}: {node.public} at {node.http_url}; servers-set change {admin_summary(report)}"
        if progress.drawn:
            progress({"progress": report})  # the bar ends where the session did
    finally:
        progress.finish()
    _print(args, data, text)
    return EXIT_OK


def _admin_client(args: argparse.Namespace) -> Any:
    from .client.admin import AdminClient

    verify: bool | str = str(args.ca_file.resolve()) if args.ca_file is not None else True
    return AdminClient(args.node, verify=verify)


def _cmd_admin(args: argparse.Namespace) -> int:
    from .cli_tools import AdminProgress, admin_secret, node_ids

    if args.admin_command == "status":  # signed when an admin key is given: then it names the keys too
        signer = admin_secret(args.admin_key_env, args.admin_keystore, args.admin_password_env) \
            if args.admin_key_env or args.admin_keystore else None
        with _admin_client(args) as client:
            print(json.dumps(client.status(signer), indent=2), flush=True)
        return EXIT_OK
    secret = admin_secret(args.admin_key_env, args.admin_keystore, args.admin_password_env)
    new_set = node_ids(args.nodes) if args.admin_command == "servers-set-change" else None
    target = node_ids([args.target])[0] if args.admin_command == "repair" else None
    progress = AdminProgress(args.admin_command)
    with _admin_client(args) as client:
        try:
            if new_set is not None:
                report = client.servers_set_change(new_set, secret, args.force, on_progress=progress)
            elif target is not None:
                report = client.repair(target, secret, args.force, on_progress=progress)
            else:
                report = client.refresh(secret, args.force, on_progress=progress)
            if progress.drawn:
                progress({"progress": report})  # the bar ends where the session did
        finally:
            progress.finish()
    _print(args, report, f"{args.admin_command} {admin_summary(report)}")
    return EXIT_OK


def _account(args: argparse.Namespace) -> LocalAccount:
    from .cli_tools import load_account

    return load_account(args.key_env, args.keystore, args.password_env)


def _cmd_keys(args: argparse.Namespace) -> int:
    from .client.local import account_public
    from .crypto.curve import Point, random_scalar
    from .crypto.hashes import address_of, checksum_address

    out: Path | None = None
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
        public = account_public(_account(args))
    info = {"public": "0x" + public.to_bytes().hex(), "address": checksum_address(address_of(public))}
    if out is not None:
        info["written"] = str(out)
    _print(args, info, "\n".join(f"{k}: {v}" for k, v in info.items()))
    return EXIT_OK


def _close_files(*files: Any) -> None:
    for f in files:
        if f not in (sys.stdin.buffer, sys.stdout.buffer):
            f.close()


def _cmd_encrypt(args: argparse.Namespace) -> int:
    from .cli_tools import CountingReader, Progress, cluster_urls, key_id_from, open_in, open_out
    from .client.client import SecretStoreClient
    from .crypto import document

    key_id = key_id_from(args.key_id, args.did)
    client = SecretStoreClient(cluster_urls(args.url, args.devnet), _account(args), verify=_client_verify(args))
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
        written = document.encrypt_stream(document_key, CountingReader(src, progress), dst)  # type: ignore[arg-type] # CountingReader is a duck-typed binary stream
    finally:
        progress.finish()
        _close_files(src, dst)
    if args.output not in (None, "-") or args.json:
        _print(args, {"key_id": "0x" + key_id.hex(), "bytes_written": written, "threshold": args.threshold,
                      "new_key": not args.reuse}, f"encrypted {written - 16} bytes under key 0x{key_id.hex()}")
    return EXIT_OK


def _cmd_decrypt(args: argparse.Namespace) -> int:
    from .cli_tools import Progress, cluster_urls, key_id_from, open_in, open_out
    from .client.client import SecretStoreClient
    from .crypto import document

    key_id = key_id_from(args.key_id, args.did)
    client = SecretStoreClient(cluster_urls(args.url, args.devnet), _account(args), verify=_client_verify(args))
    document_key = client.recover_document_key(key_id)
    src: Any = open_in(args.input)
    if not src.seekable():  # the IV is at the end: spool a pipe first
        spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 -- replaces src; closed with it below
        while chunk := src.read(1 << 20):
            spool.write(chunk)
        spool.seek(0)
        src = spool
    dst: Any = open_out(args.output)
    progress = Progress(None, "decrypting", args.progress)
    try:
        written = document.decrypt_stream(document_key, src, dst)
        progress(written)
    finally:
        progress.finish()
        _close_files(src, dst)
    if args.output not in (None, "-") or args.json:
        _print(args, {"key_id": "0x" + key_id.hex(), "bytes_written": written},
               f"decrypted {written} bytes with key 0x{key_id.hex()}")
    return EXIT_OK


def _cmd_sign(args: argparse.Namespace) -> int:
    from .cli_tools import cluster_urls, key_id_from
    from .client.client import SecretStoreClient, ethereum_signature
    from .crypto.hashes import address_of, checksum_address
    from .crypto.signatures import recover_public
    from .protocol.hexcodec import parse_hex

    key_id = key_id_from(args.key_id, args.did)
    message_hash = parse_hex(args.hash, "--hash", 32, prefix=None, error=UsageError)
    address = parse_hex(args.address, "--address", 20, prefix=None, error=UsageError) if args.address else None
    with SecretStoreClient(cluster_urls(args.url, args.devnet), _account(args), verify=_client_verify(args)) as client:
        signature = client.sign_ecdsa(key_id, message_hash, address=address)
    signer = checksum_address(address_of(recover_public(signature, message_hash)))
    shown = ethereum_signature(signature) if args.ethereum else signature
    data = {"key_id": "0x" + key_id.hex(), "hash": "0x" + message_hash.hex(), "signature": "0x" + shown.hex(),
            "r": "0x" + signature[:32].hex(), "s": "0x" + signature[32:64].hex(), "v": shown[64], "signer": signer}
    _print(args, data, "0x" + shown.hex())
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
    from .ocean.ddo import ACCESS_INDEX

    ocean = _ocean(args)
    account = _account(args)
    agreement = args.agreement_id
    if agreement is None:
        if not args.order:
            raise UsageError("give --agreement-id of an existing agreement, or --order to order the asset first")
        agreement = ocean.assets.order(args.did, ACCESS_INDEX, account)
        if not args.json:
            print(f"ordered: agreement {agreement}", file=sys.stderr)
    folder = ocean.assets.consume(agreement, args.did, ACCESS_INDEX, account, args.dest, args.index,
                                  direct=args.direct)
    files = sorted(str(p) for p in folder.iterdir())
    _print(args, {"did": args.did, "agreement_id": agreement, "files": files}, "\n".join(files))
    return EXIT_OK


def _cmd_files(args: argparse.Namespace) -> int:
    from .serving import serve_files

    if not args.dir.is_dir():
        raise UsageError(f"directory {args.dir} does not exist")
    _service_logging(args, "files")
    listen: HostPort = args.listen
    return _run_service(serve_files(args.dir.resolve(), listen.host, listen.port, limits=_serving_limits(args),
                                    ready=lambda url: _listening(args, "files", url), tls=_tls_files(args)))


def _cmd_aquarius(args: argparse.Namespace) -> int:
    from .ocean.aquarius import serve_aquarius

    if not args.db.parent.is_dir():
        raise UsageError(f"the folder of --db {args.db} does not exist")
    _service_logging(args, "aquarius")
    listen: HostPort = args.listen
    return _run_service(serve_aquarius(args.db.resolve(), listen.host, listen.port, limits=_serving_limits(args),
                                       ready=lambda url: _listening(args, "aquarius", url), tls=_tls_files(args)))


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return EXIT_OK if run_demo(nodes=args.nodes) else EXIT_FAILED


def _cmd_anvil_path(args: argparse.Namespace) -> int:
    from .tools import anvil_path

    path = anvil_path()
    if not args.check:
        _print(args, {"anvil": str(path)}, str(path))
        return EXIT_OK
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True, timeout=30)
    except subprocess.CalledProcessError as exc:
        raise SecretStoreError(f"{path} --version exited with {exc.returncode}") from None
    version = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    _print(args, {"anvil": str(path), "version": version}, version)
    return EXIT_OK


def _account_args(cmd: argparse.ArgumentParser, whose: str = "the account") -> None:
    cmd.add_argument("--key-env", help=f"environment variable holding {whose}'s private key (hex)")
    cmd.add_argument("--keystore", help=f"Ethereum v3 keystore file of {whose}")
    cmd.add_argument("--password-env", help="environment variable holding the keystore password")


def _port_file_arg(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--port-file", metavar="FILE",
                     help="once listening, write the bound port to FILE (for --listen with port 0)")


def _log_file_args(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--log-file", metavar="FILE",
                     help="log to FILE (created 0600, rotated by size) instead of stderr")
    cmd.add_argument("--log-format", choices=("text", "json"), default="text",
                     help="text lines (default), or one JSON object per line: time, level, logger, message, "
                     "service, and the audit's field names where an event has them (docs/operators.md, Logs)")
    cmd.add_argument("--log-max-bytes", type=int, metavar="BYTES",
                     help="rotate the log file at this size: FILE -> FILE.1 -> FILE.2 ... (default 10 MiB)")
    cmd.add_argument("--log-backups", type=int, metavar="N", help="rotated log files kept (default 5)")


def _serving_args(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--header-timeout", type=float, metavar="SECONDS",
                     help="close a connection that has not sent a whole request head in this time (default 10)")
    cmd.add_argument("--max-connections-per-address", type=int, metavar="N",
                     help="open connections allowed per client address; more are closed at once (default 256)")


def _tls_args(cmd: argparse.ArgumentParser, default: str = "plain HTTP") -> None:
    cmd.add_argument("--tls-cert", type=Path, metavar="PEM",
                     help=f"serve https with this certificate chain (with --tls-key; default: {default})")
    cmd.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")


def _force_arg(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--force", action="store_true",
                     help="go on although some keys cannot keep t+1 shares (they are reported as lost and left "
                     "as they are); without it such a session is refused and nothing changes")


def _add_admin(sub: Any) -> None:
    admin = sub.add_parser(
        "admin", help="administer a key server cluster: servers-set change, refresh, repair, status",
        description="Admin sessions through one key server (README.md, servers-set change). The admin private "
        "key is read from the environment variable named by --admin-key-env (hex) and never printed; the old set "
        "signed is the entry node's view (GET /admin/status). A progress bar goes to stderr while a session runs.")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    for name, text in (("status", ("print the node's servers set, connections and admin session progress (JSON); "
                                   "with the admin key, signed: the ids of the keys a session left behind or failed "
                                   "to move too (without it, their counts)")),
                       ("servers-set-change", "move every key to a new servers set (add, remove, replace nodes)"),
                       ("refresh", "new shares of every key on the same servers set (proactive refresh)"),
                       ("repair", "give a node of the set back its shares of every key it lacks")):
        cmd = admin_sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--node", required=True, metavar="URL", help="the key server that runs the session")
        cmd.add_argument("--ca-file", type=Path, metavar="PEM", help="check an https node against this CA bundle")
        if name == "servers-set-change":
            cmd.add_argument("--nodes", action="append", required=True, metavar="0x..,0x..",
                             help="the new servers set: node ids (0x + 128 hex), comma-separated or repeated")
        if name == "repair":
            cmd.add_argument("--target", required=True, metavar="0x<node id>", help="the node to repair")
        key = cmd.add_mutually_exclusive_group(required=name != "status")
        key.add_argument("--admin-key-env", metavar="VAR",
                         help="environment variable holding the admin private key (hex, 0x optional)")
        key.add_argument("--admin-keystore", type=Path, metavar="FILE",
                         help="the admin key's v3 keystore (`cluster init` writes admin/keystore/UTC--...)")
        cmd.add_argument("--admin-password-env", metavar="VAR", help="environment variable holding its password")
        if name != "status":
            _force_arg(cmd)
    admin.set_defaults(func=_cmd_admin)


def _add_encrypt_decrypt(sub: Any) -> None:
    for name, text, func in (("encrypt", "encrypt a document under a new (or existing) threshold key",
                              _cmd_encrypt),
                             ("decrypt", "decrypt a document with a key retrieved through shadows", _cmd_decrypt)):
        cmd = sub.add_parser(name, help=text)
        target = cmd.add_mutually_exclusive_group(required=True)
        target.add_argument("--key-id", help="server key id: 64 hex digits")
        target.add_argument("--did", help="an Ocean DID (did:op:...); the key id is its 32 bytes")
        cmd.add_argument("--url", action="append", help="key server URL (repeatable or comma-separated)")
        cmd.add_argument("--devnet", help="take the key server URLs from DIR/devnet.json (default .devnet)")
        cmd.add_argument("--ca-file", type=Path, metavar="PEM",
                         help="check https key servers against this CA bundle (default: the devnet's tls_ca "
                         "with --devnet, else the system CAs)")
        cmd.add_argument("--in", dest="input", help="input file (default: stdin)")
        cmd.add_argument("--out", dest="output", help="output file (default: stdout)")
        cmd.add_argument("--progress", action="store_true", help="show progress on stderr")
        _account_args(cmd)
        if name == "encrypt":
            cmd.add_argument("--threshold", type=int, default=0, help="t: t+1 key servers needed to decrypt")
            cmd.add_argument("--reuse", action="store_true", help="use the key id's stored document key")
        cmd.set_defaults(func=func)


def _add_sign(sub: Any) -> None:
    text = "sign a 32-byte hash with a threshold key: ECDSA by 2t+1 key servers (GET /ecdsa), for Ethereum"
    cmd = sub.add_parser(
        "sign", help=text,
        description=text + ". Prints r||s||v as 0x hex (v the recovery id 0/1; --ethereum: v+27); with --json also "
        "r, s, v and the signer's address (the key's Ethereum address). Needs the key's permission, as a "
        "retrieval; a key generated with 2t >= N cannot sign.")
    target = cmd.add_mutually_exclusive_group(required=True)
    target.add_argument("--key-id", help="server key id: 64 hex digits (0x optional)")
    target.add_argument("--did", help="an Ocean DID (did:op:...); the key id is its 32 bytes")
    cmd.add_argument("--hash", required=True, metavar="0x<64 hex>", help="the 32-byte hash to sign, as it is")
    cmd.add_argument("--url", "--node", action="append", dest="url", metavar="URL",
                     help="key server URL (repeatable or comma-separated; any node is an entry point)")
    cmd.add_argument("--devnet", help="take the key server URLs from DIR/devnet.json (default .devnet)")
    cmd.add_argument("--ca-file", type=Path, metavar="PEM",
                     help="check https key servers against this CA bundle (default: the devnet's tls_ca with "
                     "--devnet, else the system CAs)")
    cmd.add_argument("--address", metavar="0x<40 hex>",
                     help="refuse a signature that does not recover to this address (the key's)")
    cmd.add_argument("--ethereum", action="store_true", help="print v as 27/28, as ecrecover takes it")
    _account_args(cmd, "the requester")
    cmd.set_defaults(func=_cmd_sign)


def _add_node(sub: Any) -> None:
    node = sub.add_parser(
        "node", help="run one key server (node --config FILE); back up, restore, verify or dump its database",
        description="Without a command: run the key server of --config until SIGTERM. With one: back up its key "
        "database (while it runs), restore a backup into a stopped node, verify the database and compare its "
        "key versions with the peers', or print its records in Parity's V3 layout without their shares "
        "(docs/operators.md, Backups, Verifying a node and The key database).")
    node.add_argument("--config", help="node TOML config (see ocean_secret_store/node/config.py; [http] sets the "
                      "header timeout and the connections per address, [audit] the audit rotation)")
    _log_file_args(node)
    node.set_defaults(func=_cmd_node)
    commands = node.add_subparsers(dest="node_command", metavar="{backup,restore,verify,dump}",
                                   title="database commands (without one, the node runs)")
    backup = commands.add_parser(
        "backup", help="an online, consistent copy of the key database, still sealed under the node secret",
        description="Copy the node's key database with SQLite's backup API while the node runs: one file (mode "
        "0600, written under a temporary name and renamed), with a manifest naming the node, authenticated under "
        "its node secret; the shares stay sealed as on disk. Never overwrites a file.")
    backup.add_argument("--out", required=True, type=Path, metavar="FILE", help="the backup file to write (new)")
    restore = commands.add_parser(
        "restore", help="put a backup in place of a stopped node's key database",
        description="Refuses a backup of another node, of another node secret, or a damaged one, and a node that "
        "runs, before anything changes; keeps the current database beside it (keys.sqlite3.before-restore-TIME). "
        "Then start the node and repair it (admin repair): the keys made or moved since the backup come back.")
    restore.add_argument("--from", dest="backup", required=True, type=Path, metavar="FILE", help="the backup file")
    verify = commands.add_parser(
        "verify", help="check every record's MAC and the node-secret check value; compare key versions with peers",
        description="Check the node's key database (or --backup FILE): SQLite's structure, the schema, the "
        "node-secret check value, every record's MAC and sealed shares, the pending document keys and meta "
        "entries; with --peer, ask each peer (signed with this node's key) which version of each key it holds, "
        "and report every key missing here, stale, or held here alone. Exit code 0: nothing found; 1: something.")
    verify.add_argument("--backup", type=Path, metavar="FILE", help="verify this backup instead of the database")
    verify.add_argument("--peer", action="append", metavar="URL",
                        help="a peer key server's HTTP URL (repeatable or comma-separated)")
    verify.add_argument("--ca-file", type=Path, metavar="PEM", help="check https peers against this CA bundle")
    dump = commands.add_parser(
        "dump", help="print the key records in Parity's V3 JSON layout, without their secret shares",
        description="Print each record of the node's key database (or --backup FILE), one JSON object a line "
        "({\"key_id\", \"record\"} or {\"key_id\", \"error\"}): Parity's V3 layout (protocol.md 5.2) with this "
        "program's extra fields (owner, commitments, epoch, inactive), without the sealed secret shares. Each record "
        "is authenticated first; no share is opened and nothing is written (the node may run). The records are "
        "compact binary on disk since schema 6 (docs/operators.md, The key database). Exit code 1: a record "
        "failed or a --key has none.")
    dump.add_argument("--key", action="append", metavar="ID", help="only this key id (hex; repeatable)")
    dump.add_argument("--backup", type=Path, metavar="FILE", help="dump this backup instead of the database")
    for cmd in (backup, restore, verify, dump):
        cmd.add_argument("--config", default=argparse.SUPPRESS, help="the node's TOML config (its node secret and "
                         "data_dir; a keystore's password variable must be set)")
        cmd.set_defaults(func=_cmd_node_database)


def _add_rpc(sub: Any) -> None:
    rpc = sub.add_parser(
        "rpc", help="Parity-compatible secretstore_* JSON-RPC face",
        description="Parity-compatible JSON-RPC face: secretstore_*, signing and transactions for keystore "
                    "accounts; chain reads and eth_sendRawTransaction forwarded, everything else refused "
                    "(docs/rpc.md).")
    rpc.add_argument("--keystore", required=True, type=Path, metavar="DIR", help="directory of v3 keystore files")
    rpc.add_argument("--listen", default=DEFAULT_RPC_LISTEN, type=_listen_address,
                     metavar="HOST:PORT",
                     help=f"address to listen on (port 0 picks a free one; default {DEFAULT_RPC_LISTEN})")
    rpc.add_argument("--chain-url", metavar="URL",
                     help="Ethereum JSON-RPC URL: chain reads are forwarded there, transactions sent there")
    rpc.add_argument("--allow-unlock", action="store_true",
                     help="serve personal_unlockAccount (off by default: an unlock is global, any client of the "
                          "face can then sign as the account until the unlock's duration ends)")
    rpc.add_argument("--wrong-password-delay", type=float, default=DEFAULT_FIRST_DELAY, metavar="SECONDS",
                     help="delay of the answer to a first wrong password, doubling with each further one per "
                          f"account and per client address (default {DEFAULT_FIRST_DELAY})")
    rpc.add_argument("--wrong-password-delay-max", type=float, default=DEFAULT_MAX_DELAY, metavar="SECONDS",
                     help=f"the longest wrong-password delay (default {DEFAULT_MAX_DELAY})")
    _port_file_arg(rpc)
    _serving_args(rpc)
    _tls_args(rpc)
    _log_file_args(rpc)
    rpc.set_defaults(func=_cmd_rpc)


def _add_provider(sub: Any) -> None:
    provider = sub.add_parser(
        "provider", help="Brizo-shaped provider service",
        description="Brizo-shaped provider: consume endpoint, info endpoint and agreement events handler. "
        "Give --config (squid-style INI) or the explicit options; options override the config. The access "
        "backend is chosen by name through the ocean plugins (OCEAN_DISABLED_PLUGINS blocks some).")
    provider.add_argument("--config", help="INI config (see ocean_secret_store/ocean/config.py)")
    provider.add_argument("--chain-url", help="Ethereum JSON-RPC URL of the keeper contracts")
    provider.add_argument("--contracts-json", help="JSON file with contract addresses (devnet.json works)")
    provider.add_argument("--metadata-store", help="SQLite path or Aquarius http(s) URL")
    provider.add_argument("--secret-store-url", action="append",
                          help="key server URL for the secret-store backend (repeatable or comma-separated)")
    provider.add_argument("--backend", metavar="NAME",
                          help="access backend offered by a plugin: secret-store (default) or provider-key")
    provider.add_argument("--listen", type=_listen_address, metavar="HOST:PORT",
                          help="address to listen on (port 0 picks a free one; default 127.0.0.1:8030)")
    provider.add_argument("--file-root", help="serve file:// URLs only under this directory (default: refuse them)")
    provider.add_argument("--no-events", action="store_true", help="do not run the events handler")
    provider.add_argument("--poll-interval", type=float, default=0.5, help="events handler poll interval (s)")
    provider.add_argument("--from-block", type=int, default=0, help="first block the events handler scans")
    _account_args(provider, "the provider")
    _port_file_arg(provider)
    _serving_args(provider)
    _tls_args(provider, "[provider] tls_cert/tls_key of --config, else plain HTTP")
    _log_file_args(provider)
    provider.set_defaults(func=_cmd_provider)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocean-secret-store", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_node(sub)

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
            cmd.add_argument("--tls", action="store_true",
                             help="https everywhere: a local CA (tls_ca in devnet.json) and certificates for "
                             "127.0.0.1/localhost; off by default, as Parity-era clients speak plain HTTP")
            cmd.add_argument("--provider-backend", default="secret-store", metavar="NAME",
                             help="the provider's access backend, by plugin name: secret-store (default) or "
                             "provider-key")
    dev.set_defaults(func=_cmd_devnet)
    for name, text in (("add-node", "start a new key server and add it to the servers set (servers-set change)"),
                       ("remove-node", "take node N out of the servers set (servers-set change), then stop it"),
                       ("replace-node", "replace node N by a new key server in one servers-set change")):
        cmd = dev_sub.add_parser(name, help=text, description=text + "; signed with accounts.admin of devnet.json.")
        cmd.add_argument("--state-dir", default=".devnet", help="where keys, configs, logs and devnet.json live")
        if name != "add-node":
            cmd.add_argument("index", type=int, metavar="N", help="the node's index in devnet.json's nodes")
        _force_arg(cmd)
        cmd.set_defaults(func=_cmd_devnet_nodes)

    _add_admin(sub)

    keys = sub.add_parser("keys", help="node and account keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser("generate", help="generate a new secp256k1 key (e.g. a node key)")
    gen.add_argument("--out", help="write the private key as hex to this new file (mode 0600)")
    gen.add_argument("--keystore-out", help="write an Ethereum v3 keystore into this directory instead")
    gen.add_argument("--password-env", help="environment variable holding the keystore password")
    show = keys_sub.add_parser("show", help="show the public key and address of a key")
    _account_args(show)
    keys.set_defaults(func=_cmd_keys)

    _add_encrypt_decrypt(sub)
    _add_sign(sub)

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

    _add_rpc(sub)
    _add_provider(sub)
    _add_demo_and_tools(sub)
    add_deploy_commands(sub)
    add_stack_commands(sub)
    return parser


def _add_demo_and_tools(sub: Any) -> None:
    files = sub.add_parser("files", help="serve a folder over HTTP (the devnet's file server)",
                           description="Serve the files of a folder (GET, Range; no listing): the devnet runs one "
                           "for DIR/files, the origin its provider may fetch from (files_url in devnet.json).")
    files.add_argument("--dir", required=True, type=Path, help="the folder to serve")
    files.add_argument("--listen", default="127.0.0.1:0", type=_listen_address, metavar="HOST:PORT",
                       help="address to listen on (default 127.0.0.1:0, a free port)")
    _port_file_arg(files)
    _serving_args(files)
    _tls_args(files)
    _log_file_args(files)
    files.set_defaults(func=_cmd_files)

    aquarius = sub.add_parser(
        "aquarius", help="serve a SQLite metadata store as an Aquarius v1 compatible service",
        description="Aquarius v1's HTTP API (/api/v1/aquarius/assets: DDO register, resolve, update, retire, list, "
        "text search and query with paging) over a SQLite metadata store, as squid-py 0.9.3 and ocean-utils 0.3.7 "
        "call it; the devnet runs one (aquarius_url in devnet.json). Routes: ocean_secret_store/ocean/aquarius.py.")
    aquarius.add_argument("--db", required=True, type=Path, metavar="FILE",
                          help="the SQLite metadata store (created if absent; the devnet's metadata_store)")
    aquarius.add_argument("--listen", default="127.0.0.1:5000", type=_listen_address, metavar="HOST:PORT",
                          help="address to listen on (port 0 picks a free one; default 127.0.0.1:5000, Aquarius')")
    _port_file_arg(aquarius)
    _serving_args(aquarius)
    _tls_args(aquarius)
    _log_file_args(aquarius)
    aquarius.set_defaults(func=_cmd_aquarius)

    demo = sub.add_parser("demo", help="run the end-to-end demo")
    demo.add_argument("--nodes", type=int, default=5)
    demo.set_defaults(func=_cmd_demo)

    anvil = sub.add_parser("anvil-path", help="where `make setup` installed anvil (the platform binary)")
    anvil.add_argument("--check", action="store_true", help="run it and print its version")
    anvil.set_defaults(func=_cmd_anvil_path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or bad usage (2); argparse has printed why
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
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
