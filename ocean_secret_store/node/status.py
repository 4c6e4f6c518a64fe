"""A key server's status page: ``GET /status`` (HTML for a person) and ``GET /status.json`` (what it shows).

The page is one self-contained document: its style and its script are inline, allowed by the
Content-Security-Policy through their SHA-256 hashes (no nonce needed: the page never changes), and
it loads nothing else but ``status.json``, once a second, from the node that served it. The script
builds the page from that JSON with DOM calls and ``textContent`` only (no markup from data).

What it shows is public by design, as the page is served on the public port without a signature:
this node's id (node ids are public keys), the package version, uptime, readiness, the size of the
servers set, how many keys this node holds, every peer as this node sees it (connected, suspected,
connecting or disconnected, with round trips and the time since its last frame), the public
operations of the last minutes counted by kind and outcome, and the successful retrievals' latency.
Never a key id (one seen early is what front-running a DID's key needs), a requester's address, a
signature, a peer's network address, or the ids an admin session reports: those are in the
administrator's signed ``GET /admin/status/...`` (docs/http-api.md).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.metadata
import logging
import time
from functools import cache
from typing import Any, Final

from aiohttp import web

from .cluster import ClusterCore

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE", "STATUS_JSON_PATH", "STATUS_PATH", "StatusPage", "peer_state"]

log = logging.getLogger(__name__)

STATUS_PATH: Final = "/status"
STATUS_JSON_PATH: Final = "/status.json"
#: Seconds between two polls of the page's script.
POLL_SECONDS: Final = 1.0
#: Seconds a count of the keys held is reused: a SQLite COUNT(*) per poll of every open page is waste.
KEYS_TTL: Final = 5.0
_DISTRIBUTION: Final = "ocean-secret-store"

#: What the page shows of a peer, from its connection state and whether it is suspected.
PEER_STATES: Final = ("connected", "connecting", "suspected", "disconnected")


def peer_state(connection: str, suspected: bool, lost: bool) -> str:
    """The page's state of a peer from the transport's ``connection`` (``connected``, ``connecting``,
    ``missing``), whether the core suspects it, and whether its link was ever ``lost``:

    * ``connected``: linked and heard from lately;
    * ``suspected``: linked, but silent beyond twice the keep-alive, or hedged around;
    * ``connecting``: not reached yet since this node started (the first dial or its grace runs);
    * ``disconnected``: no link: a dial failed, it did not dial in, or its link was lost and it is
      being re-dialed (so a frozen peer goes suspected, then disconnected, never back to connecting).
    """
    if connection == "connected":
        return "suspected" if suspected else "connected"
    if connection == "connecting" and not lost:
        return "connecting"
    return "disconnected"


@cache
def package_version() -> str:
    try:
        return importlib.metadata.version(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # a checkout that was never installed
        return "unknown"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


class StatusPage:
    """The status page of one node: its JSON snapshot and the two responses (CORS is the caller's)."""

    def __init__(self, core: ClusterCore) -> None:
        self.core = core
        self._started = time.monotonic()
        self._keys: tuple[float, int | None] | None = None  # (when counted, how many)

    async def _keys_held(self) -> int | None:
        now = time.monotonic()
        if self._keys is not None and now - self._keys[0] < KEYS_TTL:
            return self._keys[1]
        try:
            count: int | None = await asyncio.to_thread(self.core.storage.key_count)
        except Exception as exc:  # noqa: BLE001 -- a database that cannot be read shows as unknown, the page stays up
            log.warning("status: the key storage could not be read: %s", type(exc).__name__)
            count = None
        self._keys = (now, count)
        return count

    def peers(self) -> list[dict[str, Any]]:
        """Every peer this node works with, by id, with its state and round trips."""
        core = self.core
        states = core.peer_states()
        suspected = core.suspected()
        now, clock = asyncio.get_running_loop().time(), time.monotonic()
        out = []
        for peer in core.others:
            connection = states.get(peer, "missing")
            heard = core.net.last_received(peer)
            lost = core.links_lost.get(peer)
            rtt = core.liveness.describe(peer)
            out.append({
                "id": "0x" + peer.hex(),
                "state": peer_state(connection, peer in suspected, lost is not None),
                "connection": connection,
                "suspected": peer in suspected,
                "in_servers_set": peer in core.servers_set,
                "srtt_ms": rtt["srtt_ms"], "rttvar_ms": rtt["rttvar_ms"], "samples": rtt["samples"],
                "keepalive_rtt_ms": _ms(core.net.keepalive_rtt(peer)),
                "silent_ms": None if heard is None else _ms(max(now - heard, 0.0)),
                "link_lost_s_ago": None if lost is None else round(clock - lost, 1),
            })
        return out

    async def snapshot(self) -> dict[str, Any]:
        """``GET /status.json``: everything the page shows (module doc: nothing secret)."""
        core = self.core
        readiness = core.readiness()
        peers = self.peers()
        session = core.admin_session
        return {
            "node_id": "0x" + core.node_id.hex(),
            "version": package_version(),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "ready": bool(readiness["ready"]),
            "usable_peers": readiness["usable_peers"],
            "min_ready_peers": readiness["min_ready_peers"],
            "servers_set": len(core.servers_set),
            "in_servers_set": core.node_id in core.servers_set,
            "keys": await self._keys_held(),
            "records_to_migrate": core.storage.records_to_migrate(),
            "sessions": {"running": core.session_cap.active, "limit": core.session_cap.limit},
            "admin_session": None if session is None else session.request.operation,
            "peers": peers,
            "peer_states": {state: sum(p["state"] == state for p in peers) for state in PEER_STATES},
            "operations": core.metrics.recent.summary(),
            "poll_seconds": POLL_SECONDS,
        }

    async def json_response(self) -> web.Response:
        response = web.json_response(await self.snapshot())
        response.headers.update(_COMMON_HEADERS)
        return response

    @staticmethod
    def html_response() -> web.Response:
        response = web.Response(body=PAGE.encode(), content_type="text/html", charset="utf-8")
        response.headers.update(_COMMON_HEADERS)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Frame-Options"] = "DENY"
        return response


_COMMON_HEADERS: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                          "Referrer-Policy": "no-referrer"}

