"""Drives the real Parity-era Ocean stack for tests/compat/: run by the Python 3.7 interpreter of the
environment that env37.py builds, one operation per process, JSON in and out.

stdin: ``{"op": NAME, "devnet": "/path/to/devnet.json", "args": {...}}``. Every URL, account and
password comes from that ``devnet.json`` (the file ``devnet up`` wrote); the test passes only what
the flow itself produces (ids, ciphertexts). stdout: one JSON object, ``{"ok": true, "result": ...}``
or ``{"ok": false, "type": "RPCError", "module": "...", "message": "..."}`` when the stack raised;
anything the stack prints goes to stderr. Exit status 0 unless the driver itself is broken.

Python 3.7 syntax only (ruff checks this file as py37: pyproject.toml).
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback


def _rpc_account(devnet: dict, role: str) -> dict:
    for account in devnet["rpc_accounts"]:
        if account["role"] == role:
            return account
    raise KeyError(f"devnet.json has no rpc_accounts entry for role {role!r}")


def _secret_store_url(devnet: dict, args: dict) -> str:
    """The devnet's ``secret_store_url``, or node ``args["node"]``'s ``http_url`` (another entry node)."""
    if args.get("node") is not None:
        return devnet["nodes"][int(args["node"])]["http_url"]
    return devnet["secret_store_url"]


def _ssc_client(devnet: dict, args: dict):  # -> secret_store_client.Client (untyped)
    from secret_store_client.client import Client

    account = _rpc_account(devnet, args["account"])
    password = args.get("password", account["password"])
    return Client(_secret_store_url(devnet, args), devnet["rpc_url"], account["address"], password)


def op_versions(devnet: dict, args: dict) -> dict:
    """The interpreter and the installed distributions of the stack (what is really being tested)."""
    import platform

    import importlib_metadata

    names = ["squid-py", "ocean-keeper", "ocean-utils", "ocean-secret-store-client", "web3", "requests",
             "eth-account"]
    return {"python": platform.python_version(), **{name: importlib_metadata.version(name) for name in names}}


def op_ssc_publish(devnet: dict, args: dict) -> str:
    """``secret_store_client.Client.publish_document``: the encrypted document (hex)."""
    return _ssc_client(devnet, args).publish_document(args["document_id"], args["document"],
                                                      threshold=args.get("threshold", 0))


def op_ssc_decrypt(devnet: dict, args: dict) -> str:
    """``secret_store_client.Client.decrypt_document``: the document."""
    return _ssc_client(devnet, args).decrypt_document(args["document_id"], args["encrypted"])


OPS = {name[3:]: function for name, function in globals().items() if name.startswith("op_")}


def main() -> int:
    request = json.load(sys.stdin)
    with open(request["devnet"], encoding="utf-8") as handle:
        devnet = json.load(handle)
    operation = OPS[request["op"]]
    real_stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            answer = {"ok": True, "result": operation(devnet, request.get("args", {}))}
    except Exception as exc:  # noqa: BLE001 -- every failure of the stack is an answer for the test to judge
        traceback.print_exc()
        answer = {"ok": False, "type": type(exc).__name__, "module": type(exc).__module__, "message": str(exc)}
    json.dump(answer, real_stdout)
    real_stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
