"""`tidings backup`: a consistent copy of the store, taken while Tidings runs.

SQLite: the online backup API copies one snapshot of the database, what its
WAL holds included. PostgreSQL: pg_dump, which reads one snapshot too, into a
custom-format archive for pg_restore. Either way the copy goes to a hidden
temporary file beside the destination and is renamed into place only when it
is complete, so a file at the destination is always a whole backup.

The store is only read: a backup never creates or migrates it, so one taken
before an upgrade holds the schema the old version wrote.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from aggregator import dburl
from aggregator.dburl import libpq_url, password_of, without_password
from aggregator.exceptions import TidingsError, blot, first_line


@dataclass(frozen=True, slots=True)
class Backup:
    """A backup written: where, how many bytes, of what, in which format."""

    path: Path
    size: int
    store: str  # the SQLite file, or the server's URL with the password hidden
    format: str  # "sqlite" (a database file) or "pg_dump" (a custom-format archive)
    warnings: tuple[str, ...] = ()  # what pg_dump said while succeeding


def backup_store(store_url: str, path: Path, *, force: bool = False) -> Backup:
    """Copy the store at `store_url` to `path`; an existing file there is
    replaced only with `force`. Raises TidingsError saying what went wrong;
    then nothing was written at `path`."""
    url = make_url(store_url)
    backend = url.get_backend_name()
    try:
        target = _target(path, force)
        if backend == "sqlite":
            return _backup_sqlite(_sqlite_file(url.database), target, force)
        if backend == "postgresql":
            return _backup_postgresql(url, target, force)
    except OSError as err:  # a directory on the way that may not be read, and such
        raise TidingsError(f"cannot back up to {path}: {err.strerror or err}") from None
    raise TidingsError(f"cannot back up a {backend} store: only SQLite and PostgreSQL")


def _target(path: Path, force: bool) -> Path:
    # Absolute but not resolved: a symbolic link at `path` is replaced, not followed.
    target = Path(os.path.abspath(path))
    if target.is_dir():
        raise TidingsError(f"{target} is a directory; name the file to write in it")
    if not target.parent.is_dir():
        raise TidingsError(f"cannot write {target}: the directory {target.parent} does not exist")
    if not force and (target.exists() or target.is_symlink()):
        raise TidingsError(f"{target} exists; name another file, or pass --force to replace it")
    return target


@contextmanager
def _partial(target: Path) -> Iterator[Path]:
    """A new empty file beside `target`, removed unless renamed into place.
    Readable by its owner only: a backup holds sessions and token hashes."""
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    except OSError as err:
        raise TidingsError(f"cannot write in {target.parent}: {err.strerror or err}") from None
    os.close(fd)
    partial = Path(name)
    try:
        yield partial
    finally:
        partial.unlink(missing_ok=True)


def _publish(partial: Path, target: Path, force: bool) -> int:
    """Rename the complete copy into place, durably; its size in bytes."""
    if not force and (target.exists() or target.is_symlink()):  # made while we copied
        raise TidingsError(f"{target} appeared during the backup; pass --force to replace it")
    try:
        _fsync(partial)
        os.replace(partial, target)
        _fsync(target.parent)  # the rename itself survives a crash
        return target.stat().st_size
    except OSError as err:
        raise TidingsError(f"cannot write {target}: {err.strerror or err}") from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- SQLite ------------------------------------------------------------------


def _sqlite_file(database: str | None) -> Path:
    if not database or database == ":memory:" or "mode=memory" in database:
        raise TidingsError("the store is in memory: there is no file to back up")
    db = Path(os.path.abspath(database))
    if not db.is_file():
        raise TidingsError(f"no store at {db}, nothing to back up (see [store] url)")
    return db


def _backup_sqlite(db: Path, target: Path, force: bool) -> Backup:
    # Replacing the live file (or its -wal) would cut it from under every
    # process that has it open.
    companions = {db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))}
    if target in companions or (target.exists() and target.samefile(db)):
        raise TidingsError(f"{target} is the store itself; write the backup elsewhere")
    with _partial(target) as partial:
        try:
            # Read-only: a backup never writes to the store.
            source = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
            with closing(source), closing(sqlite3.connect(partial)) as copy:
                source.backup(copy)  # all pages in one step: one snapshot
                # One self-contained file, not a WAL database with companions.
                copy.execute("PRAGMA journal_mode=DELETE")
                verdict = [row[0] for row in copy.execute("PRAGMA quick_check")]
        except sqlite3.Error as err:
            raise TidingsError(f"cannot back up {db}: {first_line(err)}") from None
        if verdict != ["ok"]:
            raise TidingsError(
                f"the copy of {db} fails SQLite's quick_check ({verdict[0]}): the store "
                f"itself may be damaged; nothing was written to {target}"
            )
        size = _publish(partial, target, force)
    return Backup(target, size, str(db), "sqlite")


# --- PostgreSQL --------------------------------------------------------------


def _backup_postgresql(url: URL, target: Path, force: bool) -> Backup:
    password = password_of(url)
    # The password goes through the environment: a command line is public (ps).
    dsn = libpq_url(without_password(url))
    shown = dburl.shown(url)
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise TidingsError(
            "pg_dump is not installed (or not on PATH): install PostgreSQL's client tools, "
            "of the server's major version or newer (Debian and Ubuntu: apt install "
            "postgresql-client), or run on a machine that has them: "
            f"pg_dump --format=custom --file={target} '{dsn}'"
        )
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    with _partial(target) as partial:
        done = subprocess.run(
            [pg_dump, "--format=custom", "--no-password", f"--file={partial}", f"--dbname={dsn}"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        said = _pg_dump_said(done.stderr, password)
        if done.returncode != 0:
            reason = "; ".join(said) or f"exit status {done.returncode}"
            raise TidingsError(f"pg_dump could not back up {shown}: {reason}")
        size = _publish(partial, target, force)
    return Backup(target, size, shown, "pg_dump", tuple(said))


def _pg_dump_said(stderr: str, password: str | None) -> list[str]:
    """pg_dump's messages, one a line, without its name."""
    lines = []
    for line in stderr.splitlines():
        line = line.strip().removeprefix("pg_dump: ").removeprefix("error: ")
        if line:
            lines.append(blot(line, password))
    return lines
