"""IMAP XOAUTH2 (issue 12) against a real Dovecot whose oauth2 passdb asks a
loopback token introspection endpoint (tests/dovecot.py), and Microsoft 365
client-credentials tokens through MSAL.

Tested at the boundary, and said so: Microsoft Entra ID itself cannot run
here, so its token endpoint is a stand-in on loopback HTTPS that speaks the
OAuth 2 client-credentials protocol (the OpenID discovery document and a token
endpoint taking client_id, client_secret and scope). MSAL, which talks to it,
and Dovecot, which checks the token it hands out, are both real. What Entra ID
would add (its claims, its error texts, Exchange's mailbox permissions) is not
tested here."""

from __future__ import annotations

import json
import secrets
import ssl
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import trustme

from aggregator.config import parse_source
from aggregator.exceptions import ConfigError, ConnectorError
from aggregator.registry import connector_class
from connectors.imap import ImapConnector, ImapOptions
from connectors.microsoft import MicrosoftOptions, access_token
from tests.dovecot import Dovecot
from tests.integration.test_imap import Tidings, ctx, mail
from tests.support import FeedServer, Resource
from web.admin_sources import form_fields

pytestmark = pytest.mark.integration

TOKEN_ENV = "TIDINGS_TEST_IMAP_TOKEN"
SECRET_ENV = "TIDINGS_TEST_ENTRA_SECRET"
TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "0d4f9a3e-7b1c-4e55-9f00-1c2d3e4f5a6b"


@pytest.fixture
def tidings() -> Iterator[list[Tidings]]:
    made: list[Tidings] = []
    yield made
    for t in made:
        t.store.close()


def xoauth2(port: int, folders: list[str], **extra: Any) -> ImapConnector:
    options = {"host": "127.0.0.1", "port": port, "tls": "none", "username": "alice"}
    return ImapConnector(
        ImapOptions.model_validate({**options, "auth": "xoauth2", "folders": folders, **extra})
    )


# --- a token reference ------------------------------------------------------


