"""Saved streams (a user's named queries, with the newest event id read in
each) and the tokens in personal-feed URLs.

A stream change is not an access change: nothing here bumps the access
revision or writes the audit log. What a stream shows is always cut down to
what its owner may see at the time of reading, so a stream can never widen
anyone's view.

Feed tokens are not stored: a token is `"{user_id}.{mac}"` where `mac` is an
HMAC of the user id and a per-user serial under a random key kept in the
`settings` table. Bumping the serial revokes every URL the user had; losing
the table of serials cannot leak tokens, and no token is ever written down.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from aggregator.exceptions import QueryError, TidingsError
from aggregator.filters import EventFilter
from aggregator.search import TextSearch
from aggregator.store.conditions import newest_id
from aggregator.store.people import People
from aggregator.store.schema import feed_tokens, streams, users
from aggregator.store.unread import Counted, UnreadCounts
from aggregator.visibility import Viewer

MAX_NAME = 100
MAX_STREAMS = 200  # per user: unread counts cost one query per stream
UNREAD_CAP = 1000
FEED_KEY = "feed_key"
_MAC_CHARS = 32  # 192 bits of the HMAC, url-safe base64


class StreamError(TidingsError):
    """A change to a saved stream was refused. `field` names the input at
    fault ("name", "query", "ids"); `position` points into a bad query."""

    def __init__(
        self, message: str, *, field: str | None = None, position: int | None = None
    ) -> None:
        self.field = field
        self.position = position
        super().__init__(message)


class UnknownStreamError(StreamError):
    """No such stream, or another user's: the same answer for both."""

    def __init__(self, stream_id: int) -> None:
        super().__init__(f"no stream {stream_id}")


@dataclass(frozen=True, slots=True)
class Stream:
    id: int
    user_id: int
    name: str
    query: str
    position: int
    last_read_id: int
    created_at: datetime
    changed_at: datetime  # its name or query; created_at until then


def check_stream_name(name: str) -> str:
    """The name as kept: trimmed, 1-100 characters, no control characters."""
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise StreamError(f"a stream needs a name of 1-{MAX_NAME} characters", field="name")
    # Cc/Cs: control characters and lone surrogates; Cn takes in U+FFFE/U+FFFF,
    # which XML (the feeds, OPML) cannot carry either.
    if any(unicodedata.category(c) in ("Cc", "Cs", "Cn") for c in name):
        raise StreamError(
            "a stream name cannot contain control characters or non-characters", field="name"
        )
    return name


def check_stream_query(query: str) -> str:
    """The query as kept, once it parses; the error points at the culprit."""
    try:
        EventFilter.parse(query)
    except QueryError as err:
        # The reason alone, as /api/events says it: `position` says where.
        raise StreamError(err.reason, field="query", position=err.position) from err
    return query


def _row(row: Any) -> Stream:
    return Stream(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        query=row.query,
        position=row.position,
        last_read_id=row.last_read_id,
        created_at=row.created_at,
        changed_at=row.changed_at or row.created_at,
    )


