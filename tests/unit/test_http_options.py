"""The enterprise HTTP options: validation naming the key, the web admin's
narrower rules, what a poll resolves them to, and secrets kept out of sight."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aggregator.config import parse_source
from aggregator.connector import PollContext, Resources
from aggregator.exceptions import ConfigError, FetchError
from aggregator.secrets import SecretError, is_secret_field
from connectors.feed import FeedOptions
from connectors.http import (
    BasicAuth,
    NegotiateAuth,
    NtlmAuth,
    TransportProfile,
    _offered,
    _tls_problem,
)
from connectors.httpsource import credentials, request_args, transport

SECRET = "S3cret-never-shown"


def raw(**options: object) -> dict[str, object]:
    return {"id": "wiki", "kind": "feed", "url": "https://wiki.intranet/feed", **options}


def options_of(**options: object) -> FeedOptions:
    return FeedOptions.model_validate({"url": "https://wiki.intranet/feed", **options})


def problems(origin: str = "file", **options: object) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_source(raw(**options), "sources[0]", origin)  # type: ignore[arg-type]
    return err.value.problems


def context(base_dir: Path, *, web_made: bool = False) -> PollContext:
    async def run_cpu(fn: Any, *args: Any) -> Any:
        return fn(*args)

    return PollContext(
        "wiki", datetime.now(UTC), Resources(), run_cpu, base_dir=base_dir, web_made=web_made
    )


# --- validation names the key ----------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"auth": "ntlm"}, "sources[0].auth: ntlm needs username and password"),
        ({"auth": "kerberos"}, "sources[0].auth: Input should be 'basic', 'ntlm' or 'negotiate'"),
        (
            {"auth": "negotiate", "token": "env:T"},
            "sources[0].auth: token is a bearer token: negotiate takes username and password",
        ),
        ({"client_key": "k.pem"}, "sources[0].client_key: needs client_cert"),
        ({"client_key_password": "env:K"}, "sources[0].client_key_password: needs client_cert"),
        (
            {"client_cert": "env:CERT"},
            "sources[0].client_cert: a file path (relative to the config file), "
            "not a reference or URL",
        ),
        ({"ca_bundle": " "}, "sources[0].ca_bundle: must be a file path"),
        (
            {"proxy": f"http://me:{SECRET}@proxy.corp:3128"},
            "sources[0].proxy: credentials do not belong in the proxy URL: "
            "use proxy_username and proxy_password",
        ),
        (
            {"proxy": "socks5://proxy.corp:1080"},
            "sources[0].proxy: must be http://host:port or https://host:port",
        ),
        (
            {"proxy": "http://proxy.corp:3128/path"},
            "sources[0].proxy: must be just http(s)://host:port, without a path",
        ),
        ({"proxy": "http://proxy.corp:99999"}, "sources[0].proxy: not a valid URL"),
        ({"proxy_username": "me"}, "sources[0].proxy_username: needs proxy"),
        (
            {"proxy": "http://p:3128", "proxy_username": "me"},
            "sources[0].proxy_password: required when proxy_username is set",
        ),
        (
            {"proxy": "http://p:3128", "proxy_password": "env:P"},
            "sources[0].proxy_password: needs proxy_username",
        ),
        (
            {"proxy": "http://p:3128", "proxy_username": "me", "proxy_password": SECRET},
            "sources[0].proxy_password: must be env:NAME or file:PATH, never the secret itself",
        ),
        (
            {"headers": {"Proxy-Authorization": "Basic x"}},
            "sources[0].headers: Proxy-Authorization cannot be set here: "
            "use proxy_username and proxy_password (an env: or file: reference)",
        ),
    ],
)
def test_bad_options_are_refused_naming_the_key(options: dict[str, Any], expected: str) -> None:
    found = problems(**options)
    assert expected in found, found
    assert all(SECRET not in problem for problem in found)


@pytest.mark.parametrize("name", ["auth", "ca_bundle", "proxy"])
def test_network_options_are_refused_for_local_files(name: str) -> None:
    value = {"auth": "negotiate", "ca_bundle": "ca.pem", "proxy": "http://p:3128"}[name]
    with pytest.raises(ConfigError) as err:
        parse_source(
            {"id": "w", "kind": "feed", "url": "file:feeds/a.xml", name: value}, "s", "file"
        )
    assert err.value.problems == [f"s.{name}: only for http(s) URLs"]


def test_a_config_file_source_may_set_every_option() -> None:
    source = parse_source(
        raw(
            auth="ntlm",
            username="CORP\\alice",
            password="env:WIKI_PASSWORD",
            ca_bundle="tls/ca.pem",
            client_cert="tls/client.pem",
            client_key="tls/client.key",
            client_key_password="file:tls/key-password",
            proxy="https://proxy.corp:3128",
            proxy_username="svc-tidings",
            proxy_password="env:PROXY_PASSWORD",
        ),
        "sources[0]",
        "file",
    )
    assert isinstance(source.options, FeedOptions) and source.options.auth == "ntlm"
    assert parse_source(raw(auth="negotiate"), "s", "file").options.auth == "negotiate"  # type: ignore[attr-defined]


def test_secret_options_are_marked_for_the_admin_and_the_schema() -> None:
    for name in ("password", "token", "client_key_password", "proxy_password"):
        assert is_secret_field(FeedOptions, name)
    for name in ("ca_bundle", "client_cert", "client_key", "proxy", "proxy_username", "auth"):
        assert not is_secret_field(FeedOptions, name)


# --- sources made in the web admin --------------------------------------------------------


@pytest.mark.parametrize("name", ["ca_bundle", "client_cert", "client_key"])
def test_web_made_sources_may_not_name_files(name: str) -> None:
    options: dict[str, object] = {name: "/etc/ssl/private/tidings.pem"}
    if name == "client_key":
        options["client_cert"] = "/etc/ssl/tidings.pem"
    found = problems("db", **options)
    assert f"sources[0].{name}: only sources in the config file may name files" in found


def test_web_made_sources_may_not_use_the_servers_own_kerberos_credentials() -> None:
    assert problems("db", auth="negotiate") == [
        "sources[0].auth: negotiate without username and password uses the server's own "
        "Kerberos credentials; only sources in the config file may do that"
    ]
    source = parse_source(
        raw(auth="negotiate", username="CORP\\svc", password="env:TIDINGS_SECRET_WIKI"), "s", "db"
    )
    assert source.origin == "db"


def test_web_made_sources_may_use_a_proxy_with_their_own_secret_references() -> None:
    ok = raw(
        proxy="http://proxy.corp:3128",
        proxy_username="svc",
        proxy_password="env:TIDINGS_SECRET_PROXY",
    )
    assert parse_source(ok, "s", "db").options.proxy == "http://proxy.corp:3128"  # type: ignore[attr-defined]
    found = problems(
        "db", proxy="http://proxy.corp:3128", proxy_username="svc", proxy_password="env:HOME"
    )
    assert found == [
        "sources[0].proxy_password: sources made in the web admin may only use "
        "env:TIDINGS_SECRET_* references (the server's other variables and files are not "
        "for admins to send away)"
    ]


# --- what a poll resolves -------------------------------------------------------------------


async def test_credentials_follow_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIKI_PASSWORD", SECRET)
    ctx = context(tmp_path)
    login = {"username": "CORP\\alice", "password": "env:WIKI_PASSWORD"}
    assert await credentials(options_of(**login), ctx) == BasicAuth("CORP\\alice", SECRET)
    ntlm = options_of(auth="ntlm", **login)
    assert await credentials(ntlm, ctx) == NtlmAuth("CORP\\alice", SECRET)
    negotiate = options_of(auth="negotiate", **login)
    assert await credentials(negotiate, ctx) == NegotiateAuth("CORP\\alice", SECRET)
    ticket_cache = options_of(auth="negotiate")
    assert await credentials(ticket_cache, ctx) == NegotiateAuth()
    with pytest.raises(SecretError, match="only sources in the config file"):
        await credentials(ticket_cache, context(tmp_path, web_made=True))


async def test_transport_resolves_paths_from_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tls").mkdir()
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / "tls" / name).write_text("-----BEGIN-----\n")
    monkeypatch.setenv("KEY_PASSWORD", SECRET)
    monkeypatch.setenv("PROXY_PASSWORD", SECRET)
    options = options_of(
        ca_bundle="tls/ca.pem",
        client_cert="tls/client.pem",
        client_key=str(tmp_path / "tls" / "client.key"),  # absolute stays absolute
        client_key_password="env:KEY_PASSWORD",
        proxy="http://proxy.corp:3128",
        proxy_username="svc",
        proxy_password="env:PROXY_PASSWORD",
    )
    args = await request_args(options, context(tmp_path))
    profile = args["transport"]
    assert isinstance(profile, TransportProfile)
    assert profile.ca_bundle == tmp_path / "tls" / "ca.pem"
    assert profile.client_cert == tmp_path / "tls" / "client.pem"
    assert profile.client_key == tmp_path / "tls" / "client.key"
    assert profile.client_key_password == SECRET and profile.proxy_password == SECRET
    assert len(profile.files_version) == 3
    assert SECRET not in repr(profile) and SECRET not in repr(args)


async def test_transport_is_none_without_tls_or_proxy_options(tmp_path: Path) -> None:
    args = await request_args(options_of(), context(tmp_path))
    assert args == {"headers": {}, "auth": None, "allow_link_local": False, "transport": None}


async def test_a_missing_file_is_the_sources_error_naming_the_option(tmp_path: Path) -> None:
    options = options_of(ca_bundle="nowhere/ca.pem")
    with pytest.raises(FetchError) as err:
        await transport(options, context(tmp_path))
    assert (
        str(err.value)
        == f"ca_bundle {tmp_path / 'nowhere' / 'ca.pem'} of source wiki: no such file"
    )
    (tmp_path / "adir").mkdir()
    with pytest.raises(FetchError, match=r"^ca_bundle .*adir of source wiki: not a file$"):
        await transport(options_of(ca_bundle="adir"), context(tmp_path))


async def test_web_made_sources_are_refused_files_at_poll_time_too(tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_text("x")
    options = options_of(client_cert="client.pem")
    with pytest.raises(FetchError, match=r"^client_cert: sources made in the web admin"):
        await transport(options, context(tmp_path, web_made=True))


# --- secrets out of sight, and the small parsers ---------------------------------------------


def test_passwords_stay_out_of_repr() -> None:
    shown = [
        repr(NtlmAuth("CORP\\alice", SECRET)),
        repr(NegotiateAuth("alice@CORP.EXAMPLE", SECRET)),
        repr(TransportProfile(client_key_password=SECRET, proxy_password=SECRET)),
    ]
    assert all(SECRET not in text for text in shown)
    assert "alice" in shown[0]


def test_challenges_are_read_per_scheme() -> None:
    import httpx2

    response = httpx2.Response(
        401,
        headers=[
            ("WWW-Authenticate", 'Negotiate, NTLM TlRMTVNTUAACAAAA, Basic realm="a, b"'),
            ("WWW-Authenticate", 'Digest realm="x", nonce="y"'),
        ],
    )
    offers = _offered(response)
    assert offers["negotiate"] is None and offers["ntlm"] == b"NTLMSSP\x00\x02\x00\x00\x00"
    assert set(offers) == {"negotiate", "ntlm", "basic", "digest"}


def test_tls_failures_are_told_in_words_an_admin_can_act_on() -> None:
    verify = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local "
    verify += "issuer certificate (_ssl.c:1006)"
    assert _tls_problem(verify, "wiki.corp") == (
        "the TLS certificate of wiki.corp is not trusted (unable to get local issuer "
        "certificate); set ca_bundle to the CA that issued it"
    )
    required = "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"
    assert _tls_problem(required, "wiki.corp") == (
        "wiki.corp requires a TLS client certificate (client_cert)"
    )
    assert _tls_problem("[SSL: SSLV3_ALERT_BAD_CERTIFICATE] bad", "w") == (
        "w refused the TLS client certificate"
    )
    assert _tls_problem("Connection refused", "w") is None
