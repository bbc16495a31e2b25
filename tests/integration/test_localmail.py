"""Maildir and mbox sources through the real Poller into a real Store:
incremental polls, mbox rotation and truncation, allowed directories, the
admins-only default audience, and mailboxes left exactly as they were."""

from __future__ import annotations

import asyncio
import hashlib
import mailbox
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import connectors.localmail
from aggregator.config import Config, load_config
from aggregator.connector import PollContext, Resources
from aggregator.exceptions import ConfigError, FetchError
from aggregator.pipeline import PollOutcome
from aggregator.poller import Poller
from aggregator.store import Store
from aggregator.types import EventData
from connectors.localmail import (
    LocalMailOptions,
    MaildirConnector,
    MaildirOptions,
    MboxConnector,
    _read_mbox,
    _read_mbox_newest,
)
from tests.support import write_config

pytestmark = pytest.mark.integration


def message(n: int, *, message_id: bool = True, body: str = "") -> bytes:
    mid = f"Message-ID: <m{n}@example.org>\n" if message_id else ""
    return (
        f"From: Sender {n} <s{n}@example.org>\nTo: team@example.org\n{mid}"
        f"Subject: message {n}\nDate: Tue, 07 May 2024 09:{n % 60:02d}:00 +0000\n\n"
        f"Body of message {n}.\n{body}"
    ).encode()


def mbox_bytes(*messages: bytes) -> bytes:
    return b"".join(
        b"From sender@example.org Tue May  7 09:00:00 2024\n" + m + b"\n" for m in messages
    )


def source(sid: str, kind: str, path: str, extra: str = "") -> str:
    return (
        f'\n[[sources]]\nid = "{sid}"\nkind = "{kind}"\npath = "{path}"\ninterval = "1m"\n{extra}'
    )


async def poll_all(config_or_path: Path | Config) -> tuple[Store, list[PollOutcome]]:
    config = config_or_path if isinstance(config_or_path, Config) else load_config(config_or_path)
    store = Store(config.store_url)
    store.sync_sources(config.sources, datetime.now(UTC), config_file=config.source_file)
    poller = Poller(config, store)
    try:
        outcomes = await poller.poll_now()
    finally:
        await poller.aclose()
    return store, outcomes


def titles(store: Store, source_id: str) -> list[str]:
    events = store.latest_events(viewer=None, limit=500)
    return sorted(e.title for e in events if e.source_id == source_id)


def tree_hash(path: Path) -> str:
    """Names, contents and modes of every file under `path` (or of the file)."""
    h = hashlib.sha256()
    paths = [path] if path.is_file() else sorted(p for p in path.rglob("*"))
    for p in paths:
        h.update(str(p.relative_to(path.parent)).encode())
        if p.is_file():
            h.update(p.read_bytes())
            h.update(str(os.stat(p).st_mode).encode())
    return h.hexdigest()