def _mac(key: str, user_id: int, serial: int) -> str:
    digest = hmac.new(key.encode(), f"{user_id}:{serial}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:_MAC_CHARS]


class Streams:
    """Thread-safe, like the Store it belongs to. Every method takes the
    owner's user id: a stream of another user is never found."""

    def __init__(
        self,
        read: Engine,
        writing: Callable[[], AbstractContextManager[Connection]],
        search: TextSearch,
    ) -> None:
        self._read = read
        self._writing = writing
        self._search = search
        self._unread = UnreadCounts(search, writing)
        self._settings = People(read, writing)
        self._key: str | None = None

    # --- reading ----------------------------------------------------------

    def list(self, user_id: int) -> list[Stream]:
        """The user's streams in their chosen order."""
        with self._read.connect() as conn:
            rows = conn.execute(
                select(streams)
                .where(streams.c.user_id == user_id)
                .order_by(streams.c.position, streams.c.id)
            )
            return [_row(r) for r in rows]

    def get(self, user_id: int, stream_id: int) -> Stream | None:
        with self._read.connect() as conn:
            return self._get(conn, user_id, stream_id)

    def unread_counts(
        self,
        user_id: int,
        *,
        viewer: Viewer | None,
        cap: int = UNREAD_CAP,
        stream_id: int | None = None,
    ) -> dict[int, int]:
        """By stream id (all the user's, or just `stream_id`): how many events
        `viewer` may see match the stream's query above its last-read id.
        Counting stops at `cap + 1`, so a value above `cap` means "more than
        cap" and a huge backlog costs no more than a small one. A stream whose
        saved query no longer parses (the language changed under it) is left
        out."""
        counted: list[Counted] = []
        for stream in self.list(user_id):
            if stream_id not in (None, stream.id):
                continue
            try:
                flt = EventFilter.parse(stream.query)
            except QueryError:
                continue
            counted.append(Counted(stream.id, stream.query, flt, stream.last_read_id))
        with self._read.connect() as conn:
            newest = newest_id(conn, None)
            found, keep = self._unread.counts(conn, counted, viewer=viewer, newest=newest, cap=cap)
        self._unread.keep(keep)
        return found

    # --- changing ---------------------------------------------------------

    def create(
        self, user_id: int, name: str, query: str, *, now: datetime, viewer: Viewer | None
    ) -> Stream:
        """A new stream, last in the user's order. It starts with nothing
        unread: its count is of what arrives from now on, not of the history
        that a new query happens to match (which the history view shows).
        `viewer` is the user's: the mark is at the newest event they may see."""
        name = check_stream_name(name)
        query = check_stream_query(query)
        with self._writing() as conn:
            if conn.scalar(select(users.c.id).where(users.c.id == user_id)) is None:
                raise StreamError(f"no user {user_id}")
            existing = [r.name for r in conn.execute(self._of(user_id))]
            if len(existing) >= MAX_STREAMS:
                raise StreamError(f"a user has at most {MAX_STREAMS} streams", field="name")
            self._unique(name, existing)
            position = conn.scalar(
                select(func.coalesce(func.max(streams.c.position) + 1, 0)).where(
                    streams.c.user_id == user_id
                )
            )
            newest = newest_id(conn, viewer)
            stream_id: int = conn.execute(
                insert(streams).values(
                    user_id=user_id,
                    name=name,
                    query=query,
                    position=position,
                    last_read_id=newest,
                    created_at=now,
                    changed_at=now,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            stream = self._get(conn, user_id, stream_id)
        assert stream is not None
        return stream

    def update(
        self,
        user_id: int,
        stream_id: int,
        *,
        now: datetime,
        viewer: Viewer | None,
        name: str | None = None,
        query: str | None = None,
    ) -> Stream:
        """Rename it or change its query. A new query starts, like a new
        stream, with nothing unread (`viewer`: the owner's): its backlog is
        history, not news."""
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = check_stream_name(name)
        if query is not None:
            values["query"] = check_stream_query(query)
        with self._writing() as conn:
            stream = self._get(conn, user_id, stream_id)
            if stream is None:
                raise UnknownStreamError(stream_id)
            if "name" in values:
                others = conn.execute(self._of(user_id).where(streams.c.id != stream_id))
                self._unique(values["name"], [r.name for r in others])
            if "query" in values and values["query"] != stream.query:
                values["last_read_id"] = max(stream.last_read_id, newest_id(conn, viewer))
            if values:
                values["changed_at"] = now
                conn.execute(update(streams).where(streams.c.id == stream_id).values(**values))
            stream = self._get(conn, user_id, stream_id)
        assert stream is not None
        return stream

    def delete(self, user_id: int, stream_id: int) -> None:
        with self._writing() as conn:
            gone = conn.execute(
                delete(streams).where(streams.c.id == stream_id, streams.c.user_id == user_id)
            ).rowcount
        if not gone:
            raise UnknownStreamError(stream_id)

    def reorder(self, user_id: int, stream_ids: Sequence[int]) -> None:
        """Put the user's streams in this order; it must name each exactly once."""
        with self._writing() as conn:
            mine = set(conn.scalars(select(streams.c.id).where(streams.c.user_id == user_id)).all())
            if len(stream_ids) != len(mine) or set(stream_ids) != mine:
                raise StreamError("the new order must list each of your streams once", field="ids")
            for position, stream_id in enumerate(stream_ids):
                conn.execute(
                    update(streams).where(streams.c.id == stream_id).values(position=position)
                )

    def mark_read(
        self, user_id: int, stream_id: int, up_to_id: int, *, viewer: Viewer | None
    ) -> int:
        """Everything up to `up_to_id` is read; the stream's new last-read id.

        It never moves back (a late request from another tab must not make
        read events unread again), and never past the newest event `viewer`
        may see: not past events that do not exist yet, which it would hide,
        and not to a hidden event's id, which would tell that it exists."""
        with self._writing() as conn:
            stream = self._get(conn, user_id, stream_id)
            if stream is None:
                raise UnknownStreamError(stream_id)
            newest = newest_id(conn, viewer)
            last = max(stream.last_read_id, min(up_to_id, newest))
            if last != stream.last_read_id:
                conn.execute(
                    update(streams).where(streams.c.id == stream_id).values(last_read_id=last)
                )
        return last

    # --- personal-feed tokens ---------------------------------------------

    def feed_token(self, user_id: int) -> str:
        with self._read.connect() as conn:
            serial = self._serial(conn, user_id)
        return self._token(user_id, serial)

    def rotate_feed_token(self, user_id: int) -> str:
        """A new token for the user; every feed URL made with an older one
        stops working at once."""
        with self._writing() as conn:
            serial = self._serial(conn, user_id) + 1
            changed = conn.execute(
                update(feed_tokens).where(feed_tokens.c.user_id == user_id).values(serial=serial)
            ).rowcount
            if not changed:
                conn.execute(insert(feed_tokens).values(user_id=user_id, serial=serial))
        return self._token(user_id, serial)

    def user_for_feed_token(self, token: str) -> int | None:
        """The id of the user whose current token this is, else None. Whether
        that user may still sign in (not disabled) is the caller's question."""
        raw_id, dot, _ = token.partition(".")
        if not (dot and raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 18):
            return None
        user_id = int(raw_id)
        with self._read.connect() as conn:
            exists = conn.scalar(select(users.c.id).where(users.c.id == user_id))
            serial = self._serial(conn, user_id)
        expected = self._token(user_id, serial)
        # As bytes: compare_digest refuses non-ASCII str, and a URL may carry any.
        if exists is None or not hmac.compare_digest(expected.encode(), token.encode()):
            return None
        return user_id

    # --- helpers ----------------------------------------------------------

    def _token(self, user_id: int, serial: int) -> str:
        if self._key is None:
            self._key = self._settings.setting(FEED_KEY, lambda: secrets.token_urlsafe(32))
        return f"{user_id}.{_mac(self._key, user_id, serial)}"

    @staticmethod
    def _serial(conn: Connection, user_id: int) -> int:
        serial = conn.scalar(select(feed_tokens.c.serial).where(feed_tokens.c.user_id == user_id))
        return int(serial or 0)

    @staticmethod
    def _get(conn: Connection, user_id: int, stream_id: int) -> Stream | None:
        row = conn.execute(
            select(streams).where(streams.c.id == stream_id, streams.c.user_id == user_id)
        ).first()
        return _row(row) if row is not None else None

    @staticmethod
    def _of(user_id: int) -> Any:
        return select(streams.c.name).where(streams.c.user_id == user_id)

    @staticmethod
    def _unique(name: str, existing: Sequence[str]) -> None:
        # casefold in Python: SQLite's lower() folds ASCII only.
        if name.casefold() in {n.casefold() for n in existing}:
            raise StreamError(f"you already have a stream named {name!r}", field="name")