_STYLE: Final = """
:root { color-scheme: light; --ok: #1a7f37; --bad: #cf222e; --warn: #bf8700; --muted: #57606a;
  --line: #d0d7de; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 1.25rem 1.5rem 2rem; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: #1f2328; background: #fff; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .75rem; margin-bottom: 1rem; }
h1 { font-size: 1.35rem; margin: 0; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
code, .id { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: .1rem .6rem; border-radius: 1rem; font-weight: 600; font-size: 12.5px;
  color: #fff; background: var(--muted); }
.badge.ok { background: var(--ok); } .badge.bad { background: var(--bad); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: .6rem; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .75rem; background: var(--bg); }
.card .label { color: var(--muted); font-size: 12px; }
.card .value { font-size: 1.2rem; font-weight: 600; }
table { border-collapse: collapse; width: 100%; max-width: 68rem; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid var(--line); vertical-align: middle; }
th { font-weight: 600; color: var(--muted); font-size: 12.5px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.dot { display: inline-block; width: .8rem; height: .8rem; border-radius: 50%; background: var(--muted); }
tr.peer.state-connected .dot { background: var(--ok); }
tr.peer.state-connecting .dot { background: var(--warn); }
tr.peer.state-suspected .dot, tr.peer.state-disconnected .dot { background: var(--bad); }
tr.peer.state-suspected, tr.peer.state-disconnected { background: #ffebe9; }
tr.peer.state-suspected .state, tr.peer.state-disconnected .state { color: var(--bad); font-weight: 600; }
tr.peer.state-connected .state { color: var(--ok); }
.chip { display: inline-block; margin: 0 .3rem .1rem 0; padding: 0 .45rem; border-radius: .7rem;
  background: var(--bg); border: 1px solid var(--line); font-size: 12px; }
.chip.ok { border-color: var(--ok); color: var(--ok); }
.chip.bad { border-color: var(--bad); color: var(--bad); }
.bar { height: .6rem; border-radius: 3px; background: #54aeff; min-width: 1px; }
.barcell { width: 40%; }
#stale { display: none; margin: 0 0 1rem; padding: .5rem .75rem; border-radius: 6px; background: #ffebe9;
  color: var(--bad); border: 1px solid var(--bad); }
body.stale #stale { display: block; }
footer { margin-top: 2rem; color: var(--muted); font-size: 12px; }
"""

