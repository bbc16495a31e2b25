"""The imap kind against a real Dovecot started for this module: sync, UIDVALIDITY
resets, read-only access, a connection cut mid-fetch, TLS, wrong passwords,
IDLE to a websocket subscriber, and the mail corpus."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trustme
import websockets

from aggregator.config import load_config
from aggregator.connector import PollContext, Resources
from aggregator.exceptions import ConfigError, ConnectorError
from aggregator.pipeline import PollOutcome
from aggregator.poller import Poller
from aggregator.store import Store
from aggregator.types import PollResult
from connectors.imap import ImapConnector, ImapOptions
from tests.corpus import corpus
from tests.dovecot import USERS, CuttableProxy, Dovecot
from tests.support import TidingsProcess, write_config

pytestmark = pytest.mark.integration

PASSWORD_ENV = "TIDINGS_TEST_IMAP_PASSWORD"


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(PASSWORD_ENV, USERS["alice"])
    return USERS["alice"]


def mail(n: int, subject: str, *, message_id: bool = True, body: str = "Hello.") -> bytes:
    mid = f"Message-ID: <{subject.replace(' ', '-')}-{n}@test.example>\r\n" if message_id else ""
    return (
        f"From: Jane Doe <jane@example.org>\r\nTo: team@example.org\r\n"
        f"Subject: {subject}\r\nDate: Mon, 2 Nov 2026 10:0{n % 10}:00 +0000\r\n{mid}"
        f"\r\n{body}\r\n"
    ).encode()


def imap_source(sid: str, port: int, folders: list[str], **extra: Any) -> str:
    options = {
        "host": "127.0.0.1",
        "port": port,
        "tls": "none",
        "username": "alice",
        "password": f"env:{PASSWORD_ENV}",
        "folders": folders,
        **extra,
    }
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())
    return f'\n[[sources]]\nid = "{sid}"\nkind = "imap"\ninterval = "1h"\n{lines}'


class Tidings:
    """A config and its store; `poll()` runs one in-process poll of everything."""

    def __init__(self, directory: Path, sources: str) -> None:
        self.config = load_config(write_config(directory, sources))
        self.store = Store(self.config.store_url)
        self.store.sync_sources(
            self.config.sources, datetime.now(UTC), config_file=self.config.source_file
        )

    async def poll(self) -> PollOutcome:
        poller = Poller(self.config, self.store)
        try:
            [outcome] = await poller.poll_now()
        finally:
            await poller.aclose()
        return outcome

    def titles(self) -> list[str]:
        return sorted(e.title for e in self.store.events_after(0, viewer=None))


@pytest.fixture
def tidings(tmp_path: Path) -> Iterator[list[Tidings]]:
    made: list[Tidings] = []
    yield made
    for t in made:
        t.store.close()


def ctx(tmp_path: Path, source_id: str = "direct") -> PollContext:
    async def run_cpu(fn: Any, *args: Any) -> Any:
        return fn(*args)

    return PollContext(
        source_id=source_id,
        now=datetime.now(UTC),
        resources=Resources(),
        run_cpu=run_cpu,
        base_dir=tmp_path,
    )


def connector(port: int, folders: list[str], **extra: Any) -> ImapConnector:
    options = ImapOptions.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "tls": "none",
            "username": "alice",
            "password": f"env:{PASSWORD_ENV}",
            "folders": folders,
            **extra,
        }
    )
    return ImapConnector(options)


# --- sync -------------------------------------------------------------------


async def test_initial_then_incremental_sync_never_marks_mail_read(
    dovecot: Dovecot, tmp_path: Path, tidings: list[Tidings]
) -> None:
    for n in range(3):
        dovecot.append("alice", "Sync", mail(n, f"Sync {n}"))
    before = dovecot.flags("alice", "Sync")
    t = Tidings(tmp_path, imap_source("mail", dovecot.port, ["Sync"]))
    tidings.append(t)

    first = await t.poll()
    assert first.error is None and len(first.new_event_ids) == 3
    events = t.store.events_after(0, viewer=None)
    assert sorted(e.title for e in events) == ["Sync 0", "Sync 1", "Sync 2"]
    assert {e.actor.name for e in events} == {"Jane Doe"}
    assert {e.external_id for e in events} == {f"Sync-{n}-{n}@test.example" for n in range(3)}
    state = t.store.source_state("mail")[0] or {}
    assert state["folders"]["Sync"]["last_uid"] == 3

    dovecot.append("alice", "Sync", mail(3, "Sync 3"))
    second = await t.poll()
    assert second.error is None and len(second.new_event_ids) == 1
    third = await t.poll()
    assert third.error is None and third.new_event_ids == []
    assert t.titles() == ["Sync 0", "Sync 1", "Sync 2", "Sync 3"]
    # EXAMINE and BODY.PEEK: nothing was marked \Seen, nothing changed.
    after = dovecot.flags("alice", "Sync")
    assert all(b"\\Seen" not in f for f in after.values())
    assert {u: f for u, f in after.items() if u in before} == before


async def test_uidvalidity_reset_refetches_without_duplicates(
    dovecot: Dovecot, tmp_path: Path, tidings: list[Tidings]
) -> None:
    dovecot.append("alice", "Reset", mail(0, "Reset a"))
    dovecot.append("alice", "Reset", mail(1, "Reset b", message_id=False))
    t = Tidings(tmp_path, imap_source("mail", dovecot.port, ["Reset"]))
    tidings.append(t)
    assert len((await t.poll()).new_event_ids) == 2
    old = (t.store.source_state("mail")[0] or {})["folders"]["Reset"]["uidvalidity"]

    dovecot.reset_uidvalidity("alice", "Reset")
    again = await t.poll()
    assert again.error is None and again.new_event_ids == []
    new = (t.store.source_state("mail")[0] or {})["folders"]["Reset"]
    assert new["uidvalidity"] != old and new["last_uid"] == 2

    dovecot.append("alice", "Reset", mail(2, "Reset c"))
    assert len((await t.poll()).new_event_ids) == 1
    assert t.titles() == ["Reset a", "Reset b", "Reset c"]


async def test_a_connection_cut_mid_fetch_loses_nothing_and_repeats_nothing(
    dovecot: Dovecot, tmp_path: Path, tidings: list[Tidings]
) -> None:
    body = "Lorem ipsum dolor sit amet. " * 150  # about 4 kB a message
    dovecot.append_many("alice", "Drop", [mail(n, f"Drop {n}", body=body) for n in range(20)])
    proxy = CuttableProxy(dovecot.port)
    try:
        t = Tidings(tmp_path, imap_source("mail", proxy.port, ["Drop"], batch_size=5))
        tidings.append(t)
        proxy.cut_after = 40_000  # in the middle of the third batch
        failed = await t.poll()
        assert proxy.cuts == 1
        assert failed.error is not None and failed.new_event_ids == []
        assert "mail" in failed.error and "127.0.0.1" in failed.error
        assert USERS["alice"] not in failed.error

        resumed = await t.poll()
        assert resumed.error is None and len(resumed.new_event_ids) == 20
        assert (await t.poll()).new_event_ids == []
        titles = t.titles()
        assert len(titles) == len(set(titles)) == 20
    finally:
        proxy.close()


async def test_large_messages_are_cut_and_wildcards_expand(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    big = mail(0, "Big one", body="x" * 300_000)
    dovecot.append("alice", "Wild.a", big)
    dovecot.append("alice", "Wild.b", mail(1, "Small one"))
    dovecot.append("alice", "Other", mail(2, "Not watched"))
    result = await connector(dovecot.port, ["Wild.*"], max_message_bytes=4096).poll(
        None, ctx(tmp_path)
    )
    assert sorted(e.title for e in result.events) == ["Big one", "Small one"]
    [cut] = [e for e in result.events if e.title == "Big one"]
    assert cut.extra.get("truncated_at") == 4096
    assert sorted((result.state or {})["folders"]) == ["Wild.a", "Wild.b"]


# --- security -----------------------------------------------------------------


@pytest.mark.parametrize("tls", ["tls", "starttls"])
async def test_tls_with_a_custom_ca_and_refused_without_it(
    dovecot: Dovecot, tmp_path: Path, tls: str
) -> None:
    dovecot.append("alice", "Secure", mail(0, "Over TLS"))
    port = dovecot.tls_port if tls == "tls" else dovecot.port
    ok = connector(port, ["Secure"], tls=tls, ca_bundle=str(dovecot.ca_file))
    result = await ok.poll(None, ctx(tmp_path))
    assert "Over TLS" in [e.title for e in result.events]

    wrong = tmp_path / "wrong-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(wrong))
    for extra in ({}, {"ca_bundle": str(wrong)}):  # the system's trust store, a wrong CA
        with pytest.raises(ConnectorError) as refused:
            await connector(port, ["Secure"], tls=tls, **extra).poll(None, ctx(tmp_path, "sec"))
        message = str(refused.value)
        assert "certificate" in message and "sec" in message and "127.0.0.1" in message


def test_plain_text_is_refused_for_hosts_that_are_not_loopback(tmp_path: Path) -> None:
    base = {"username": "u", "password": "env:X", "tls": "none"}
    with pytest.raises(ValueError, match="loopback"):
        ImapOptions.model_validate({**base, "host": "imap.example.org"})
    assert ImapOptions.model_validate({**base, "host": "::1"}).effective_port == 143
    assert ImapOptions.model_validate(
        {**base, "host": "imap.example.org", "insecure_plaintext": True}
    ).insecure_plaintext
    config = write_config(
        tmp_path,
        '\n[[sources]]\nid = "m"\nkind = "imap"\nhost = "10.0.0.5"\ntls = "none"\n'
        'username = "u"\npassword = "env:X"\n',
    )
    with pytest.raises(ConfigError, match=r"sources\[0\].*loopback"):
        load_config(config)


async def test_a_wrong_password_names_source_and_host_never_the_password(
    dovecot: Dovecot, tmp_path: Path, tidings: list[Tidings], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "not-the-right-pw-8731"
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    t = Tidings(tmp_path, imap_source("office-mail", dovecot.port, ["INBOX"]))
    tidings.append(t)
    outcome = await t.poll()
    assert outcome.error is not None
    assert "office-mail" in outcome.error and f"127.0.0.1:{dovecot.port}" in outcome.error
    assert "refused the login" in outcome.error
    assert wrong not in outcome.error
    [status] = [s for s in t.store.source_statuses(viewer=None) if s.id == "office-mail"]
    assert wrong not in json.dumps(status.last_error)


# --- IDLE -------------------------------------------------------------------


def idling(user: str, timeout: float = 15.0) -> None:
    """Wait until one of `user`'s imap processes says IDLE (verbose_proctitle)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    title = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                mine = title.startswith(b"dovecot/imap") and f"[{user} ".encode() in title
                if mine and b"IDLE" in title:
                    return
        time.sleep(0.05)
    raise TimeoutError(f"no IDLE session of {user} within {timeout}s")


