#!/usr/bin/env bash
# Headless Chromium and its driver for the status page's browser test (tests/integration/test_status_page.py):
# Debian's `chromium` and `chromium-driver` packages, /usr/bin/chromium and /usr/bin/chromedriver. No
# browser is ever downloaded from elsewhere (selenium is pointed at these two paths).
#
# Idempotent: nothing to do when both are there. Installs them as root with apt-get (about 20 s here from
# the apt cache, once per machine); otherwise, or when apt-get fails, says in one line why and exits 1, and the
# browser test then skips itself naming what is missing.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
DRIVER=/usr/bin/chromedriver

if [[ -x $CHROMIUM && -x $DRIVER ]]; then
  echo "install-chromium: $($CHROMIUM --version 2>/dev/null || echo chromium) and chromedriver are installed"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-chromium: $CHROMIUM or $DRIVER is missing and this is not root: run" \
       "'apt-get install chromium chromium-driver' as root (the browser test is skipped until then)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "install-chromium: no apt-get on this machine: install Chromium and chromedriver at $CHROMIUM and $DRIVER" >&2
  exit 1
fi

started=$SECONDS
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
# Other set-up (docker/provision.sh) may hold the dpkg lock: wait for it rather than fail.
apt_get() { apt-get -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 "$@"; }
if ! apt-cache show chromium-driver >/dev/null 2>&1; then
  apt_get update -qq >/dev/null || true
fi
if ! apt_get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; then
  echo "install-chromium: 'apt-get install chromium chromium-driver' failed (see above)" >&2
  exit 1
fi
if [[ ! -x $CHROMIUM || ! -x $DRIVER ]]; then
  echo "install-chromium: the packages installed but $CHROMIUM or $DRIVER is still missing" >&2
  exit 1
fi
echo "install-chromium: installed $($CHROMIUM --version 2>/dev/null) and chromedriver in $((SECONDS - started)) s"
