"""Feed sources with credentials, against loopback servers that check them.

The secret must reach the server that asked for it and nothing else: not a
log line, not an error, not the store, not a server on another origin.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.pipeline import PollOutcome
from aggregator.poller import Poller
from aggregator.store import Store
from tests.support import FeedServer, feed_source, rss, write_config

pytestmark = pytest.mark.integration

USER = "tidings"
PASSWORD = "Pa55-w0rd-from-the-vault"
TOKEN = "tok-9f8e7d6c5b4a"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BEARER = f"Bearer {TOKEN}"
FORBIDDEN = (PASSWORD, TOKEN, BASIC.split()[1])  # the base64 form leaks the password too
FEED = rss([{"guid": "a1", "title": "Behind the login"}])


class AuthServer:
    """Serves `feeds` and `redirects` only to requests with the expected
    Authorization; records every request's Authorization header."""

    def __init__(self, expected: str, tls: ssl.SSLContext | None = None) -> None:
        self.expected = expected
        self.feeds: dict[str, str] = {}
        self.redirects: dict[str, str] = {}
        self.seen: list[tuple[str, str | None]] = []
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                with lock:
                    server.seen.append((self.path, auth))
                if auth != server.expected:
                    self._send(401, b"who are you?", {"WWW-Authenticate": 'Basic realm="t"'})
                elif self.path in server.redirects:
                    self._send(302, b"", {"Location": server.redirects[self.path]})
                elif self.path in server.feeds:
                    body = server.feeds[self.path].encode()
                    self._send(200, body, {"Content-Type": "application/rss+xml"})
                else:
                    self._send(404, b"not found", {})

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> AuthServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def basic_server() -> Iterator[AuthServer]:
    with AuthServer(BASIC) as server:
        server.feeds["/f.xml"] = FEED
        yield server


@pytest.fixture
def bearer_server() -> Iterator[AuthServer]:
    with AuthServer(BEARER) as server:
        server.feeds["/f.xml"] = FEED
        yield server


@pytest.fixture
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx2 and httpcore2 too: none of it may show a secret


def auth_source(sid: str, url: str, auth: str) -> str:
    return feed_source(sid, url) + auth + "\n"


async def poll(config_path: Path) -> tuple[Store, PollOutcome]:
    config = load_config(config_path)
    store = Store(config.store_url)
    store.sync_sources(config.sources, datetime.now(UTC), config_file=config.source_file)
    poller = Poller(config, store)
    try:
        [outcome] = await poller.poll_now()
    finally:
        await poller.aclose()
    return store, outcome


def assert_no_secret(store: Store, outcome: PollOutcome, caplog: pytest.LogCaptureFixture) -> None:
    errors = [status.last_error or "" for status in store.source_statuses(viewer=None)]
    texts = [caplog.text, outcome.error or "", *errors]
    for text in texts:
        for secret in FORBIDDEN:
            assert secret not in text