_SCRIPT: Final = """
(function () {
  "use strict";
  var renders = 0;
  var lastGood = null;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function byId(id) { return document.getElementById(id); }
  function setText(id, text) { byId(id).textContent = String(text); }
  function ms(value) {
    if (value === null || value === undefined) { return "\\u2013"; }
    return (value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0)) + " ms";
  }
  function since(value) {
    if (value === null || value === undefined) { return "\\u2013"; }
    return value < 1000 ? value.toFixed(0) + " ms ago" : (value / 1000).toFixed(1) + " s ago";
  }
  function uptime(seconds) {
    var s = Math.floor(seconds), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60);
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
  }
  function shortId(id) { return id.slice(0, 10) + "\\u2026" + id.slice(-6); }
  function replaceRows(tbody, rows) {
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    rows.forEach(function (row) { tbody.appendChild(row); });
  }

  function renderPeers(peers) {
    var rows = peers.map(function (peer) {
      var tr = el("tr", "peer state-" + peer.state);
      tr.dataset.peer = peer.id;
      tr.dataset.state = peer.state;
      var dot = el("td");
      dot.appendChild(el("span", "dot"));
      tr.appendChild(dot);
      var id = el("td", "id", shortId(peer.id));
      id.title = peer.id + (peer.in_servers_set ? "" : " (not in the servers set)");
      tr.appendChild(id);
      tr.appendChild(el("td", "state", peer.state));
      tr.appendChild(el("td", "num", peer.samples ? ms(peer.srtt_ms) + " \\u00b1 " + ms(peer.rttvar_ms) : "\\u2013"));
      tr.appendChild(el("td", "num", peer.samples));
      tr.appendChild(el("td", "num", ms(peer.keepalive_rtt_ms)));
      tr.appendChild(el("td", "num", peer.silent_ms === null && peer.link_lost_s_ago !== null ?
        "link lost " + peer.link_lost_s_ago.toFixed(0) + " s ago" : since(peer.silent_ms)));
      return tr;
    });
    if (!rows.length) {
      var empty = el("tr");
      var cell = el("td", "muted", "no peers: a cluster of one");
      cell.colSpan = 7;
      empty.appendChild(cell);
      rows.push(empty);
    }
    replaceRows(byId("peers").tBodies[0], rows);
  }

  function renderOperations(ops) {
    setText("ops-window", ops.window_minutes);
    var kinds = Object.keys(ops.by_kind);
    var rows = kinds.map(function (kind) {
      var outcomes = ops.by_kind[kind];
      var total = 0;
      Object.keys(outcomes).forEach(function (o) { total += outcomes[o]; });
      var tr = el("tr", "operation");
      tr.dataset.kind = kind;
      tr.appendChild(el("td", "id", kind));
      tr.appendChild(el("td", "num", total));
      tr.appendChild(el("td", "num", outcomes.ok || 0));
      var others = el("td");
      Object.keys(outcomes).forEach(function (outcome) {
        if (outcome !== "ok") { others.appendChild(el("span", "chip bad", outcome + " " + outcomes[outcome])); }
      });
      tr.appendChild(others);
      return tr;
    });
    if (!rows.length) {
      var empty = el("tr");
      var cell = el("td", "muted", "none in this window");
      cell.colSpan = 4;
      empty.appendChild(cell);
      rows.push(empty);
    }
    replaceRows(byId("operations").tBodies[0], rows);
    setText("ops-total", ops.total);
  }

  function renderLatency(latency) {
    var minutes = latency.minutes;
    var worst = 0;
    minutes.forEach(function (m) { if (m.p95_ms !== null && m.p95_ms > worst) { worst = m.p95_ms; } });
    var rows = minutes.map(function (m) {
      var tr = el("tr", "minute");
      var started = new Date(m.started * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
      tr.appendChild(el("td", "", m.minutes_ago === 0 ? started + " (this minute)" : started));
      tr.appendChild(el("td", "num", m.retrievals));
      tr.appendChild(el("td", "num", ms(m.p50_ms)));
      tr.appendChild(el("td", "num", ms(m.p95_ms)));
      var cell = el("td", "barcell");
      if (m.p95_ms !== null && worst > 0) {
        var bar = el("div", "bar");
        bar.style.width = Math.max(100 * m.p95_ms / worst, 1).toFixed(1) + "%";
        cell.appendChild(bar);
      }
      tr.appendChild(cell);
      return tr;
    });
    replaceRows(byId("latency").tBodies[0], rows);
    var all = latency.overall;
    setText("latency-overall", all.retrievals ? all.retrievals + " retrievals, p50 " + ms(all.p50_ms) +
            ", p95 " + ms(all.p95_ms) + ", max " + ms(all.max_ms) : "no successful retrieval");
    setText("latency-window", latency.window_minutes);
  }

  function render(s) {
    document.title = "Key server " + shortId(s.node_id);
    setText("node-short", shortId(s.node_id));
    setText("node-id", s.node_id);
    var ready = byId("ready");
    ready.textContent = s.ready ? "ready" : "not ready";
    ready.className = "badge " + (s.ready ? "ok" : "bad");
    setText("version", s.version);
    setText("uptime", uptime(s.uptime_s));
    setText("servers-set", s.servers_set + (s.in_servers_set ? "" : " (not a member)"));
    setText("keys", s.keys === null ? "unknown" : s.keys);
    setText("sessions", s.sessions.running + (s.sessions.limit ? " / " + s.sessions.limit : ""));
    setText("usable", s.usable_peers + " of " + s.peers.length + " (needs " + s.min_ready_peers + ")");
    setText("admin", s.admin_session || "none");
    renderPeers(s.peers);
    renderOperations(s.operations);
    renderLatency(s.operations.retrieval_latency);
    lastGood = new Date();
    document.body.classList.remove("stale");
    setText("updated", lastGood.toLocaleTimeString());
    renders += 1;
    document.body.dataset.renders = String(renders);
  }

  function stale(reason) {
    document.body.classList.add("stale");
    setText("stale", "No answer from this node (" + reason + ")" +
            (lastGood ? "; the figures below are from " + lastGood.toLocaleTimeString() : "") + ".");
  }

  function poll() {
    fetch("status.json", {cache: "no-store", credentials: "same-origin"})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(render)
      .catch(function (error) { stale(error.message || String(error)); })
      .then(function () { window.setTimeout(poll, POLL_MS); });
  }
  poll();
})();
""".replace("POLL_MS", str(int(POLL_SECONDS * 1000)))

