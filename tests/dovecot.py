"""A real Dovecot for tests: generated config in a short temp dir, passwd-file
users, maildir storage, 127.0.0.1 only; plain/STARTTLS on `port`, implicit TLS
on `tls_port`, with a throw-away CA (trustme). See
/work/shared/notes/real-servers.md for the pitfalls this avoids.

XOAUTH2 and OAUTHBEARER go to Dovecot's oauth2 passdb, which asks a loopback
token introspection endpoint (RFC 7662, `introspection_mode = post`) run here:
a token is valid while `Dovecot.tokens` maps it to its user. Password logins
(PLAIN, LOGIN) still go to the passwd-file passdb only."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import trustme
from imapclient import IMAPClient

from tests.support import FeedServer, Resource, free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
USERS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw"}


class Dovecot:
    """One Dovecot master process; `start()` waits for the greeting."""

    def __init__(self) -> None:
        if not os.path.exists(DOVECOT):
            pytest.skip("dovecot is not installed (apt-get install -y dovecot-imapd)")
        # Short: Unix socket paths under base_dir must stay below 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="dc", dir="/tmp"))
        self.dir.chmod(0o755)  # 0700 gives "Temporary authentication failure"
        self.port = free_port()
        self.tls_port = free_port()
        self.ca = trustme.CA()
        self.ca_file = self.dir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_pem.write_to_path(str(self.dir / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(self.dir / "cert.pem"))
        for pem in cert.cert_chain_pems[1:]:
            with (self.dir / "cert.pem").open("ab") as out:
                out.write(pem.bytes())
        self.conf = self.dir / "dovecot.conf"
        self.log = self.dir / "dovecot.log"
        self.tokens: dict[str, str] = {}  # access token -> user, for the oauth2 passdb
        self.introspection = FeedServer()
        self.introspection.on_post = self._introspect
        self._write_config()

    def _introspect(self, path: str, body: bytes) -> Resource:
        """RFC 7662: `token=...` in, whether it is active and whose it is out."""
        [token] = parse_qs(body.decode()).get("token") or [""]
        user = self.tokens.get(token)
        answer = {"active": True, "username": user} if user else {"active": False}
        return Resource(body=json.dumps(answer).encode(), content_type="application/json")

    def _write_config(self) -> None:
        home = self.dir / "home"
        home.mkdir()
        shutil.chown(home, "nobody", "nogroup")
        (self.dir / "users").write_text(
            "".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in USERS.items())
        )
        d = self.dir
        (d / "dovecot-oauth2.conf.ext").write_text(
            f"""
introspection_mode = post
introspection_url = {self.introspection.url("/introspect")}
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
"""
        )
        self.conf.write_text(
            f"""
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
verbose_proctitle = yes
auth_failure_delay = 0
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 0
default_login_user = dovenull
default_internal_user = dovecot
mail_location = maildir:~/Maildir
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/dovecot-oauth2.conf.ext
}}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users
  default_fields = uid=nobody gid=nogroup home={d}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
}}
service anvil {{
  # No growing delay after refused logins: tests refuse some on purpose.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
protocol imap {{
  imap_idle_notify_interval = 1 secs
  mail_max_userip_connections = 50
}}
"""
        )

    def start(self, timeout: float = 10.0) -> Dovecot:
        self.introspection.__enter__()
        with self.log.open("ab") as log:
            subprocess.run(
                [DOVECOT, "-c", str(self.conf)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=True,
                timeout=timeout,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
            ):
                if sock.recv(100).startswith(b"* OK"):
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not answer in {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        subprocess.run(
            [DOVEADM, "-c", str(self.conf), "stop"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=15, check=False,
        )  # fmt: skip
        pid_file = self.dir / "run" / "master.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.introspection.__exit__()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- what tests do to mailboxes ------------------------------------------

    def client(self, user: str = "alice") -> IMAPClient:
        client = IMAPClient("127.0.0.1", self.port, ssl=False, timeout=10)
        client.login(user, USERS[user])
        return client

    def append(self, user: str, folder: str, raw: bytes, flags: tuple[bytes, ...] = ()) -> None:
        with self.client(user) as client:
            self._ensure(client, folder)
            client.append(folder, raw, flags=flags)

    def append_many(self, user: str, folder: str, raws: list[bytes]) -> int:
        """Append each message; returns how many the server refused."""
        refused = 0
        with self.client(user) as client:
            self._ensure(client, folder)
            for raw in raws:
                try:
                    client.append(folder, raw)
                except Exception:
                    refused += 1
        return refused

    @staticmethod
    def _ensure(client: IMAPClient, folder: str) -> None:
        if folder.upper() != "INBOX" and not client.folder_exists(folder):
            client.create_folder(folder)

    def reset_uidvalidity(self, user: str, folder: str) -> None:
        """Delete and recreate `folder` with the same messages: a new UIDVALIDITY."""
        with self.client(user) as client:
            client.select_folder(folder, readonly=True)
            found = client.fetch(client.search(["ALL"]), [b"BODY.PEEK[]", b"FLAGS"])
            messages = [(found[u][b"BODY[]"], found[u][b"FLAGS"]) for u in sorted(found)]
            client.close_folder()
            client.delete_folder(folder)
            client.create_folder(folder)
            for raw, flags in messages:
                client.append(folder, raw, flags=[f for f in flags if f != b"\\Recent"])

    def flags(self, user: str, folder: str) -> dict[int, tuple[bytes, ...]]:
        with self.client(user) as client:
            client.select_folder(folder, readonly=True)
            found = client.fetch(client.search(["ALL"]), [b"FLAGS"])
            return {u: tuple(found[u][b"FLAGS"]) for u in found}


class CuttableProxy:
    """A TCP proxy 127.0.0.1:port -> target that can cut its connections once
    `cut_after` bytes went from the server to the client (mid-fetch)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_after: int | None = None
        self.cuts = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self._lock:
                self._open += [client, server]
            counter = [0]
            threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, counter), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, counter: list[int] | None) -> None:
        try:
            while data := src.recv(4096):
                if counter is not None and self.cut_after is not None:
                    counter[0] += len(data)
                    if counter[0] > self.cut_after:
                        with self._lock:
                            self.cut_after = None  # once
                            self.cuts += 1
                        dst.sendall(data[: len(data) // 2])
                        raise OSError("cut")
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut_all(self) -> None:
        """Drop every connection open now (an IDLE, say); new ones still work."""
        with self._lock:
            sockets, self._open = self._open, []
            self.cuts += 1
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.close()