async def test_xoauth2_with_a_token_the_server_accepts_syncs(
    dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = f"ya29.{secrets.token_urlsafe(24)}"
    dovecot.tokens[token] = "alice"
    monkeypatch.setenv(TOKEN_ENV, token)
    for n in range(2):
        dovecot.append("alice", "Oauth", mail(n, f"Oauth {n}"))

    result = await xoauth2(dovecot.port, ["Oauth"], token=f"env:{TOKEN_ENV}").poll(
        None, ctx(tmp_path)
    )
    assert sorted(e.title for e in result.events) == ["Oauth 0", "Oauth 1"]
    # Dovecot asked the introspection endpoint about exactly this token.
    assert ("/introspect", f"token={token}".encode()) in [
        (path, body.split(b"&")[0]) for path, body in dovecot.introspection.posted
    ]


async def test_a_refused_token_names_source_and_host_never_the_token(
    dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = f"ya29.{secrets.token_urlsafe(24)}"  # not in dovecot.tokens: inactive
    monkeypatch.setenv(TOKEN_ENV, token)
    imap = xoauth2(dovecot.port, ["INBOX"], token=f"env:{TOKEN_ENV}")
    with pytest.raises(ConnectorError) as refused:
        await imap.poll(None, ctx(tmp_path, "oauth-mail"))
    message = str(refused.value)
    assert "oauth-mail" in message and f"127.0.0.1:{dovecot.port}" in message
    assert "refused the login of 'alice'" in message
    assert token not in message
    assert f"token={token}".encode() in [b.split(b"&")[0] for _, b in dovecot.introspection.posted]


# --- Microsoft 365 through MSAL --------------------------------------------


class EntraStandIn:
    """Entra ID's two endpoints that MSAL's client-credentials flow uses, over
    HTTPS on loopback (a throw-away CA): the OpenID configuration of
    `authority` and its token endpoint, which hands out `access_token` for the
    right client_id and client_secret and `invalid_client` otherwise."""

    def __init__(self, tmp_path: Path) -> None:
        self.client_secret = f"s3cr3t~{secrets.token_urlsafe(16)}"
        self.access_token = f"eyJ0eXAi.{secrets.token_urlsafe(32)}"
        self.ca = trustme.CA()
        self.ca_file = tmp_path / "entra-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server = FeedServer()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        self.server.httpd.socket = context.wrap_socket(self.server.httpd.socket, server_side=True)
        base = f"https://127.0.0.1:{self.server.port}/{TENANT}"
        self.authority = base
        self.token_path = f"/{TENANT}/oauth2/v2.0/token"
        self.discovery_path = f"/{TENANT}/v2.0/.well-known/openid-configuration"
        discovery = {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"https://127.0.0.1:{self.server.port}{self.token_path}",
        }
        self.server.put(self.discovery_path, json.dumps(discovery), content_type="application/json")
        self.server.on_post = self._token

    def _token(self, path: str, body: bytes) -> Resource | None:
        if path != self.token_path:
            return None
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("client_id") == CLIENT_ID and form.get("client_secret") == self.client_secret:
            answer: dict[str, Any] = {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": self.access_token,
            }
            status = 200
        else:
            answer = {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.\r\n"
                "Trace ID: 4f1c0e2a\r\nTimestamp: 2026-11-02 10:00:00Z",
            }
            status = 401
        return Resource(
            body=json.dumps(answer).encode(), status=status, content_type="application/json"
        )

    def token_requests(self) -> list[dict[str, str]]:
        return [
            {k: v[0] for k, v in parse_qs(body.decode()).items()}
            for path, body in self.server.posted
            if path == self.token_path
        ]


@pytest.fixture
def entra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EntraStandIn]:
    stand_in = EntraStandIn(tmp_path)
    # MSAL's requests trust this CA for this test only.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(stand_in.ca_file))
    monkeypatch.setenv(SECRET_ENV, stand_in.client_secret)
    with stand_in.server:
        yield stand_in


def microsoft_source(sid: str, port: int, folder: str, authority: str) -> str:
    return f"""
[[sources]]
id = "{sid}"
kind = "imap"
interval = "1h"
host = "127.0.0.1"
port = {port}
tls = "none"
username = "alice"
auth = "xoauth2"
folders = ["{folder}"]

[sources.microsoft]
tenant = "{TENANT}"
client_id = "{CLIENT_ID}"
client_secret = "env:{SECRET_ENV}"
authority = "{authority}"
"""


async def test_microsoft_client_credentials_through_msal_and_its_token_cache(
    dovecot: Dovecot, entra: EntraStandIn, tmp_path: Path, tidings: list[Tidings]
) -> None:
    dovecot.tokens[entra.access_token] = "alice"
    dovecot.append("alice", "M365", mail(0, "From Exchange"))
    t = Tidings(tmp_path, microsoft_source("m365", dovecot.port, "M365", entra.authority))
    tidings.append(t)

    first = await t.poll()
    assert first.error is None and len(first.new_event_ids) == 1
    assert t.titles() == ["From Exchange"]
    [request] = entra.token_requests()
    assert request["grant_type"] == "client_credentials"
    assert request["client_id"] == CLIENT_ID
    assert request["client_secret"] == entra.client_secret
    assert request["scope"] == "https://outlook.office365.com/.default"

    dovecot.append("alice", "M365", mail(1, "Again from Exchange"))
    second = await t.poll()
    assert second.error is None and len(second.new_event_ids) == 1
    # The second poll logged in with MSAL's cached token: no second request.
    assert len(entra.token_requests()) == 1
    assert entra.server.hits(entra.discovery_path) == 1


async def test_a_refused_client_secret_names_source_and_error_never_the_secret(
    dovecot: Dovecot,
    entra: EntraStandIn,
    tmp_path: Path,
    tidings: list[Tidings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = f"wr0ng~{secrets.token_urlsafe(16)}"
    monkeypatch.setenv(SECRET_ENV, wrong)
    t = Tidings(tmp_path, microsoft_source("m365-bad", dovecot.port, "INBOX", entra.authority))
    tidings.append(t)
    outcome = await t.poll()
    assert outcome.error is not None
    assert "m365-bad" in outcome.error and f"127.0.0.1:{dovecot.port}" in outcome.error
    assert "invalid_client" in outcome.error and "AADSTS7000215" in outcome.error
    assert "Trace ID" not in outcome.error
    assert wrong not in outcome.error and entra.client_secret not in outcome.error
    assert [r["client_secret"] for r in entra.token_requests()] == [wrong]


async def test_web_made_sources_may_not_send_the_secret_to_their_own_authority(
    tmp_path: Path,
) -> None:
    imap = xoauth2(
        143,
        ["INBOX"],
        microsoft={
            "tenant": TENANT,
            "client_id": CLIENT_ID,
            "client_secret": "env:TIDINGS_SECRET_ENTRA",
            "authority": "https://127.0.0.1:9/evil",
        },
    )
    web = replace(ctx(tmp_path, "web-m365"), web_made=True)
    with pytest.raises(ConnectorError, match=r"web-m365.*microsoft\.authority.*config file"):
        await imap.login(web)


async def test_without_the_extra_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "msal", None)  # what `import msal` sees when absent
    opts = MicrosoftOptions(tenant=TENANT, client_id=CLIENT_ID, client_secret="env:S")
    with pytest.raises(ConnectorError, match=r"^imap source m \(h:993\): .*tidings\[microsoft\]"):
        await access_token(opts, "secret", "imap source m (h:993)", 5.0)


# --- options ----------------------------------------------------------------


def test_the_options_keep_microsoft_to_xoauth2_alone() -> None:
    base = {"host": "imap.example.org", "username": "alice"}
    microsoft = {"tenant": TENANT, "client_id": CLIENT_ID, "client_secret": "env:S"}
    ok = ImapOptions.model_validate({**base, "auth": "xoauth2", "microsoft": microsoft})
    assert ok.microsoft is not None
    assert ok.microsoft.effective_authority == f"https://login.microsoftonline.com/{TENANT}"
    assert ok.microsoft.scope == "https://outlook.office365.com/.default"

    refused = [
        ({"password": "env:P", "microsoft": microsoft}, "microsoft is for auth = xoauth2"),
        ({"auth": "xoauth2", "token": "env:T", "microsoft": microsoft}, "one of token"),
        ({"auth": "xoauth2", "token_command": ["t"], "microsoft": microsoft}, "one of token"),
        ({"auth": "xoauth2"}, "one of token"),
        (
            {"auth": "xoauth2", "microsoft": {**microsoft, "authority": "http://login.example"}},
            "https URL",
        ),
        ({"auth": "xoauth2", "microsoft": {**microsoft, "client_secret": "pasted"}}, "env:NAME"),
        ({"auth": "xoauth2", "microsoft": {**microsoft, "tenant": "a b"}}, "an ID or a domain"),
    ]
    for extra, why in refused:
        with pytest.raises(ValueError, match=why) as err:
            ImapOptions.model_validate({**base, **extra})
        assert "pasted" not in str(err.value)


def test_the_web_admin_may_not_save_an_authority_or_a_secret_it_may_not_use() -> None:
    microsoft = {"tenant": TENANT, "client_id": CLIENT_ID, "client_secret": "env:HOME"}
    raw = {"id": "w", "kind": "imap", "host": "imap.example.org", "username": "alice"}
    raw |= {"auth": "xoauth2", "microsoft": {**microsoft, "authority": "https://e.org/t"}}
    with pytest.raises(ConfigError) as err:
        parse_source(raw, "source", "db")
    assert "source.microsoft.client_secret: sources made in the web admin" in str(err.value)
    assert "source.microsoft.authority: the server would send the client secret" in str(err.value)
    fields = {f.name for f in form_fields(connector_class("imap"))}
    assert "microsoft.client_id" in fields and "microsoft.authority" not in fields