async def test_maildir_polls_incrementally_read_only_admins_only(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Mail", create=True)
    for n in range(3):
        box.add(message(n))
    box.add(message(99, message_id=False))
    cur = mailbox.MaildirMessage(message(3))
    cur.set_subdir("cur")
    cur.add_flag("S")
    box.add(cur)
    sent = box.add_folder("Sent")
    sent.add(message(50))
    config = write_config(tmp_path, source("md", "maildir", "Mail", 'folders = ["INBOX", "Sent"]'))
    before = tree_hash(tmp_path / "Mail")

    store, outcomes = await poll_all(config)
    assert outcomes[0].error is None
    assert titles(store, "md") == [f"message {n}" for n in (0, 1, 2, 3, 50, 99)]
    events = store.latest_events(viewer=None)
    assert {e.audience for e in events if e.source_id == "md"} == {()}  # admins only
    first = next(e for e in events if e.title == "message 0")
    assert (first.actor.name, first.actor.email) == ("Sender 0", "s0@example.org")
    assert first.extra["to"] == ["team@example.org"]
    store.close()
    assert tree_hash(tmp_path / "Mail") == before  # nothing moved, flagged or locked

    box.add(message(4))
    store, outcomes = await poll_all(config)
    assert len(outcomes[0].new_event_ids) == 1
    assert titles(store, "md")[-3:] == ["message 4", "message 50", "message 99"]
    store.close()

    store, outcomes = await poll_all(config)  # nothing new: nothing stored
    assert outcomes[0].new_event_ids == [] and outcomes[0].error is None
    store.close()


async def test_maildir_cap_warns_and_continues(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Mail", create=True)
    for n in range(5):
        box.add(message(n))
    config = write_config(tmp_path, source("md", "maildir", "Mail", "max_messages_per_poll = 2"))
    seen = []
    for _ in range(4):  # bounded: 5 messages at 2 a poll take 3 polls
        store, outcomes = await poll_all(config)
        seen.append(len(outcomes[0].new_event_ids))
        store.close()
    assert seen == [2, 2, 1, 0]
    store = Store(load_config(config).store_url)
    assert titles(store, "md") == [f"message {n}" for n in range(5)]
    store.close()


async def test_mbox_appends_rotation_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "archive.mbox"
    path.write_bytes(mbox_bytes(message(1), message(2), message(0, message_id=False)))
    config = write_config(tmp_path, source("mb", "mbox", "archive.mbox"))

    store, outcomes = await poll_all(config)
    assert outcomes[0].error is None and len(outcomes[0].new_event_ids) == 3
    store.close()

    before = path.read_bytes()
    with path.open("ab") as f:
        f.write(mbox_bytes(message(3)))
    appended = tree_hash(path)
    store, outcomes = await poll_all(config)
    assert len(outcomes[0].new_event_ids) == 1
    assert titles(store, "mb") == [f"message {n}" for n in (0, 1, 2, 3)]
    store.close()
    assert tree_hash(path) == appended and path.read_bytes().startswith(before)

    # rotation: a new file (new inode) with old messages and a new one
    rotated = tmp_path / "archive.mbox.new"
    rotated.write_bytes(mbox_bytes(message(0, message_id=False), message(3), message(4)))
    rotated.replace(path)
    store, outcomes = await poll_all(config)
    assert len(outcomes[0].new_event_ids) == 1
    store.close()

    # truncation in place (same inode, shorter): again only the new message
    with path.open("r+b") as f:
        f.truncate(0)
        f.write(mbox_bytes(message(4), message(5)))
    store, outcomes = await poll_all(config)
    assert len(outcomes[0].new_event_ids) == 1
    assert titles(store, "mb") == [f"message {n}" for n in range(6)]
    store.close()


def test_mbox_scan_reads_what_mailbox_mbox_reads(tmp_path: Path) -> None:
    path = tmp_path / "m.mbox"
    tricky = message(2, body="\n>From the quoted line\nFrom: not a separator mid-line\n")
    path.write_bytes(mbox_bytes(message(1), tricky, message(3)))
    found, state, more = _read_mbox(path, {}, 100, 1_000_000, 0)
    box = mailbox.mbox(path, create=False)
    try:
        expected = [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()
    assert [r.data.rstrip(b"\n") for r in found] == [e.rstrip(b"\n") for e in expected]
    assert not more and state["offset"] == path.stat().st_size


def test_an_mbox_message_still_being_written_waits(tmp_path: Path) -> None:
    path = tmp_path / "m.mbox"
    path.write_bytes(mbox_bytes(message(1)) + b"From x Tue May  7 09:00:00 2024\nSubject: half")
    mtime = path.stat().st_mtime_ns
    found, state, _ = _read_mbox(path, {}, 100, 1_000_000, mtime)
    assert len(found) == 1
    later, _, _ = _read_mbox(path, state, 100, 1_000_000, mtime)
    assert later == []
    settled, _, _ = _read_mbox(path, state, 100, 1_000_000, mtime + 60 * 10**9)
    assert len(settled) == 1 and settled[0].data.endswith(b"Subject: half")


async def test_large_messages_are_read_in_part(tmp_path: Path) -> None:
    path = tmp_path / "big.mbox"
    path.write_bytes(mbox_bytes(message(1, body="x" * 5000 + "\n"), message(2)))
    config = write_config(tmp_path, source("mb", "mbox", "big.mbox", "max_message_bytes = 1024"))
    store, outcomes = await poll_all(config)
    assert outcomes[0].error is None
    events = {e.title: e for e in store.latest_events(viewer=None)}
    assert events["message 1"].extra["truncated_at"] == 1024
    assert "truncated_at" not in events["message 2"].extra
    store.close()


def archives_outside(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside `tmp_path` with an mbox (a.mbox) and a maildir
    (Mail), and `tmp_path/link` pointing at that maildir."""
    outside = tmp_path_factory.mktemp("outside")
    (outside / "a.mbox").write_bytes(mbox_bytes(message(1)))
    mailbox.Maildir(outside / "Mail", create=True).add(message(2))
    (tmp_path / "link").symlink_to(outside / "Mail")
    return outside


async def test_paths_outside_allowed_dirs_are_refused(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = archives_outside(tmp_path, tmp_path_factory)
    sources = (
        source("mb", "mbox", str(outside / "a.mbox"))
        + source("md", "maildir", str(outside / "Mail"))
        + source("up", "mbox", "../" + outside.name + "/a.mbox")
        + source("ln", "maildir", "link")
    )
    config = write_config(tmp_path, sources)
    # Refused with the config, before any poll: each one named (a symlink
    # counts where it leads). A poll checks again (a link made later).
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    said = str(refused.value)
    for index in range(4):
        assert f"sources[{index}].path: " in said, said
    assert said.count("not under an allowed directory") == 4, said
    # A link that pointed inside when the config was read, and outside since.
    (tmp_path / "link").unlink()
    mailbox.Maildir(tmp_path / "Mail", create=True)
    (tmp_path / "link").symlink_to(tmp_path / "Mail")
    loaded = load_config(write_config(tmp_path, source("ln", "maildir", "link")))
    (tmp_path / "link").unlink()
    (tmp_path / "link").symlink_to(outside / "Mail")
    store, [outcome] = await poll_all(loaded)
    assert "not under an allowed directory" in (outcome.error or "")
    assert store.latest_events(viewer=None) == []
    store.close()


async def test_web_made_sources_read_no_local_files(tmp_path: Path) -> None:
    (tmp_path / "a.mbox").write_bytes(mbox_bytes(message(1)))
    ctx = PollContext(
        source_id="web", now=datetime.now(UTC), resources=Resources(), run_cpu=_direct,
        local_dirs=(), base_dir=tmp_path, web_made=True,
    )  # fmt: skip
    connector = MboxConnector(LocalMailOptions(path="a.mbox"))
    with pytest.raises(FetchError, match="may not read local files"):
        await connector.poll(None, ctx)


async def _direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def test_a_missing_maildir_or_folder_is_a_clear_error(tmp_path: Path) -> None:
    mailbox.Maildir(tmp_path / "Mail", create=True).add(message(1))
    sources = source("none", "maildir", "Nothing") + source(
        "nofolder", "maildir", "Mail", 'folders = ["Archive"]'
    )
    store, outcomes = await poll_all(write_config(tmp_path, sources))
    errors = {o.source_id: o.error or "" for o in outcomes}
    assert "not a" in errors["none"] and "Nothing" in errors["none"]
    assert "no folder 'Archive'" in errors["nofolder"]
    store.close()


# Preview (the admin's Test): only the newest messages are read and parsed


def local_ctx(tmp_path: Path) -> PollContext:
    """A config-file source's context with the parser run in-process."""
    return PollContext(
        source_id="t", now=datetime.now(UTC), resources=Resources(), run_cpu=_direct,
        local_dirs=(tmp_path.resolve(),), base_dir=tmp_path,
    )  # fmt: skip


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many messages each parse_messages call was given."""
    calls: list[int] = []
    real = connectors.localmail.parse_messages

    def counting(messages: list[tuple[bytes, int]], *args: Any) -> list[EventData | None]:
        calls.append(len(messages))
        return real(messages, *args)

    monkeypatch.setattr(connectors.localmail, "parse_messages", counting)
    return calls


async def test_maildir_preview_reads_only_the_newest(tmp_path: Path, parsed: list[int]) -> None:
    box = mailbox.Maildir(tmp_path / "Mail", create=True)
    for n in range(295):
        box.add(message(n))
    for n in range(295, 300):  # ctimes apart, whatever the clock's granularity
        await asyncio.sleep(0.02)
        box.add(message(n))
    before = tree_hash(tmp_path / "Mail")
    connector = MaildirConnector(MaildirOptions(path="Mail"))

    result = await connector.preview(local_ctx(tmp_path), 5)
    assert [e.title for e in result.events] == [f"message {n}" for n in range(295, 300)]
    assert sum(parsed) == 5 and result.state is None
    assert tree_hash(tmp_path / "Mail") == before
    assert (await connector.preview(local_ctx(tmp_path), 0)).events == []


async def test_maildir_preview_spans_folders(tmp_path: Path, parsed: list[int]) -> None:
    box = mailbox.Maildir(tmp_path / "Mail", create=True)
    sent = box.add_folder("Sent")
    for n in range(6):
        await asyncio.sleep(0.02)
        (sent if n % 2 else box).add(message(n))
    options = MaildirOptions(path="Mail", folders=["INBOX", "Sent"], max_message_bytes=1024)
    big = tmp_path / "Mail" / ".Sent" / "new" / "big"
    await asyncio.sleep(0.02)
    big.write_bytes(message(6, body="x" * 5000 + "\n"))
    result = await MaildirConnector(options).preview(local_ctx(tmp_path), 3)
    assert [e.title for e in result.events] == ["message 4", "message 5", "message 6"]
    assert result.events[-1].extra["truncated_at"] == 1024
    assert sum(parsed) == 3


async def test_mbox_preview_reads_only_the_last(tmp_path: Path, parsed: list[int]) -> None:
    path = tmp_path / "archive.mbox"
    # bodies long enough that the backward scan crosses several blocks
    path.write_bytes(mbox_bytes(*(message(n, body="y" * 40_000 + "\n") for n in range(300))))
    before = tree_hash(path)
    connector = MboxConnector(LocalMailOptions(path="archive.mbox"))

    result = await connector.preview(local_ctx(tmp_path), 5)
    assert [e.title for e in result.events] == [f"message {n}" for n in range(295, 300)]
    assert sum(parsed) == 5 and result.state is None
    assert tree_hash(path) == before
    assert (await connector.preview(local_ctx(tmp_path), 0)).events == []


def test_mbox_newest_reads_what_a_poll_reads(tmp_path: Path) -> None:
    path = tmp_path / "m.mbox"
    tricky = message(2, body="\n>From the quoted line\nFrom: not a separator mid-line\n")
    long_line = message(4, body="z" * 200_000 + "From not a separator\n")
    raws = [message(1), tricky, message(3), long_line, message(5)]
    for data in (mbox_bytes(*raws), mbox_bytes(*raws).replace(b"\n", b"\r\n")):
        path.write_bytes(data)
        everything, _, _ = _read_mbox(path, {}, 100, 1_000_000, 0)
        assert len(everything) == 5
        for count in range(1, 8):
            assert _read_mbox_newest(path, count, 1_000_000, 0) == everything[-count:]
    # junk before the first separator, and a file without one
    path.write_bytes(b"junk\n" + mbox_bytes(message(1), message(2)))
    assert len(_read_mbox_newest(path, 5, 1_000_000, 0)) == 2
    path.write_bytes(b"no separator here\n")
    assert _read_mbox_newest(path, 5, 1_000_000, 0) == []


def test_mbox_newest_skips_a_message_still_being_written(tmp_path: Path) -> None:
    path = tmp_path / "m.mbox"
    path.write_bytes(
        mbox_bytes(message(1), message(2)) + b"From x Tue May  7 09:00:00 2024\nSubject: half"
    )
    mtime = path.stat().st_mtime_ns
    waiting = _read_mbox_newest(path, 2, 1_000_000, mtime)
    assert [r.data for r in waiting] == [message(1), message(2)]
    settled = _read_mbox_newest(path, 2, 1_000_000, mtime + 60 * 10**9)
    assert settled[0].data == message(2) and settled[1].data.endswith(b"Subject: half")


async def test_preview_keeps_to_the_allowed_dirs(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = archives_outside(tmp_path, tmp_path_factory)
    ctx = local_ctx(tmp_path)
    for connector in (
        MboxConnector(LocalMailOptions(path=str(outside / "a.mbox"))),
        MaildirConnector(MaildirOptions(path=str(outside / "Mail"))),
        MaildirConnector(MaildirOptions(path="link")),
    ):
        with pytest.raises(FetchError, match="not under an allowed directory"):
            await connector.preview(ctx, 5)
    web = PollContext(
        source_id="web", now=datetime.now(UTC), resources=Resources(), run_cpu=_direct,
        local_dirs=(), base_dir=tmp_path, web_made=True,
    )  # fmt: skip
    (tmp_path / "a.mbox").write_bytes(mbox_bytes(message(1)))
    with pytest.raises(FetchError, match="may not read local files"):
        await MboxConnector(LocalMailOptions(path="a.mbox")).preview(web, 5)
