"""`tidings backup PATH`: a consistent, usable copy of the store while it is in use."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from aggregator.config import SourceConfig, parse_config
from aggregator.decide import prepare
from aggregator.notify import libpq_url
from aggregator.store import Store
from aggregator.types import EventData
from tests.stores import store_url
from tests.support import CliRun as Run
from tests.support import feed_source

NOW = datetime.now(UTC)
PASSWORD = "pw-never-shown-9c1e"


def write_config(directory: Path, url: str) -> Path:
    directory.mkdir(exist_ok=True)
    config = directory / "config.toml"
    config.write_text(
        f'[store]\nurl = "{url}"\n' + feed_source("wiki", "https://wiki.example.com/feed")
    )
    return config


@pytest.fixture
def tidings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(write_config(tmp_path, store_url(tmp_path)), capsys)


def wiki(store: Store) -> SourceConfig:
    source = parse_config(
        {"sources": [{"id": "wiki", "kind": "feed", "url": "https://wiki.example.com/feed"}]}
    ).sources[0]
    store.sync_sources([source], NOW)
    return source


def add_events(store: Store, source: SourceConfig, *ids: str) -> None:
    items = [EventData(external_id=i, title=f"news {i}") for i in ids]
    store.record_poll(source, prepare(items), state=None, now=NOW, next_poll_at=NOW)


def titles(store: Store) -> set[str]:
    return {e.title or "" for e in store.latest_events(viewer=None, limit=500)}


@pytest.fixture
def running(tidings: Run) -> Iterator[Store]:
    """The store as a running Tidings holds it: open, with events written."""
    store = tidings.store()
    add_events(store, wiki(store), "a", "b", "c")
    yield store
    store.close()


WROTE = re.compile(r"wrote (\S+) \((\S+ [kMG]?B), (\d+) bytes\): (.*)")


# --- SQLite -----------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_sqlite_backup_of_an_open_store_holds_what_its_wal_holds(
    tidings: Run, running: Store, tmp_path: Path
) -> None:
    db = Path(make_url(running.url).database or "")
    assert Path(f"{db}-wal").stat().st_size > 0  # the events are in the WAL, not yet in db
    (tmp_path / "backups").mkdir()
    target = tmp_path / "backups" / "tidings.db"
    assert tidings("backup", str(target)) == 0, tidings.err
    match = WROTE.fullmatch(tidings.out.strip())
    assert match, tidings.out
    assert match[1] == str(target)
    assert match[4] == f"a copy of the SQLite store {db}"
    assert int(match[3]) == target.stat().st_size
    # One self-contained file (no WAL companions), for its owner's eyes only.
    assert os.listdir(target.parent) == ["tidings.db"]
    assert target.read_bytes()[18] == 1  # the header's rollback-journal mark, not WAL's 2
    assert target.stat().st_mode & 0o777 == 0o600
    copy = Store(f"sqlite:///{target}")
    try:
        assert titles(copy) == {"news a", "news b", "news c"}
    finally:
        copy.close()


@pytest.mark.sqlite_only
def test_sqlite_backup_while_events_are_written_is_one_snapshot(
    tidings: Run, running: Store, tmp_path: Path
) -> None:
    source = wiki(running)
    wrote, stop = threading.Event(), threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            add_events(running, source, f"w{n}-1", f"w{n}-2")
            wrote.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert wrote.wait(10)
        for n in range(3):
            assert tidings("backup", str(tmp_path / f"b{n}.db")) == 0, tidings.err
    finally:
        stop.set()
        writer.join()
    for n in range(3):
        with closing(sqlite3.connect(tmp_path / f"b{n}.db")) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            ids = [r[0] for r in conn.execute("SELECT id FROM events ORDER BY id")]
        # Whole transactions only: both events of each poll, ids without gaps.
        assert ids == list(range(1, len(ids) + 1)) and len(ids) % 2 == 1 and len(ids) >= 5


def test_backup_refuses_to_replace_a_file_without_force(tidings: Run, running: Store) -> None:
    target = tidings.config.parent / "backup"
    target.write_bytes(b"an older backup")
    assert tidings("backup", str(target)) == 2
    assert tidings.err == (
        f"error: {target} exists; name another file, or pass --force to replace it\n"
    )
    assert target.read_bytes() == b"an older backup"
    assert tidings("backup", str(target), "--force") == 0, tidings.err
    assert tidings.out.startswith(f"wrote {target} (")
    assert target.read_bytes() != b"an older backup"


@pytest.mark.sqlite_only
def test_backup_refuses_the_store_itself_and_missing_directories(
    tidings: Run, running: Store
) -> None:
    db = Path(make_url(running.url).database or "")
    for target in (db, Path(f"{db}-wal")):
        assert tidings("backup", str(target), "--force") == 2
        assert f"{target} is the store itself; write the backup elsewhere" in tidings.err
    missing = db.parent / "no-such-dir" / "b.db"
    assert tidings("backup", str(missing)) == 2
    assert f"the directory {missing.parent} does not exist" in tidings.err
    assert titles(running) == {"news a", "news b", "news c"}


def test_a_failed_backup_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    broken = Run(write_config(tmp_path / "sub", f"sqlite:///{junk}"), capsys)
    target = tmp_path / "out" / "b.db"
    target.parent.mkdir()
    assert broken("backup", str(target)) == 2
    assert broken.err == f"error: cannot back up {junk}: file is not a database\n"
    assert os.listdir(target.parent) == []  # neither PATH nor the partial copy


def test_the_copy_is_renamed_into_place_only_when_whole(
    tidings: Run, running: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tidings.config.parent / "b.dump"
    renames: list[tuple[Path, bool, int]] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        renames.append((Path(src), Path(dst).exists(), Path(src).stat().st_size))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert tidings("backup", str(target)) == 0, tidings.err
    [(partial, existed, size)] = renames
    assert partial.parent == target.parent and partial.name.startswith(".b.dump.")
    assert not existed  # until the rename there was nothing at PATH
    assert size == target.stat().st_size > 0


# --- PostgreSQL ---------------------------------------------------------------------


def with_password(url: str) -> str:
    return make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


@pytest.mark.postgresql_only
def test_postgresql_backup_restores_into_a_new_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Trust auth on the test server ignores the password; pg_dump must still get it.
    url = with_password(store_url(tmp_path))
    store = Store(url)
    add_events(store, wiki(store), "a", "b", "c")
    runs: list[tuple[list[str], dict[str, str]]] = []
    real_run = subprocess.run

    def run(argv: list[str], **kw: Any) -> Any:
        runs.append((argv, kw["env"]))
        return real_run(argv, **kw)

    monkeypatch.setattr(subprocess, "run", run)
    tidings = Run(write_config(tmp_path / "sub", url), capsys)
    target = tmp_path / "tidings.dump"
    try:
        assert tidings("backup", str(target)) == 0, tidings.err
    finally:
        store.close()
    [(argv, env)] = runs
    assert PASSWORD not in " ".join(argv) and env["PGPASSWORD"] == PASSWORD
    assert PASSWORD not in tidings.out + tidings.err
    match = WROTE.fullmatch(tidings.out.strip())
    assert match, tidings.out
    shown = make_url(url).render_as_string(hide_password=True)
    assert match[4] == (
        f"a pg_dump archive of {shown}; restore it into an empty database with: "
        f"pg_restore --dbname=URL {target}"
    )
    assert target.read_bytes()[:5] == b"PGDMP"  # the custom format's magic
    restored = store_url(tmp_path, "restored", empty=True)
    real_run(
        ["pg_restore", "--no-owner", f"--dbname={libpq_url(restored)}", str(target)], check=True
    )
    copy = Store(restored)
    try:
        assert titles(copy) == {"news a", "news b", "news c"}
        add_events(copy, wiki(copy), "d")  # sequences came along: new ids follow on
        assert titles(copy) == {"news a", "news b", "news c", "news d"}
    finally:
        copy.close()


@pytest.mark.postgresql_only  # needs pg_dump, which comes with the server's client tools
def test_postgresql_backup_reports_why_pg_dump_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql+psycopg://tidings:{PASSWORD}@127.0.0.1:1/tidings"
    tidings = Run(write_config(tmp_path / "sub", url), capsys)
    assert tidings("backup", str(tmp_path / "b.dump")) == 2
    assert tidings.err.startswith(
        "error: pg_dump could not back up postgresql+psycopg://tidings:***@127.0.0.1:1/tidings: "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused'
    ), tidings.err
    assert PASSWORD not in tidings.err
    assert sorted(os.listdir(tmp_path)) == ["sub"]


def test_postgresql_backup_without_pg_dump_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "sub"))  # no pg_dump there
    url = f"postgresql+psycopg://tidings:{PASSWORD}@db.example:5432/tidings"
    tidings = Run(write_config(tmp_path / "sub", url), capsys)
    target = tmp_path / "b.dump"
    assert tidings("backup", str(target)) == 2
    assert tidings.err == (
        "error: pg_dump is not installed (or not on PATH): install PostgreSQL's client tools, "
        "of the server's major version or newer (Debian and Ubuntu: apt install "
        "postgresql-client), or run on a machine that has them: "
        f"pg_dump --format=custom --file={target} "
        "'postgresql://tidings@db.example:5432/tidings'\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["sub"]
