"""The node's CORS policy: Parity's (jsonrpc-server-utils') decision per Origin and Host, and the setting."""

from __future__ import annotations

import pytest

from ocean_secret_store.node.cors import CorsOutcome, CorsPolicy

A, N_, R = CorsOutcome.ALLOW, CorsOutcome.NOT_REQUIRED, CorsOutcome.REJECT
CORS = [
    # config, origin, host, outcome, Access-Control-Allow-Origin
    ("none", None, None, N_, None),
    ("none", None, "127.0.0.1:8082", N_, None),
    ("none", "http://evil.example", "127.0.0.1:8082", R, None),
    ("none", "http://127.0.0.1:8082", "127.0.0.1:8082", N_, None),
    ("none", "http://127.0.0.1:8083", "127.0.0.1:8082", R, None),
    ("none", "http://subdomain.somedomain.io", "somedomain.io", R, None),
    ("none", "http://somedomain.io:8080", "somedomain.io", R, None),
    ("none", "null", "127.0.0.1:8082", R, None),
    ("none", "", "127.0.0.1:8082", R, None),
    ("*", "http://parity.io", None, A, "http://parity.io"),
    ("all", "https://parity.io:8443/some/path", None, A, "https://parity.io:8443"),
    ("any", "HTTP://Parity.IO:0080", None, A, "http://parity.io:80"),
    ("*", "parity.io", None, A, "http://parity.io"),
    ("*", "chrome-extension://abc", None, A, "chrome-extension://abc"),
    ("*", "null", None, A, None),
    ("*", "http://localhost:3000", "localhost:3000", N_, None),
    ("http://ethereum.org,http://parity.io", "http://parity.io", None, A, "http://parity.io"),
    ("http://ethereum.org", "http://parity.io", None, R, None),
    ("http://parity.io", "http://PARITY.io", None, A, "http://parity.io"),
    ("parity.io", "http://parity.io", None, A, "http://parity.io"),
    ("parity.io", "https://parity.io", None, R, None),
    ("null", "null", None, A, None),
    ("null", "http://parity.io", None, R, None),
    ("http://parity.io", "null", None, R, None),
    ("http://parity.io,*", "http://other.io", None, A, "http://other.io"),
    ("http://parity.io,*", "null", None, R, None),
    ("http://*.io,chrome-extension://*", "http://parity.io", None, A, "http://parity.io"),
    ("http://*.io,chrome-extension://*", "http://parity.iot", None, R, None),
    ("http://*.io,chrome-extension://*", "chrome-extension://test", None, A, "chrome-extension://test"),
    ("http://localhost:*", "http://localhost:3000", None, A, "http://localhost:3000"),
    ("http://localhost:*", "http://localhost.evil.io:3000", None, R, None),
    ("http://app?.io", "http://app1.io", None, A, "http://app1.io"),
    # The list is split on every comma (as Parity does), so "{a,b}" becomes two literal entries.
    ("http://{a,b}.io", "http://b.io", None, R, None),
    ("http://{a,b}.io", "http://b}.io", None, A, "http://b}.io"),
    ("http://[a-c].io", "http://B.io", None, A, "http://b.io"),
    ("http://[!a-c].io", "http://b.io", None, R, None),
    ("http://[!a-c].io", "http://d.io", None, A, "http://d.io"),
    ("http://\\*.io", "http://*.io", None, A, "http://*.io"),
    ("http://\\*.io", "http://a.io", None, R, None),
    # Patterns globset refuses fall back to ASCII-caseless equality.
    ("http://[a", "http://[A", None, A, "http://[a"),
    ("http://{a", "http://a", None, R, None),
    ("http://a}", "http://A}", None, A, "http://a}"),
    ("http://[c-a]", "http://b", None, R, None),
    ("http://a\\", "http://a\\", None, A, "http://a\\"),
    ("http://a.io, http://b.io", "http://b.io", None, A, "http://b.io"),
    # Header values that are not visible ASCII are treated as absent, as http::HeaderValue::to_str does.
    ("none", "http://é.example", None, N_, None),
]


@pytest.mark.parametrize(("config", "origin", "host", "outcome", "header"), CORS)
def test_cors_decisions(config: str, origin: str | None, host: str | None, outcome: CorsOutcome,
                        header: str | None) -> None:
    decision = CorsPolicy.parse(config).decide(origin, host)
    assert decision.outcome is outcome
    assert decision.allow_origin == header
    assert decision.rejected == (outcome is CorsOutcome.REJECT)


@pytest.mark.parametrize(
    ("entries", "origin", "outcome"),
    [
        (["http://{a,b}.io"], "http://b.io", A),
        (["http://{a,b}.io"], "http://c.io", R),
        (["http://{a,,b}.io"], "http://.io", A),
        # Nested alternatives are refused by globset: the entry is compared literally.
        (["http://{a,{b}}"], "http://{A,{b}}", A),
        (["http://{a,{b}}"], "http://a", R),
        (["http://[]a].io"], "http://].io", A),
        (["http://[-a].io"], "http://-.io", A),
        (["http://[a-].io"], "http://-.io", A),
        (["http://[a-c-e].io"], "http://d.io", A),
        (["http://[^a].io"], "http://a.io", R),
        (["http://a**.io"], "http://a/b/c.io", A),
        (None, "http://a.io", A),
        ([], "http://a.io", R),
        (["*"], "http://a.io", A),
    ],
)
def test_cors_policy_from_entries(entries: list[str] | None, origin: str, outcome: CorsOutcome) -> None:
    assert CorsPolicy.from_entries(entries).decide(origin, None).outcome is outcome


def test_cors_policy_equality_ignores_compiled_patterns() -> None:
    assert CorsPolicy.parse("http://*.io") == CorsPolicy.parse("http://*.io") == CorsPolicy(origins=("http://*.io",))
    assert hash(CorsPolicy.parse("http://*.io")) == hash(CorsPolicy(origins=("http://*.io",)))
    assert CorsPolicy.parse("*") == CorsPolicy.from_entries(None) == CorsPolicy(allow_all=True)
    assert CorsPolicy.parse("none") == CorsPolicy.from_entries([]) == CorsPolicy()


@pytest.mark.parametrize("setting", ["none", "*", "http://a.io", "http://a.io,null,*.b.io,*"])
def test_cors_setting_round_trips_through_str(setting: str) -> None:
    policy = CorsPolicy.parse(setting)
    assert CorsPolicy.parse(str(policy)) == policy
    assert str(CorsPolicy.parse(" http://a.io , null ")) == "http://a.io,null"


@pytest.mark.parametrize("setting", ["", " ", "a,,b", "a,", "http://a .io", "http://a.io,\tnull x"])
def test_malformed_cors_settings_are_refused(setting: str) -> None:
    with pytest.raises(ValueError, match="comma-separated origins"):
        CorsPolicy.parse(setting)
