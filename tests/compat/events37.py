"""Starts the real ocean-events-handler 0.4.7 for tests/compat/test_brizo.py, run by the Python 3.7
interpreter of the environment env37.py builds from ``requirements-brizo-py37.txt``.

The wheel ships the package but no way to start it (the project's repository starts it with a
``start_events_monitor.py`` beside the package, in its Docker image). This does what that script
does, with the package's own functions only: configuration from ``CONFIG_FILE`` (``keeper.url``,
``keeper.path``, ``[resources] storage.path``), the provider account from ``PROVIDER_ADDRESS``,
``PROVIDER_PASSWORD`` and ``PROVIDER_KEYFILE``, then ``ProviderEventsMonitor`` polling the chain
until the process is stopped.

Python 3.7 syntax only (ruff checks this file as py37: pyproject.toml).
"""

from __future__ import annotations

import sys
import time


def main() -> int:
    from ocean_events_handler.log import setup_logging
    from ocean_events_handler.provider_events_monitor import ProviderEventsMonitor
    from ocean_events_handler.util import get_config, get_keeper_path, get_storage_path, init_account_envvars
    from ocean_keeper.contract_handler import ContractHandler
    from ocean_keeper.keeper import Keeper
    from ocean_keeper.utils import get_account
    from ocean_keeper.web3_provider import Web3Provider

    setup_logging()
    config = get_config()
    ContractHandler.set_artifacts_path(get_keeper_path(config))
    web3 = Web3Provider.get_web3(config.keeper_url)
    keeper = Keeper.get_instance()
    init_account_envvars()  # PROVIDER_* -> PARITY_*, which ocean-keeper's get_account reads
    account = get_account(0)
    if account is None:
        print("events37: no provider account (PROVIDER_ADDRESS, PROVIDER_PASSWORD, PROVIDER_KEYFILE)",
              file=sys.stderr)
        return 2
    monitor = ProviderEventsMonitor(keeper, web3, get_storage_path(config), account)
    monitor.start_agreement_events_monitor()
    print(f"events37: watching agreements for provider {account.address}", file=sys.stderr, flush=True)
    while True:
        time.sleep(5)


if __name__ == "__main__":
    sys.exit(main())
