"""Real parts for tests: a loopback feed server and a real `tidings serve`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import pytest

from aggregator.cli import main
from aggregator.store import Store
from tests import leaks
from tests.stores import store_url


@dataclass
class Resource:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml"
    etag: str | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    drip: float = 0.0  # seconds between the body's bytes: a server that never quite ends


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up mid-response (a deadline, a size cap) is what
        # several tests do on purpose; anything else is still printed.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FeedServer:
    """Serves whatever the test puts in `resources`, honouring If-None-Match.

    A POST is answered by `on_post(path, body)` when a test sets it, else by
    `resources[path]`; its body is kept in `posted`."""

    def __init__(self) -> None:
        self.resources: dict[str, Resource] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.arrivals: list[tuple[str, float]] = []  # (path, time.monotonic()) per GET
        self.overlapped: list[str] = []  # paths got while a GET of them was unanswered
        self._in_flight: Counter[str] = Counter()
        self.posted: list[tuple[str, bytes]] = []
        self.on_post: Callable[[str, bytes], Resource | None] | None = None
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append((self.path, dict(self.headers)))
                    server.arrivals.append((self.path, time.monotonic()))
                    server._in_flight[self.path] += 1
                    if server._in_flight[self.path] > 1:
                        server.overlapped.append(self.path)
                    server._lock.notify_all()
                    res = server.resources.get(self.path)
                try:
                    self._get(res)
                finally:
                    with server._lock:
                        server._in_flight[self.path] -= 1

            def _get(self, res: Resource | None) -> None:
                if res is None:
                    self._send(404, b"not found", "text/plain")
                    return
                if res.delay:
                    time.sleep(res.delay)
                if res.etag and self.headers.get("If-None-Match") == res.etag:
                    self.send_response(304)
                    self.send_header("ETag", res.etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if res.drip:
                    self._drip(res)
                    return
                self._send(res.status, res.body, res.content_type, res.etag, res.headers)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length > 0 else b""
                with server._lock:
                    server.requests.append((self.path, dict(self.headers)))
                    server.posted.append((self.path, body))
                    server._lock.notify_all()
                    respond = server.on_post
                    res = respond(self.path, body) if respond else server.resources.get(self.path)
                if res is None:
                    self._send(404, b"not found", "text/plain")
                    return
                self._send(res.status, res.body, res.content_type, res.etag, res.headers)

            def _drip(self, res: Resource) -> None:
                self.send_response(res.status)
                self.send_header("Content-Type", res.content_type)
                self.send_header("Content-Length", str(len(res.body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gave up: that is the point
                    for i in range(len(res.body)):
                        self.wfile.write(res.body[i : i + 1])
                        self.wfile.flush()
                        if server._stopping.wait(res.drip):
                            return

            def _send(
                self,
                status: int,
                body: bytes,
                ctype: str,
                etag: str | None = None,
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if etag:
                    self.send_header("ETag", etag)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def put(self, path: str, body: bytes | str, **kw: object) -> None:
        data = body.encode() if isinstance(body, str) else body
        with self._lock:
            self.resources[path] = Resource(body=data, **kw)  # type: ignore[arg-type]

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for p, _ in self.requests if p == path)

    def wait_for_hit(self, path: str, timeout: float = 20.0) -> None:
        """Block until `path` has been requested at least once."""
        with self._lock:
            if not self._lock.wait_for(lambda: any(p == path for p, _ in self.requests), timeout):
                raise TimeoutError(f"{path} was not requested within {timeout}s")

    def wait_for_requests(self, count: int, timeout: float = 20.0) -> None:
        """Block until at least `count` requests have come in, all told."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"fewer than {count} requests within {timeout}s")

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def rss(items: list[dict[str, str]], title: str = "Test feed") -> str:
    """A small RSS 2.0 document; each item has guid, title and optional description."""
    base = datetime(2026, 11, 1, tzinfo=UTC)
    parts = []
    for n, item in enumerate(items):
        when = format_datetime(base + timedelta(hours=n), usegmt=True)
        desc = item.get("description", f"<p>Body of {item['title']}</p>")
        parts.append(
            f'<item><guid isPermaLink="false">{item["guid"]}</guid>'
            f"<title>{item['title']}</title><link>https://example.org/{item['guid']}</link>"
            f"<pubDate>{when}</pubDate><description><![CDATA[{desc}]]></description></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{title}</title><link>https://example.org/</link><description>t</description>"
        + "".join(parts)
        + "</channel></rss>"
    )


def feed_source(sid: str, url: str, *, interval: str = "5s", title: str | None = None) -> str:
    """One [[sources]] table of kind feed, for write_config."""
    title_line = f'title = "{title}"\n' if title else ""
    return (
        f'\n[[sources]]\nid = "{sid}"\nkind = "feed"\n{title_line}'
        f'url = "{url}"\ninterval = "{interval}"\n'
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, sources: str, *, port: int = 0, extra: str = "") -> Path:
    """A config file with a store in `directory` and the given [[sources]] tables."""
    path = directory / "config.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [server]
            host = "127.0.0.1"
            port = {port}
            heartbeat = 2
            [store]
            url = "{store_url(directory, "tidings")}"
            [poller]
            tick = 0.2
            workers = 1
            [http]
            connect_timeout = 2
            read_timeout = 2
            [files]
            allowed_dirs = ["."]
            """
        )
        + extra
        + textwrap.dedent(sources)
    )
    return path


class CliRun:
    """Runs `tidings ...` in this process against one config file, keeping
    what it printed; its store is `t.db` beside the config."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys
        self.out = self.err = ""

    def __call__(self, *args: str) -> int:
        code = main([*args, "--config", str(self.config)])
        self.out, self.err = self.capsys.readouterr()
        return code

    def store(self) -> Store:
        return Store(store_url(self.config.parent))


class TidingsProcess:
    """`tidings serve` (or `command`, such as `serve --no-poller` or `poller`)
    as a real process; a server listens on a free loopback port."""

    def __init__(self, config: Path, *command: str, log: str = "serve.log") -> None:
        self.config = config
        self.command = command or ("serve",)
        self.serves = self.command[0] == "serve"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / log
        leaks.WATCH.log_file(self.log)

    def start(self, timeout: float = 20.0) -> TidingsProcess:
        env = {**os.environ, "TIDINGS_DISABLE_PLUGINS": "1"}
        port = ["--port", str(self.port)] if self.serves else []
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aggregator.cli", *self.command, "--config",
                 str(self.config), *port],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self.config.parent, start_new_session=True,  # kill() ends its children too
            )  # fmt: skip
        if not self.serves:
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tidings serve exited:\n{self.log.read_text()}")
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"tidings serve did not answer in {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL it and its parser processes at once, as a crash of its host would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def crash(self) -> None:
        """SIGKILL the process alone, as the OOM killer would: its children
        are left to notice by themselves."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> TidingsProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
