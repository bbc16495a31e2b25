"""Which store the tests run on: SQLite files (the default) or, with
TIDINGS_TEST_STORE=postgresql, fresh databases on the machine's PostgreSQL
(TIDINGS_TEST_PG names the server; trust auth on 127.0.0.1 by default).

Every test asks `store_url(directory)` for its store: a SQLite file in the
test's own temporary directory, or a new database that is dropped when the
test session ends (conftest). The same directory and name give the same
store, so a test can reopen what `tidings serve` wrote. A new PostgreSQL
database is a copy of one migrated once per session (0.03 s, where migrating
each took 0.5 s); `empty=True` gives one with no tables, for migration tests.
"""

from __future__ import annotations

import functools
import itertools
import os
import secrets
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from aggregator.exceptions import first_line

STORE = os.environ.get("TIDINGS_TEST_STORE", "sqlite")
PG_SERVER = os.environ.get(
    "TIDINGS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
if STORE not in ("sqlite", "postgresql"):
    raise RuntimeError(f"TIDINGS_TEST_STORE={STORE!r}: expected sqlite or postgresql")

_SESSION = f"tidings_t_{secrets.token_hex(3)}"  # this session's databases share the prefix
_counter = itertools.count()
_made: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def on_postgresql() -> bool:
    return STORE == "postgresql"


@functools.cache
def _server() -> Engine:
    """One connection pool to the server for the whole session."""
    return create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")


def _admin(sql: str) -> None:
    with _server().connect() as conn:
        conn.execute(text(sql))


def store_url(directory: Path, name: str = "t", *, empty: bool = False) -> str:
    """The URL of a fresh store for one test (see the module docstring)."""
    if STORE == "sqlite":
        return f"sqlite:///{directory}/{name}.db"
    key = (str(directory), name)
    with _lock:
        if key not in _made:
            template = "" if empty else f' TEMPLATE "{_migrated()}"'
            _made[key] = _create(f"{_SESSION}_{next(_counter)}", template)
        return _made[key]


def _create(database: str, template: str = "") -> str:
    _admin(f'CREATE DATABASE "{database}"{template}')
    return make_url(PG_SERVER).set(database=database).render_as_string(hide_password=False)


@functools.cache
def _migrated() -> str:
    """The session's template: a database at the newest schema, never opened again."""
    from aggregator.store import Store

    database = f"{_SESSION}_template"
    url = _create(database)
    _made[("", database)] = url  # dropped with the rest
    Store(url).close()
    return database


def drop_all() -> None:
    """Drop every database this session made (connections still open to
    them are ended: a killed `tidings serve` may have left some)."""
    with _lock:
        for url in _made.values():
            database = make_url(url).database
            _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        _made.clear()
        _migrated.cache_clear()
    if STORE == "postgresql":
        _server().dispose()


def reachable() -> str | None:
    """Why the PostgreSQL server cannot be used for tests, or None when it can."""
    try:
        with create_engine(PG_SERVER, connect_args={"connect_timeout": 5}).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:  # any reason at all: it is reported, not handled
        return first_line(err)
    return None


if __name__ == "__main__":  # `python -m tests.stores`: exit 1 when PostgreSQL cannot be used
    import sys

    reason = reachable()
    if reason:
        print(f"PostgreSQL at {make_url(PG_SERVER).render_as_string()}: {reason}", file=sys.stderr)
    sys.exit(1 if reason else 0)