_BODY: Final = """
<header>
  <h1>Key server <span class="id" id="node-short">&hellip;</span></h1>
  <span id="ready" class="badge">loading</span>
  <span class="muted">updated <span id="updated">never</span></span>
</header>
<div id="stale" role="alert"></div>
<section class="cards">
  <div class="card"><div class="label">Version</div><div class="value" id="version">&ndash;</div></div>
  <div class="card"><div class="label">Uptime</div><div class="value" id="uptime">&ndash;</div></div>
  <div class="card"><div class="label">Servers set</div><div class="value" id="servers-set">&ndash;</div></div>
  <div class="card"><div class="label">Keys held</div><div class="value" id="keys">&ndash;</div></div>
  <div class="card"><div class="label">Usable peers</div><div class="value" id="usable">&ndash;</div></div>
  <div class="card"><div class="label">Sessions running</div><div class="value" id="sessions">&ndash;</div></div>
  <div class="card"><div class="label">Admin session</div><div class="value" id="admin">&ndash;</div></div>
</section>
<h2>The cluster as this node sees it</h2>
<p class="muted">connected: linked and heard from lately &middot; suspected: linked but silent for more than two
  keep-alive intervals, or too slow to answer &middot; disconnected: no link &middot; connecting: not reached yet
  since this node started</p>
<table id="peers">
  <thead><tr><th></th><th>Node</th><th>State</th><th class="num">Request RTT</th><th class="num">Samples</th>
    <th class="num">Keep-alive RTT</th><th class="num">Last frame</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Operations of the last <span id="ops-window">&ndash;</span> minutes (<span id="ops-total">0</span>)</h2>
<table id="operations">
  <thead><tr><th>Kind</th><th class="num">Total</th><th class="num">ok</th><th>Other outcomes</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Retrieval latency, last <span id="latency-window">&ndash;</span> minutes</h2>
<p class="muted" id="latency-overall"></p>
<table id="latency">
  <thead><tr><th>Minute from</th><th class="num">Retrievals</th><th class="num">p50</th><th class="num">p95</th>
    <th></th></tr></thead>
  <tbody></tbody>
</table>
<footer>
  Node <span class="id" id="node-id"></span>. Operations are counted by kind and outcome only: no key id,
  address or signature is shown here. Machine-readable: <code>status.json</code>; metrics: <code>/metrics</code>.
  <noscript>This page is drawn by its script; the same figures are in status.json.</noscript>
</footer>
"""

#: The whole page: nothing but itself and ``status.json`` is loaded.
PAGE: Final = (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    '<link rel="icon" href="data:,">\n'  # no favicon: the browser asks for none (it is not an API path)
    "<title>Key server status</title>\n"
    f"<style>{_STYLE}</style>\n</head>\n<body>{_BODY}<script>{_SCRIPT}</script>\n</body>\n</html>\n"
)


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


#: Only the page's own style and script run, and its script may only fetch from this node.
CONTENT_SECURITY_POLICY: Final = (
    f"default-src 'none'; script-src {_sha256_source(_SCRIPT)}; style-src {_sha256_source(_STYLE)}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
