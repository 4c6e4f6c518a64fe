"""The container health check: ``python -m ocean_secret_store.healthcheck`` exits 0 when the role in
the container is ready, 1 otherwise, with one short line on stderr saying why.

Standard library only, and nothing of the package is imported, so a check costs one interpreter
start (Docker runs it every few seconds). Settings, from the environment:

``OCEAN_SS_HEALTH_URL``
    the URL to GET (default ``http://127.0.0.1:8082/ready``, the key server's readiness route: 200
    when connected to the peers it needs, 503 until then). A 2xx answer within the time limit is
    healthy. ``none`` means always healthy: for one-shot roles that serve nothing.
``OCEAN_SS_HEALTH_CA``
    a CA certificate file (PEM) for an ``https`` URL. The chain is verified against it; the host
    name is not checked when the URL names a loopback address (the certificate names the node's
    host, not 127.0.0.1).
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Final

URL_ENV: Final = "OCEAN_SS_HEALTH_URL"
CA_ENV: Final = "OCEAN_SS_HEALTH_CA"
DEFAULT_URL: Final = "http://127.0.0.1:8082/ready"
ALWAYS_HEALTHY: Final = "none"
TIMEOUT: Final = 3.0
_REASON_CHARS: Final = 200


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _context(url: urllib.parse.SplitResult, ca_file: str | None) -> ssl.SSLContext | None:
    if url.scheme != "https":
        return None
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    if ca_file and _is_loopback(url.hostname or ""):
        context.check_hostname = False
    return context


def _short(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 3] + "..."


def check(environ: Mapping[str, str] | None = None, timeout: float = TIMEOUT) -> str | None:
    """None when healthy, else the reason (one short line)."""
    env = os.environ if environ is None else environ
    target = env.get(URL_ENV, "").strip() or DEFAULT_URL
    if target.lower() == ALWAYS_HEALTHY:
        return None
    url = urllib.parse.urlsplit(target)
    if url.scheme not in ("http", "https") or not url.hostname:
        return f"{URL_ENV} is not an http(s) URL: {_short(target)}"
    ca_file = env.get(CA_ENV, "").strip() or None
    try:
        context = _context(url, ca_file)
        request = urllib.request.Request(target, method="GET", headers={"User-Agent": "ocean-ss-healthcheck"})
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"{target} answered {exc.code} {_short(exc.reason)}"
    except urllib.error.URLError as exc:
        return f"{target}: {_short(exc.reason)}"
    except (OSError, http.client.HTTPException, ValueError) as exc:  # timeouts, resets, garbage, a bad CA file
        return f"{target}: {_short(exc) or type(exc).__name__}"
    if not 200 <= status < 300:
        return f"{target} answered {status}"
    return None


def main() -> int:
    reason = check()
    if reason is None:
        return 0
    print(f"unhealthy: {reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