async def test_a_message_appended_while_idle_reaches_a_subscriber_within_2s(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    dovecot.append("alice", "Push", mail(0, "Before push"))
    # A 1 h interval: only IDLE can deliver the second message quickly.
    sources = imap_source("pushed", dovecot.port, ["Push"], idle_renew=5) + (
        'audience = ["everyone"]\n'
    )
    with TidingsProcess(write_config(tmp_path, sources)) as app:
        async with websockets.connect(app.ws_url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "stream": "s", "cursor": 0}))
            assert (await next_event(ws, "Before push"))["source_id"] == "pushed"
            await asyncio.to_thread(idling, "alice")
            started = time.monotonic()
            await asyncio.to_thread(dovecot.append, "alice", "Push", mail(1, "Pushed now"))
            event = await next_event(ws, "Pushed now", wait=10)
            elapsed = time.monotonic() - started
            assert event["kind"] == "imap" and event["actor"]["name"] == "Jane Doe"
            assert elapsed < 2.0, f"took {elapsed:.2f}s"


async def test_an_idle_connection_cut_reconnects_and_delivers_once(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    dovecot.append("alice", "Recon", mail(0, "Recon first"))
    proxy = CuttableProxy(dovecot.port)
    sources = imap_source("recon", proxy.port, ["Recon"]) + 'audience = ["everyone"]\n'
    try:
        with TidingsProcess(write_config(tmp_path, sources)) as app:
            async with websockets.connect(app.ws_url) as ws:
                await ws.send(json.dumps({"type": "subscribe", "stream": "s", "cursor": 0}))
                await next_event(ws, "Recon first")
                await asyncio.to_thread(idling, "alice")
                proxy.cut_all()
                # Appended while nobody watches: the reconnect's catch-up poll finds it.
                await asyncio.to_thread(dovecot.append, "alice", "Recon", mail(1, "Recon gap"))
                await next_event(ws, "Recon gap", wait=15)
                await asyncio.to_thread(idling, "alice")
                await asyncio.to_thread(dovecot.append, "alice", "Recon", mail(2, "Recon after"))
                await next_event(ws, "Recon after", wait=10)
            body = httpx2.get(app.base + "/api/events?q=source:recon").json()
            titles = sorted(e["title"] for e in body["events"])
            assert titles == ["Recon after", "Recon first", "Recon gap"]
    finally:
        proxy.close()


async def next_event(ws: Any, title: str, wait: float = 20.0) -> dict[str, Any]:
    async with asyncio.timeout(wait):
        while True:
            msg = json.loads(await ws.recv())
            if msg["type"] == "event" and msg["event"]["title"] == title:
                event: dict[str, Any] = msg["event"]
                return event


# --- corpus -----------------------------------------------------------------


@pytest.mark.corpus
async def test_every_corpus_message_appended_is_synced(
    dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = corpus("mail")
    paths = [p for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.tsv"]
    raws = [p.read_bytes() for p in paths]
    refused = dovecot.append_many("bob", "Corpus", raws)
    assert refused <= len(raws) // 20, f"Dovecot refused {refused} of {len(raws)}"
    monkeypatch.setenv(PASSWORD_ENV, USERS["bob"])
    options = {"username": "bob", "max_messages_per_poll": 10_000}
    result: PollResult = await connector(dovecot.port, ["Corpus"], **options).poll(
        None, ctx(tmp_path)
    )
    assert result.warning is None
    assert len(result.events) == len(raws) - refused


async def test_the_admins_test_previews_the_newest_messages_only(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    for n in range(8):
        dovecot.append("alice", "Preview", mail(n, f"Preview {n}"))
    before = dovecot.flags("alice", "Preview")
    result = await connector(dovecot.port, ["Preview"]).preview(ctx(tmp_path), 3)
    assert sorted(e.title for e in result.events) == ["Preview 5", "Preview 6", "Preview 7"]
    assert result.state is None  # a Test stores nothing, not even where it got to
    assert dovecot.flags("alice", "Preview") == before
    # ... and it says whom it logged in as and which folders the account has
    assert result.notes[0].startswith(f"logged in as alice at 127.0.0.1:{dovecot.port}")
    assert "Preview: 8 message(s) (watched)" in result.notes
    assert any(note.startswith("INBOX: ") and "watched" not in note for note in result.notes)