async def test_basic_auth_from_an_env_reference(
    basic_server: AuthServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("TIDINGS_TEST_FEED_PASSWORD", PASSWORD)
    source = auth_source(
        "wiki",
        basic_server.url("/f.xml"),
        f'username = "{USER}"\npassword = "env:TIDINGS_TEST_FEED_PASSWORD"',
    )
    store, outcome = await poll(write_config(tmp_path, source))
    assert outcome.error is None and len(outcome.new_event_ids) == 1
    assert basic_server.seen == [("/f.xml", BASIC)]
    assert_no_secret(store, outcome, caplog)
    store.close()


async def test_bearer_token_from_a_file_relative_to_the_config(
    bearer_server: AuthServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "wiki-token").write_text(TOKEN + "\n")
    source = auth_source("wiki", bearer_server.url("/f.xml"), 'token = "file:secrets/wiki-token"')
    store, outcome = await poll(write_config(tmp_path, source))
    assert outcome.error is None and len(outcome.new_event_ids) == 1
    assert bearer_server.seen == [("/f.xml", BEARER)]
    assert_no_secret(store, outcome, caplog)
    store.close()


async def test_a_missing_variable_is_the_sources_error_not_a_crash(
    basic_server: AuthServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("TIDINGS_TEST_ABSENT", raising=False)
    source = auth_source(
        "wiki",
        basic_server.url("/f.xml"),
        f'username = "{USER}"\npassword = "env:TIDINGS_TEST_ABSENT"',
    )
    store, outcome = await poll(write_config(tmp_path, source))
    assert outcome.error == "environment variable TIDINGS_TEST_ABSENT is not set"
    [status] = store.source_statuses(viewer=None)
    assert status.last_error == outcome.error and status.consecutive_failures == 1
    assert basic_server.seen == []  # nothing was sent without the credentials
    assert "crashed" not in caplog.text
    store.close()


async def test_a_wrong_secret_is_an_http_error_that_does_not_show_it(
    bearer_server: AuthServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bearer_server.expected = "Bearer something-else"
    monkeypatch.setenv("TIDINGS_TEST_FEED_TOKEN", TOKEN)
    source = auth_source(
        "wiki", bearer_server.url("/f.xml"), 'token = "env:TIDINGS_TEST_FEED_TOKEN"'
    )
    store, outcome = await poll(write_config(tmp_path, source))
    assert outcome.error == f"HTTP 401 Unauthorized from {bearer_server.url('/f.xml')}"
    assert bearer_server.seen == [("/f.xml", BEARER)]
    assert_no_secret(store, outcome, caplog)
    store.close()


async def test_a_token_unfit_for_a_header_is_refused_by_its_reference(
    bearer_server: AuthServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "token").write_text(f"{TOKEN} {TOKEN}\n")  # a space: not one token
    source = auth_source("wiki", bearer_server.url("/f.xml"), 'token = "file:token"')
    store, outcome = await poll(write_config(tmp_path, source))
    assert outcome.error == "token file:token: not printable ASCII without spaces"
    assert bearer_server.seen == []
    assert_no_secret(store, outcome, caplog)
    store.close()


async def test_authorization_stays_on_its_origin_across_redirects(
    bearer_server: AuthServer,
    feed_server: FeedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Same origin: the redirected request still authenticates.
    bearer_server.redirects["/old.xml"] = bearer_server.url("/f.xml")
    # Another origin (another port on the same host counts): no Authorization.
    feed_server.put("/elsewhere.xml", rss([{"guid": "b1", "title": "Moved away"}]))
    bearer_server.redirects["/moved.xml"] = feed_server.url("/elsewhere.xml")
    monkeypatch.setenv("TIDINGS_TEST_FEED_TOKEN", TOKEN)
    auth = 'token = "env:TIDINGS_TEST_FEED_TOKEN"'

    store, outcome = await poll(
        write_config(tmp_path, auth_source("old", bearer_server.url("/old.xml"), auth))
    )
    assert outcome.error is None and len(outcome.new_event_ids) == 1
    assert bearer_server.seen == [("/old.xml", BEARER), ("/f.xml", BEARER)]
    store.close()

    store, outcome = await poll(
        write_config(tmp_path, auth_source("moved", bearer_server.url("/moved.xml"), auth))
    )
    assert outcome.error is None and len(outcome.new_event_ids) == 1
    assert bearer_server.seen[-1] == ("/moved.xml", BEARER)
    [(path, headers)] = feed_server.requests
    assert path == "/elsewhere.xml"
    assert "authorization" not in {name.lower() for name in headers}
    assert all(secret not in str(headers) for secret in FORBIDDEN)
    assert_no_secret(store, outcome, caplog)
    store.close()


async def test_authorization_is_not_sent_over_an_https_to_http_downgrade(
    tls_files: tuple[Path, Path],
    feed_server: FeedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert, key = tls_files
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the fetcher trusts the test certificate
    monkeypatch.setenv("TIDINGS_TEST_FEED_PASSWORD", PASSWORD)
    feed_server.put("/plain.xml", rss([{"guid": "c1", "title": "In clear text"}]))
    with AuthServer(BASIC, tls) as secure:
        secure.feeds["/f.xml"] = FEED
        secure.redirects["/down.xml"] = feed_server.url("/plain.xml")
        auth = f'username = "{USER}"\npassword = "env:TIDINGS_TEST_FEED_PASSWORD"'
        store, outcome = await poll(
            write_config(tmp_path, auth_source("wiki", secure.url("/f.xml"), auth))
        )
        assert outcome.error is None, outcome.error  # TLS itself works, with the credentials
        store.close()
        store, outcome = await poll(
            write_config(tmp_path, auth_source("down", secure.url("/down.xml"), auth))
        )
    assert outcome.error is None and len(outcome.new_event_ids) == 1
    assert secure.seen == [("/f.xml", BASIC), ("/down.xml", BASIC)]
    [(path, headers)] = feed_server.requests
    assert path == "/plain.xml"
    assert "authorization" not in {name.lower() for name in headers}
    assert_no_secret(store, outcome, caplog)
    store.close()
