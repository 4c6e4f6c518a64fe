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


# -- squid-py 0.9.3 ------------------------------------------------------------------------------

#: How long an order may take until the devnet provider's events handler has granted access (s).
GRANT_TIMEOUT = 120.0


def _ocean(devnet: dict):  # -> squid_py.Ocean, configured by the devnet's config.ini alone
    from squid_py import ConfigProvider, Ocean
    from squid_py.config import Config

    config = Config(filename=devnet["squid_config"])
    ConfigProvider.set_config(config)
    return Ocean(config)


def _keeper_account(devnet: dict, role: str):  # -> ocean_keeper.account.Account (keystore + password)
    from ocean_keeper.account import Account

    account = _rpc_account(devnet, role)
    return Account(account["address"], account["password"], key_file=account["keystore"])


def _access_index(ocean, did: str) -> int:  # ocean: squid_py.Ocean
    from ocean_utils.agreements.service_types import ServiceTypes

    return ocean.assets.resolve(did).get_service(ServiceTypes.ASSET_ACCESS).index


def op_squid_config(devnet: dict, args: dict) -> dict:
    """What ``Ocean(config)`` made of the devnet's config.ini: the keeper's contracts and the URLs."""
    ocean = _ocean(devnet)
    config = ocean.config
    return {
        "keeper_path": str(config.keeper_path), "keeper_url": config.keeper_url,
        "secret_store_url": config.secret_store_url, "parity_url": config.parity_url,
        "aquarius_url": config.aquarius_url, "network": ocean.keeper.network_name,
        "contracts": {name: contract.address for name, contract in ocean.keeper.contract_name_to_instance.items()},
        "accounts": sorted(account.address for account in ocean.accounts.list()),
    }


def op_squid_publish(devnet: dict, args: dict) -> dict:
    """``ocean.assets.create(metadata, publisher, providers=[the devnet's provider])``, encrypting the
    files through the Secret Store (``use_secret_store``, the default) or Brizo's ``services/publish``:
    the DDO as squid-py returned it."""
    ocean = _ocean(devnet)
    providers = [devnet["provider_address"]] if args.get("list_provider", True) else None
    ddo = ocean.assets.create(args["metadata"], _keeper_account(devnet, args.get("account", "publisher")),
                              providers=providers, use_secret_store=args.get("use_secret_store", True))
    if ddo is None:
        raise RuntimeError("ocean.assets.create returned None (registering or publishing the DDO failed)")
    return {"did": ddo.did, "ddo": ddo.as_dictionary()}


def op_squid_resolve(devnet: dict, args: dict) -> dict:
    """``ocean.assets.resolve(did)`` (DIDRegistry -> Aquarius): the DDO."""
    return _ocean(devnet).assets.resolve(args["did"]).as_dictionary()


def op_squid_search(devnet: dict, args: dict) -> dict:
    """``ocean.assets.search(text)`` and ``ocean.assets.query({"query": {"text": [text]}})`` on the
    devnet's Aquarius: the DIDs each found."""
    ocean = _ocean(devnet)
    text = args["text"]
    return {"search": [ddo.did for ddo in ocean.assets.search(text)],
            "query": [ddo.did for ddo in ocean.assets.query({"query": {"text": [text]}})]}


def op_squid_order(devnet: dict, args: dict) -> dict:
    """Tokens from the Dispenser if short, then ``ocean.assets.order(did, access index, consumer)``;
    waits (squid-py locks the reward from its event thread, the provider's events handler grants)
    until ``ocean.agreements.is_access_granted``."""
    import time

    ocean = _ocean(devnet)
    consumer = _keeper_account(devnet, args.get("account", "consumer"))
    did = args["did"]
    ddo = ocean.assets.resolve(did)
    from ocean_utils.agreements.service_types import ServiceTypes

    service = ddo.get_service(ServiceTypes.ASSET_ACCESS)
    price = int(service.get_price())
    if ocean.accounts.balance(consumer).ocn < price:
        ocean.accounts.request_tokens(consumer, -(-price // 10**18))
    started = time.monotonic()
    agreement_id = ocean.assets.order(did, service.index, consumer)
    while not ocean.agreements.is_access_granted(agreement_id, did, consumer.address):
        if time.monotonic() - started > GRANT_TIMEOUT:
            raise TimeoutError(f"access not granted {GRANT_TIMEOUT} s after the order: "
                               f"{ocean.agreements.status(agreement_id)}")
        time.sleep(0.5)
    return {"agreement_id": agreement_id, "service_index": service.index,
            "granted_after": time.monotonic() - started, "status": ocean.agreements.status(agreement_id)}


def op_squid_consume(devnet: dict, args: dict) -> dict:
    """``ocean.assets.consume(agreement_id, did, service_index, consumer, destination[, index])``: the
    folder squid-py returned and every file in it (name -> hex of its bytes)."""
    import os

    ocean = _ocean(devnet)
    consumer = _keeper_account(devnet, args.get("account", "consumer"))
    service_index = args.get("service_index")
    if service_index is None:
        service_index = _access_index(ocean, args["did"])
    kwargs = {"index": args["index"]} if args.get("index") is not None else {}
    folder = ocean.assets.consume(args["agreement_id"], args["did"], service_index, consumer, args["destination"],
                                  **kwargs)
    files = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as handle:
            files[name] = handle.read().hex()
    return {"folder": folder, "files": files}


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
