# One-command set-up: `make demo` runs the main job, `make test` the test suite; both run
# `make setup` first, which builds .venv and installs anvil into tools/node_modules.
# The stamp is written only after every step succeeded, so a half-done set-up is redone.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
PYTEST_ARGS ?=

.PHONY: setup demo lint compat-env test bench clean docker-image

setup: $(STAMP)

$(STAMP): pyproject.toml tools/package.json tools/package-lock.json
	@rm -f $(STAMP)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# npm ci rejects a lock that (like npm itself) records only this platform's optional binary;
	# install from the lock without rewriting it instead.
	cd tools && npm install --no-save --no-audit --no-fund --loglevel=error
	$(PY) -m ocean_secret_store.cli anvil-path --check
	@touch $(STAMP)

demo: setup
	$(PY) -m ocean_secret_store.cli demo

# The quality gates: zero findings, or the tests do not run (rules and reasons in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The compatibility suite's Python 3.7 environments (tests/compat/): the real squid-py 0.9.3 stack,
# built once into ~/.cache/ocean-secret-store/py37-<hash of tests/compat/requirements-py37.txt>, and
# the real Brizo 0.9.7 and events handler 0.4.7, into py37-brizo-<hash of requirements-brizo-py37.txt>;
# each reused while its file is unchanged. A failed build fails here; no Python 3.7 on the machine is
# not a failure (the suite is then skipped, and says why).
compat-env: setup
	$(PY) tests/compat/env37.py build

test: lint compat-env
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/crypto.py

# The Docker image of every role (docker/README.md): ocean-secret-store:latest, built with no
# network at `docker build` from a wheelhouse and base image cached in ~/.cache/ocean-secret-store/docker.
docker-image: setup
	$(PY) docker/build.py

clean:
	rm -rf $(VENV) tools/node_modules .pytest_cache .hypothesis
