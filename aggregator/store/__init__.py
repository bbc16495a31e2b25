"""The event store: SQLAlchemy Core on SQLite (embedded) or PostgreSQL.

Contract: every method is synchronous and thread-safe (the async side calls
them through a thread); datetimes are aware UTC; a poll's new events and the
source's state are written in ONE transaction (`record`), so a crash can
never lose or duplicate an event. SQLite runs in WAL mode with one writer:
writes take the lock up front (BEGIN IMMEDIATE) instead of failing half-way.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url

from aggregator.config import SourceConfig, parse_source
from aggregator.connector import ConnectorOptions
from aggregator.decide import Prepared, decide, event_time
from aggregator.exceptions import ConfigError, TidingsError
from aggregator.filters import EventFilter
from aggregator.registry import connector_class, first_poll
from aggregator.search import TextSearch, text_search_for
from aggregator.store.conditions import matching, newest_id
from aggregator.store.people import People, audit, bump_revision
from aggregator.store.retention import BATCH, RetentionPolicy
from aggregator.store.retention import prune as prune_events
from aggregator.store.schema import (
    ALERTS_SOURCE,
    entries,
    events,
    sources,
    webhook_deliveries,
)
from aggregator.store.streams import Streams
from aggregator.store.unread import forget_deleted
from aggregator.types import Actor, Event, JSONObject
from aggregator.visibility import Viewer

log = logging.getLogger(__name__)

MAX_PAGE = 500
# A relevance order ranks the newest this many matches of a query: a word in
# most events would otherwise score every one of them (3 s at 10 million on
# PostgreSQL). An older match than those is found by a narrower query.
RANK_WITHIN = 20_000


_WRITER_LOCK = 0x7469646E  # "tidn": the PostgreSQL advisory lock all writers share
# PostgreSQL: each transaction that added events notifies this channel with its
# highest new id, delivered at commit, so web workers look at once (aggregator.notify).
EVENTS_CHANNEL = "tidings_events"
_NEWEST = "tidings_newest"  # key in a connection's info: the highest id it added

_SUCCESS: dict[str, Any] = {
    "last_poll_at": bindparam("now"),
    "last_success_at": bindparam("now"),
    "last_error": None,
    "last_warning": bindparam("warn"),
    "consecutive_failures": 0,
    "next_poll_at": bindparam("next"),
    "permanent_redirect": bindparam("moved"),
}
_SUCCEEDED = update(sources).where(sources.c.id == bindparam("sid")).values(**_SUCCESS)
_SUCCEEDED_WITH_STATE = _SUCCEEDED.values(state=bindparam("state"))
_FAILED = (
    update(sources)
    .where(sources.c.id == bindparam("sid"))
    .values(
        last_poll_at=bindparam("now"),
        last_error=bindparam("err"),
        last_error_at=bindparam("now"),
        consecutive_failures=sources.c.consecutive_failures + 1,
        next_poll_at=bindparam("next"),
    )
)
_GONE = _FAILED.values(disabled_reason=bindparam("err"))
# A webhook delivery committed: the source is healthy (its schedule stays: push
# sources are never due); with its payload, for the admin's Test.
_DELIVERED = (
    update(sources)
    .where(sources.c.id == bindparam("sid"))
    .values(
        last_poll_at=bindparam("now"),
        last_success_at=bindparam("now"),
        last_error=None,
        last_warning=bindparam("warn"),
        consecutive_failures=0,
    )
)
_DELIVERED_WITH_STATE = _DELIVERED.values(state=bindparam("state"))
# One item's latest version, by (source, external id): values added per use.
_ENTRY_UPDATE = update(entries).where(
    entries.c.source_id == bindparam("s"), entries.c.external_id == bindparam("x")
)

# Where alerts about failing sources go: admins only, never polled.
ALERTS = SourceConfig(
    id=ALERTS_SOURCE,
    kind="system",
    options=ConnectorOptions(),
    title="Tidings alerts",
    audience=(),
    tags=("alert",),
    enabled=False,
    origin="system",
)


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A source's health as admins and `tidings sources` see it."""

    id: str
    kind: str
    title: str | None
    origin: str
    enabled: bool
    next_poll_at: datetime | None
    last_poll_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    consecutive_failures: int
    permanent_redirect: str | None
    event_count: int
    audience: tuple[str, ...] = ()
    events_last_week: int = 0
    disabled_reason: str | None = None  # why the poller stopped it (410 Gone)
    last_warning: str | None = None  # what the last successful poll could not read


@dataclass(frozen=True, slots=True)
class Claim:
    """A source taken for polling, with what the poll needs from the store."""

    source_id: str
    state: JSONObject | None
    failures: int
    until: datetime  # when the claim lapses unless renewed (Store.renew)


@dataclass(frozen=True, slots=True)
class PollRecord:
    """A successful poll's outcome: what it found and the connector's new state."""

    source: SourceConfig
    items: Sequence[Prepared]
    state: JSONObject | None
    now: datetime
    next_poll_at: datetime
    permanent_redirect: str | None = None
    alert: Prepared | None = None  # "recovered", for the alerts source
    adopt_url: str | None = None  # a web-made source's new URL (a permanent redirect)
    rebaseline: bool = False  # changed items update `entries` silently (PollResult)
    warning: str | None = None  # shown to admins: what of the poll failed (PollResult)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A webhook delivery that passed its signature check, mapped and prepared."""

    source: SourceConfig
    delivery_id: str
    items: Sequence[Prepared]
    now: datetime
    payload: JSONObject | None = None  # kept as state["last_payload"], for the admin's Test
    warning: str | None = None  # what of the payload could not be mapped


@dataclass(frozen=True, slots=True)
class FailureRecord:
    source_id: str
    error: str
    now: datetime
    next_poll_at: datetime
    alert: Prepared | None = None  # "failing", for the alerts source
    gone: bool = False  # 410: stop polling until an admin resumes the source


def _sqlite_engine(url: str, *, writer: bool) -> Engine:
    engine = create_engine(url, pool_size=1 if writer else 8, max_overflow=0 if writer else 8)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN, not the driver.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def _row_to_event(row: RowMapping) -> Event:
    return Event(
        id=row["id"],
        source_id=row["source_id"],
        kind=row["kind"],
        external_id=row["external_id"],
        content_hash=row["content_hash"],
        verb=row["verb"],
        object_type=row["object_type"],
        title=row["title"],
        summary=row["summary"],
        content_html=row["content_html"],
        url=row["url"],
        actor=Actor(row["actor_name"], row["actor_email"], row["actor_url"]),
        published=row["published"],
        updated=row["updated"],
        tags=tuple(row["tags"]),
        thread_id=row["thread_id"],
        extra=row["extra"],
        audience=tuple(row["audience"]),
        ingested_at=row["ingested_at"],
    )


def source_config_json(source: SourceConfig, raw: Mapping[str, Any] | None = None) -> JSONObject:
    """What the store keeps of a source's config (secrets stay as env:/file: refs).
    A source made in the web admin also keeps the table it was made from."""
    extra = {"raw": dict(raw)} if raw is not None else {}
    return {
        **extra,
        # Only when set: a key every source gained would make each one "changed",
        # and due at once, on the first start after an upgrade.
        **({"retention": source.retention} if source.retention is not None else {}),
        "title": source.title,
        "interval": source.interval,
        "cron": source.cron,
        "audience": list(source.audience),
        "tags": list(source.tags),
        "track_updates": source.track_updates,
        "obey_hints": source.obey_hints,
        "options": source.options.model_dump(mode="json"),
    }


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self._write = _sqlite_engine(url, writer=True)
            self._read = _sqlite_engine(url, writer=False)
        else:
            # A host that drops packets must fail a request soon, not after TCP's
            # ~2 minutes; a connect_timeout in the URL wins.
            timeout = {} if "connect_timeout" in parsed.query else {"connect_timeout": 10}
            self._write = self._read = create_engine(url, pool_pre_ping=True, connect_args=timeout)
        # Free text in queries: what every EventFilter.where() here is given.
        self.search: TextSearch = text_search_for(parsed.get_backend_name())
        self.migrate()
        self.optimize()
        self.people = People(self._read, self._writing)
        self.streams = Streams(self._read, self._writing, self.search)

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest migration."""
        cfg = AlembicConfig(str(Path(__file__).with_name("alembic.ini")))
        with self._write.begin() as conn:
            if not self.is_sqlite:  # processes starting at once migrate in turn
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITER_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def optimize(self) -> None:
        """Refresh the query planner's statistics (SQLite) when the events
        table has no statistics yet or has halved or doubled since they were
        taken. Cheap: ANALYZE reads the indexes, ~0.1 s per million events.

        Without them SQLite guesses that any filter is selective and sorts the
        viewer's sources' index instead of walking ids newest first: on
        1,000,000 events a member's filtered page took 400 ms instead of 1 ms.
        Call at start-up and now and then (the maintenance job)."""
        if not self.is_sqlite:
            return
        with self._writing() as conn:
            rows = conn.scalar(select(func.count()).select_from(events)) or 0
            known = 0
            if conn.scalar(text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")):
                stat = conn.scalar(text("SELECT stat FROM sqlite_stat1 WHERE tbl = 'events'"))
                known = int(stat.split()[0]) if stat else 0
            if rows >= 1000 and not known / 2 <= rows <= known * 2:
                conn.execute(text("ANALYZE events"))

    def close(self) -> None:
        self._write.dispose()
        self._read.dispose()

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self._write.begin() as conn:
            if not self.is_sqlite:
                # One writer at a time, as on SQLite: event ids then become visible
                # in id order, so a reader's cursor can never skip a later commit.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITER_LOCK})
            conn.info.pop(_NEWEST, None)  # left by a rolled-back transaction on this connection
            yield conn
            newest = conn.info.pop(_NEWEST, None)
            if newest is not None and not self.is_sqlite:
                # Ids only, never bodies: listeners read the events themselves.
                conn.execute(
                    text("SELECT pg_notify(:channel, :id)"),
                    {"channel": EVENTS_CHANNEL, "id": str(newest)},
                )

    # --- sources -----------------------------------------------------------

    def sync_sources(
        self, configured: Iterable[SourceConfig], now: datetime, *, config_file: str | None = None
    ) -> None:
        """Make the file-defined sources in the store match the config file.

        New and changed ones are due at once (changed ones keep their state);
        sources this file defined before and no longer does are disabled
        (their events stay). Another config file's sources are left alone. A
        source the web admin made under an id the file now uses becomes the
        file's: the file is the authority, and the UI cannot edit file sources.
        """
        configured = list(configured)
        actor = f"config:{config_file}"
        with self._writing() as conn:
            existing = {
                r.id: r
                for r in conn.execute(
                    select(
                        sources.c.id,
                        sources.c.origin,
                        sources.c.config,
                        sources.c.enabled,
                        sources.c.state,
                    )
                )
            }
            changed_access = False
            for src in configured:
                values: dict[str, Any] = {
                    "kind": src.kind,
                    "title": src.title,
                    "origin": src.origin,
                    "config": {**source_config_json(src), "file": config_file},
                    "enabled": src.enabled,
                }
                if src.id in existing:
                    old = existing[src.id]
                    if old.origin != "file":
                        log.warning("source %s: the config file takes it over", src.id)
                        audit(conn, actor, "source.takeover", src.id, now)
                    if (old.config, old.enabled) != (values["config"], values["enabled"]):
                        # changed settings take effect at once
                        values["next_poll_at"] = first_poll(src.kind, now)
                    if old.config.get("options") != values["config"]["options"]:
                        # An ETag of the old URL must not make the new one answer 304;
                        # what identifies items survives (Connector.carry_state).
                        values["state"] = _carried(src.kind, old.state)
                        values["disabled_reason"] = None  # a new URL may not be gone
                    if old.config.get("audience") != values["config"]["audience"]:
                        self._set_audience(conn, src.id, src.audience)
                        changed_access = True
                    conn.execute(update(sources).where(sources.c.id == src.id).values(**values))
                else:
                    changed_access = True
                    conn.execute(
                        insert(sources).values(
                            id=src.id,
                            next_poll_at=first_poll(src.kind, now),
                            consecutive_failures=0,
                            created_at=now,
                            **values,
                        )
                    )
            gone = {
                i
                for i, r in existing.items()
                if r.origin == "file" and r.config.get("file") == config_file
            } - {s.id for s in configured}
            if gone:
                conn.execute(update(sources).where(sources.c.id.in_(gone)).values(enabled=False))
            if changed_access:
                bump_revision(conn)

    @staticmethod
    def _set_audience(conn: Connection, source_id: str, audience: Sequence[str]) -> None:
        """Events inherit their source's audience; keep the copies current."""
        conn.execute(
            update(events).where(events.c.source_id == source_id).values(audience=list(audience))
        )

    # --- sources made in the web admin -------------------------------------

    def db_sources(self) -> list[SourceConfig]:
        """The sources made in the web admin. One that no longer validates (its
        connector was uninstalled, say) is logged and left out: it must not
        stop the others."""
        with self._read.connect() as conn:
            rows = conn.execute(
                select(sources.c.id, sources.c.config).where(sources.c.origin == "db")
            ).all()
        found = []
        for row in rows:
            try:
                found.append(parse_source(row.config["raw"], f"source {row.id}", "db"))
            except (ConfigError, KeyError) as err:
                log.error("source %s cannot be loaded: %s", row.id, err)
        return found

    def known_sources(
        self, file_sources: Iterable[SourceConfig]
    ) -> tuple[int, dict[str, SourceConfig]]:
        """(the store's revision, every source by id): those made in the web
        admin, with the config file's own winning an id they share."""
        revision = self.people.revision()
        found = {s.id: s for s in self.db_sources()}
        found.update((s.id, s) for s in file_sources)
        return revision, found

    def source_table(self, source_id: str) -> tuple[str, dict[str, Any]] | None:
        """A source's origin and the table it was defined with (secrets stay
        references), for the admin's edit form."""
        with self._read.connect() as conn:
            row = conn.execute(
                select(sources.c.origin, sources.c.config, sources.c.kind).where(
                    sources.c.id == source_id
                )
            ).first()
        if row is None:
            return None
        raw = row.config.get("raw")
        if raw is None:  # a file source: rebuild a table from what was kept
            raw = {
                "id": source_id,
                "kind": row.kind,
                **{k: v for k, v in row.config.items() if k not in ("options", "file")},
                **row.config.get("options", {}),
            }
        return row.origin, raw

    def create_source(self, raw: Mapping[str, Any], *, actor: str, now: datetime) -> SourceConfig:
        source = parse_source(raw, "source", "db")
        with self._writing() as conn:
            if conn.scalar(select(sources.c.id).where(sources.c.id == source.id)) is not None:
                raise ConfigError([f"id: a source {source.id!r} already exists"])
            conn.execute(
                insert(sources).values(
                    id=source.id,
                    kind=source.kind,
                    title=source.title,
                    origin="db",
                    config=source_config_json(source, raw),
                    enabled=source.enabled,
                    next_poll_at=first_poll(source.kind, now),
                    consecutive_failures=0,
                    created_at=now,
                )
            )
            audit(conn, actor, "source.create", source.id, now, kind=source.kind)
            bump_revision(conn)
        return source

    def update_source(
        self, source_id: str, raw: Mapping[str, Any], *, actor: str, now: datetime
    ) -> SourceConfig:
        source = parse_source({**raw, "id": source_id}, "source", "db")
        with self._writing() as conn:
            old = self._editable(conn, source_id)
            config = source_config_json(source, {**raw, "id": source_id})
            values: dict[str, Any] = {
                "kind": source.kind,
                "title": source.title,
                "config": config,
                "enabled": source.enabled,
                "next_poll_at": first_poll(source.kind, now),
            }
            if old.config.get("options") != config["options"] or old.kind != source.kind:
                values["state"] = (
                    _carried(source.kind, old.state) if old.kind == source.kind else None
                )
                values["disabled_reason"] = None
            if old.config.get("audience") != config["audience"]:
                self._set_audience(conn, source_id, source.audience)
            conn.execute(update(sources).where(sources.c.id == source_id).values(**values))
            audit(conn, actor, "source.update", source_id, now)
            bump_revision(conn)
        return source

    def set_source_enabled(
        self, source_id: str, enabled: bool, *, actor: str, now: datetime
    ) -> None:
        with self._writing() as conn:
            old = self._editable(conn, source_id)
            raw = {**old.config["raw"], "enabled": enabled}
            conn.execute(
                update(sources)
                .where(sources.c.id == source_id)
                .values(
                    enabled=enabled,
                    config={**old.config, "raw": raw},
                    next_poll_at=first_poll(old.kind, now),
                    disabled_reason=None,
                )
            )
            audit(conn, actor, "source.enable" if enabled else "source.disable", source_id, now)
            bump_revision(conn)

    def delete_source(self, source_id: str, *, actor: str, now: datetime) -> int:
        """Delete a web-admin source and its events; how many events went."""
        with self._writing() as conn:
            self._editable(conn, source_id)
            conn.execute(delete(entries).where(entries.c.source_id == source_id))
            forget_deleted(
                conn,
                conn.scalar(select(func.max(events.c.id)).where(events.c.source_id == source_id)),
            )
            gone = conn.execute(delete(events).where(events.c.source_id == source_id)).rowcount
            conn.execute(delete(sources).where(sources.c.id == source_id))
            audit(conn, actor, "source.delete", source_id, now, events=gone)
            bump_revision(conn)
        return gone

    @staticmethod
    def _editable(conn: Connection, source_id: str) -> Any:
        row = conn.execute(
            select(sources.c.origin, sources.c.config, sources.c.kind, sources.c.state).where(
                sources.c.id == source_id
            )
        ).first()
        if row is None:
            raise TidingsError(f"no source {source_id!r}")
        if row.origin == "file":
            raise TidingsError(
                f"source {source_id!r} is defined in {row.config.get('file')}; edit it there"
            )
        if row.origin == "system":
            raise TidingsError(f"source {source_id!r} belongs to Tidings itself")
        return row

    def claim_due(self, now: datetime, limit: int, lease: float) -> list[Claim]:
        """Take up to `limit` due sources, pushing their next poll `lease`
        seconds ahead so no other poller takes them while this one works.
        Sources the poller stopped (410 Gone) are never due. One statement
        (UPDATE ... RETURNING): three cost twice as much per claim."""
        if limit <= 0:
            return []
        due = (
            select(sources.c.id)
            .where(
                sources.c.enabled,
                sources.c.disabled_reason.is_(None),
                sources.c.next_poll_at <= now,
            )
            .order_by(sources.c.next_poll_at)
            .limit(limit)
        )
        if not self.is_sqlite:
            due = due.with_for_update(skip_locked=True)
        until = now + timedelta(seconds=lease)
        claim = (
            update(sources)
            .where(sources.c.id.in_(due.scalar_subquery()))
            .values(next_poll_at=until)
            .returning(sources.c.id, sources.c.state, sources.c.consecutive_failures)
        )
        with self._writing() as conn:
            return [
                Claim(r.id, r.state, r.consecutive_failures, until) for r in conn.execute(claim)
            ]

    def claim(self, source_ids: Sequence[str], now: datetime, lease: float) -> list[Claim]:
        """Take these sources now, whatever their schedule (`tidings poll`),
        but those the poller stopped (410 Gone): an admin resumes them first."""
        with self._writing() as conn:
            stopped = {
                r
                for chunk in _chunks(source_ids, 500)
                for r in conn.scalars(
                    select(sources.c.id).where(
                        sources.c.id.in_(chunk), sources.c.disabled_reason.is_not(None)
                    )
                )
            }
            wanted = [i for i in source_ids if i not in stopped]
            return self._claim(conn, wanted, now + timedelta(seconds=lease))

    @staticmethod
    def _claim(conn: Connection, source_ids: Sequence[str], until: datetime) -> list[Claim]:
        if not source_ids:
            return []
        query = select(sources.c.id, sources.c.state, sources.c.consecutive_failures)
        claims = [
            Claim(r.id, r.state, r.consecutive_failures, until)
            for chunk in _chunks(source_ids, 500)
            for r in conn.execute(query.where(sources.c.id.in_(chunk)))
        ]
        for chunk in _chunks(source_ids, 500):
            conn.execute(update(sources).where(sources.c.id.in_(chunk)).values(next_poll_at=until))
        return claims

    def renew(self, claims: Mapping[str, datetime], until: datetime) -> set[str]:
        """Extend to `until` the claims (source id: when it lapses) that are
        still as they were made: not yet recorded by their poll, made due by
        an admin, or taken by another poller after lapsing. The ids renewed."""
        renewed: set[str] = set()
        by_lapse: dict[datetime, list[str]] = {}
        for source_id, lapse in claims.items():
            by_lapse.setdefault(lapse, []).append(source_id)
        with self._writing() as conn:
            for lapse, ids in by_lapse.items():
                for chunk in _chunks(ids, 500):
                    renewed.update(
                        conn.scalars(
                            update(sources)
                            .where(sources.c.id.in_(chunk), sources.c.next_poll_at == lapse)
                            .values(next_poll_at=until)
                            .returning(sources.c.id)
                        )
                    )
        return renewed

    def source_state(self, source_id: str) -> tuple[JSONObject | None, int]:
        """The connector's opaque state and the count of consecutive failures."""
        with self._read.connect() as conn:
            row = conn.execute(
                select(sources.c.state, sources.c.consecutive_failures).where(
                    sources.c.id == source_id
                )
            ).one()
            return row.state, row.consecutive_failures

    def set_next_poll(self, source_ids: Sequence[str], when: datetime | None) -> None:
        """Make these sources due at `when` (None: never, a push source)."""
        with self._writing() as conn:
            conn.execute(
                update(sources).where(sources.c.id.in_(source_ids)).values(next_poll_at=when)
            )

    def record(self, records: Sequence[PollRecord | FailureRecord]) -> list[list[int]]:
        """Commit several polls' outcomes in ONE transaction (group commit).

        For each PollRecord its new events and its source's state are written
        together; returns the new event ids per record (oldest first; [] for
        failures). The sources' rows are updated with one executemany per
        shape: most polls find nothing new, and then this is all they cost.
        """
        results: list[list[int]] = []
        ok: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        failed: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        with self._writing() as conn:
            for r in records:
                # A record's alert is committed with it, listed after its own events.
                alert = (
                    self._append(conn, PollRecord(ALERTS, [r.alert], None, r.now, r.now))
                    if r.alert
                    else []
                )
                if isinstance(r, FailureRecord):
                    results.append(alert)
                    failed[r.gone].append(
                        {"sid": r.source_id, "now": r.now, "next": r.next_poll_at, "err": r.error}
                    )
                    continue
                results.append((self._append(conn, r) if r.items else []) + alert)
                row = {
                    "sid": r.source.id,
                    "now": r.now,
                    "next": r.next_poll_at,
                    "moved": r.permanent_redirect,
                    "warn": r.warning,
                }
                if r.state is not None:
                    row["state"] = r.state
                ok[r.state is not None].append(row)
            for with_state, rows in ok.items():
                if rows:
                    conn.execute(_SUCCEEDED_WITH_STATE if with_state else _SUCCEEDED, rows)
            for gone, rows in failed.items():
                if rows:
                    conn.execute(_GONE if gone else _FAILED, rows)
            for r in records:
                if isinstance(r, PollRecord) and r.adopt_url:
                    self._adopt(conn, r.source.id, r.adopt_url, r.now)
        return results

    @staticmethod
    def _adopt(conn: Connection, source_id: str, url: str, now: datetime) -> None:
        """Move a web-made source to the URL it was permanently redirected to."""
        row = conn.execute(
            select(sources.c.origin, sources.c.config).where(sources.c.id == source_id)
        ).first()
        if row is None or row.origin != "db":
            return  # the config file is the authority over its own sources
        try:  # the new URL must pass what an admin's edit would
            parse_source({**row.config["raw"], "url": url}, "source", "db")
        except ConfigError:
            return  # left reported, for an admin to judge
        old = row.config["raw"].get("url")
        config = {
            **row.config,
            "raw": {**row.config["raw"], "url": url},
            "options": {**row.config["options"], "url": url},
        }
        conn.execute(
            update(sources)
            .where(sources.c.id == source_id)
            .values(config=config, permanent_redirect=None)
        )
        audit(conn, "poller", "source.redirect", source_id, now, old=old, new=url)
        bump_revision(conn)

    def resume_source(self, source_id: str, *, actor: str, now: datetime) -> None:
        """Poll again a source the poller disabled (410 Gone), at once and
        with a clean failure count; file sources too, since the file did not
        disable it."""
        with self._writing() as conn:
            found = conn.execute(
                update(sources)
                .where(sources.c.id == source_id, sources.c.origin != "system")
                .values(disabled_reason=None, consecutive_failures=0, next_poll_at=now)
            ).rowcount
            if not found:
                raise TidingsError(f"no source {source_id!r}")
            audit(conn, actor, "source.resume", source_id, now)

    def record_poll(
        self,
        source: SourceConfig,
        items: Sequence[Prepared],
        *,
        state: JSONObject | None,
        now: datetime,
        next_poll_at: datetime,
        permanent_redirect: str | None = None,
    ) -> list[int]:
        """Append what is new or changed and save the source's state, atomically."""
        return self.record(
            [PollRecord(source, items, state, now, next_poll_at, permanent_redirect)]
        )[0]

    def record_failure(
        self, source_id: str, error: str, *, now: datetime, next_poll_at: datetime
    ) -> None:
        self.record([FailureRecord(source_id, error, now, next_poll_at)])

    # --- webhook deliveries ------------------------------------------------

    def record_delivery(self, rec: DeliveryRecord) -> list[int] | None:
        """Commit one delivery (see record_deliveries): its new event ids,
        oldest first; None when it was received before (nothing is written)."""
        return self.record_deliveries([rec])[0]

    def record_deliveries(self, records: Sequence[DeliveryRecord]) -> list[list[int] | None]:
        """Commit webhook deliveries in ONE transaction (group commit): for
        each, its delivery id (so a replay stores nothing), its new or changed
        events, and its source's health and last payload. Returns per record
        its new event ids, oldest first, or None for a delivery received
        before, in this batch or earlier: nothing of it is written.

        The check for earlier deliveries runs under the writer lock (SQLite's
        one writer, PostgreSQL's advisory lock), so two copies of a delivery
        racing in can never both be stored."""
        results: list[list[int] | None] = [None] * len(records)
        with self._writing() as conn:
            seen = self._seen_deliveries(conn, records)
            fresh: list[int] = []  # indexes into records
            for i, rec in enumerate(records):
                key = (rec.source.id, rec.delivery_id)
                if key not in seen:
                    seen.add(key)
                    fresh.append(i)
            if not fresh:
                return results
            conn.execute(
                insert(webhook_deliveries),
                [
                    {"source_id": r.source.id, "delivery_id": r.delivery_id, "received_at": r.now}
                    for r in (records[i] for i in fresh)
                ],
            )
            for chunk in _delivery_chunks([(i, records[i]) for i in fresh]):
                for i, ids in self._append_deliveries(conn, chunk).items():
                    results[i] = ids
            self._delivered(conn, [records[i] for i in fresh])
        return results

    @staticmethod
    def _delivered(conn: Connection, records: Sequence[DeliveryRecord]) -> None:
        """Each source's health after its newest delivery, and its newest payload."""
        rows: dict[str, dict[str, Any]] = {}
        for rec in records:  # oldest first: the newest wins
            row = rows.setdefault(rec.source.id, {"sid": rec.source.id})
            row.update(now=rec.now, warn=rec.warning)
            if rec.payload is not None:
                row["state"] = {"last_payload": rec.payload}
        for with_state in (True, False):
            same = [r for r in rows.values() if ("state" in r) == with_state]
            if same:
                conn.execute(_DELIVERED_WITH_STATE if with_state else _DELIVERED, same)

    @staticmethod
    def _seen_deliveries(
        conn: Connection, records: Sequence[DeliveryRecord]
    ) -> set[tuple[str, str]]:
        """Which of these (source, delivery id) pairs were received before."""
        wanted: dict[str, list[str]] = {}
        for rec in records:
            wanted.setdefault(rec.source.id, []).append(rec.delivery_id)
        seen: set[tuple[str, str]] = set()
        for source_id, ids in wanted.items():
            for chunk in _chunks(ids, 500):
                found = conn.scalars(
                    select(webhook_deliveries.c.delivery_id).where(
                        webhook_deliveries.c.source_id == source_id,
                        webhook_deliveries.c.delivery_id.in_(chunk),
                    )
                )
                seen.update((source_id, d) for d in found)
        return seen

    def _append_deliveries(
        self, conn: Connection, chunk: Sequence[tuple[int, DeliveryRecord]]
    ) -> dict[int, list[int]]:
        """Append the items of deliveries to one source that share no item
        identity, as one poll would; the new event ids per delivery."""
        first = chunk[0][1]
        items = [item for _, rec in chunk for item in rec.items]
        if not items:
            return {i: [] for i, _ in chunk}
        newest = max(rec.now for _, rec in chunk)
        new_ids = self._append(conn, PollRecord(first.source, items, None, newest, newest))
        if len(chunk) == 1:
            return {chunk[0][0]: new_ids}
        # Which delivery each new event came from: by its identity, unique in the chunk.
        made: dict[str, int] = {}
        new = set(new_ids)
        for part in _chunks([item.external_id for item in items], 500):
            made.update(
                (r.external_id, r.event_id)
                for r in conn.execute(
                    select(entries.c.external_id, entries.c.event_id).where(
                        entries.c.source_id == first.source.id, entries.c.external_id.in_(part)
                    )
                )
                if r.event_id in new
            )
        return {
            i: sorted(made[x.external_id] for x in rec.items if x.external_id in made)
            for i, rec in chunk
        }

    def delivery_seen(self, source_id: str, delivery_id: str) -> bool:
        with self._read.connect() as conn:
            found = conn.scalar(
                select(webhook_deliveries.c.received_at).where(
                    webhook_deliveries.c.source_id == source_id,
                    webhook_deliveries.c.delivery_id == delivery_id,
                )
            )
        return found is not None

    def record_delivery_failure(
        self, source_id: str, error: str, *, now: datetime, payload: JSONObject | None = None
    ) -> None:
        """Show admins why a delivery was refused; `payload` (only ever an
        authenticated one) becomes the last payload, to test a fix on. The
        schedule is left alone: push sources are never due."""
        values: dict[str, Any] = {
            "last_error": error,
            "last_error_at": now,
            "consecutive_failures": sources.c.consecutive_failures + 1,
        }
        if payload is not None:
            values["state"] = {"last_payload": payload}
        with self._writing() as conn:
            conn.execute(update(sources).where(sources.c.id == source_id).values(**values))

    def forget_deliveries(self, before: datetime) -> int:
        """Drop delivery ids received before `before`; how many went. An event
        that was stored stays deduplicated by its identity after that."""
        with self._writing() as conn:
            return conn.execute(
                delete(webhook_deliveries).where(webhook_deliveries.c.received_at < before)
            ).rowcount

    # --- retention -----------------------------------------------------------

    def prune(
        self,
        now: datetime,
        policy: RetentionPolicy,
        *,
        batch: int = BATCH,
        stop: threading.Event | None = None,
    ) -> int:
        """Delete the events stored longer ago than `policy` keeps them, in
        batches of short write transactions, until done or `stop` is set; how
        many went. Entries stay, so items still listed upstream are not stored
        again (aggregator.store.retention)."""
        return prune_events(self._read, self._writing, now, policy, batch=batch, stop=stop)

    def _append(self, conn: Connection, rec: PollRecord) -> list[int]:
        """Append a poll's new and changed items; their ids, oldest first."""
        source = rec.source
        known: dict[str, str] = {}
        for chunk in _chunks([i.external_id for i in rec.items], 500):
            found = conn.execute(
                select(entries.c.external_id, entries.c.content_hash).where(
                    entries.c.source_id == source.id, entries.c.external_id.in_(chunk)
                )
            )
            known.update((r.external_id, r.content_hash) for r in found)
        fresh = decide(rec.items, known, track_updates=source.track_updates and not rec.rebaseline)
        if rec.rebaseline:
            stale = [
                {"s": source.id, "x": i.external_id, "h": i.content_hash}
                for i in rec.items
                if known.get(i.external_id, i.content_hash) != i.content_hash
            ]
            if stale:
                conn.execute(_ENTRY_UPDATE.values(content_hash=bindparam("h")), stale)
        # Oldest first, so ids follow the order things happened upstream.
        fresh.sort(key=lambda p: event_time(p.data, rec.now))
        new_ids: list[int] = []
        if fresh:
            inserted = conn.execute(
                insert(events).returning(events.c.id, sort_by_parameter_order=True),
                [self._event_row(source, item, rec.now) for item in fresh],
            )
            new_ids = list(inserted.scalars())
            conn.info[_NEWEST] = max(new_ids[-1], conn.info.get(_NEWEST, 0))
            self.search.index(
                conn,
                (
                    (event_id, item.data.title, item.data.summary, item.data.actor.name)
                    for item, event_id in zip(fresh, new_ids, strict=True)
                ),
            )
            latest = [
                {"s": source.id, "x": item.external_id, "h": item.content_hash, "e": event_id}
                for item, event_id in zip(fresh, new_ids, strict=True)
            ]
            added = [row for row in latest if row["x"] not in known]
            changed = [row for row in latest if row["x"] in known]
            if added:
                conn.execute(
                    insert(entries).values(
                        source_id=bindparam("s"),
                        external_id=bindparam("x"),
                        content_hash=bindparam("h"),
                        event_id=bindparam("e"),
                    ),
                    added,
                )
            if changed:
                conn.execute(
                    _ENTRY_UPDATE.values(content_hash=bindparam("h"), event_id=bindparam("e")),
                    changed,
                )
        return new_ids

    @staticmethod
    def _event_row(source: SourceConfig, item: Prepared, now: datetime) -> dict[str, Any]:
        d = item.data
        return {
            "source_id": source.id,
            "kind": source.kind,
            "external_id": item.external_id,
            "content_hash": item.content_hash,
            "verb": d.verb,
            "object_type": d.object_type,
            "title": d.title,
            "summary": d.summary,
            "content_html": d.content_html,
            "url": d.url,
            "actor_name": d.actor.name,
            "actor_email": d.actor.email,
            "actor_url": d.actor.url,
            "published": event_time(d, now),
            "updated": d.updated,
            "tags": list(d.tags),
            "thread_id": d.thread_id,
            "extra": d.extra,
            "audience": list(source.audience),
            "ingested_at": now,
        }

    def source_statuses(
        self, *, viewer: Viewer | None, now: datetime | None = None
    ) -> list[SourceStatus]:
        """Every source `viewer` may see (all for None: the system's own reads)
        but Tidings' own alerts source, with its health; `events_last_week`
        counts events since `now` - 7 days."""
        counts = (
            select(events.c.source_id, func.count().label("n"))
            .group_by(events.c.source_id)
            .subquery()
        )
        query = (
            select(sources, func.coalesce(counts.c.n, 0).label("event_count"))
            .outerjoin(counts, counts.c.source_id == sources.c.id)
            .where(sources.c.origin != "system")  # Tidings' own, not a source to manage
            .order_by(sources.c.id)
        )
        if viewer is not None:
            query = query.where(viewer.where(sources.c.id))
        week: dict[str, int] = {}
        names = {f.name for f in dataclasses.fields(SourceStatus)}
        with self._read.connect() as conn:
            if now is not None:
                week = dict(
                    conn.execute(
                        select(events.c.source_id, func.count())
                        .where(events.c.ingested_at >= now - timedelta(days=7))
                        .group_by(events.c.source_id)
                    ).all()
                )
            return [
                SourceStatus(
                    **{k: v for k, v in row.items() if k in names},
                    audience=tuple(row["config"].get("audience", ())),
                    events_last_week=week.get(row["id"], 0),
                )
                for row in conn.execute(query).mappings()
            ]

    def source_names(self, *, viewer: Viewer | None) -> dict[str, str]:
        """Display names of the sources `viewer` may see, by id."""
        query = select(sources.c.id, sources.c.title).order_by(sources.c.id)
        if viewer is not None:
            query = query.where(viewer.where(sources.c.id))
        with self._read.connect() as conn:
            return {r.id: r.title or r.id for r in conn.execute(query)}

    # --- events ------------------------------------------------------------
    # Every read takes the viewer whose visibility applies (None: the system's
    # own reads, such as the live tail that fans events out to subscribers, each
    # of which filters again). It is keyword-only and has no default, so no
    # read path can forget it.

    def max_event_id(self, *, viewer: Viewer | None = None, at_most: int | None = None) -> int:
        """The newest event id (0 when none): of the events `viewer` may see
        (all for None), and no higher than `at_most` when given."""
        with self._read.connect() as conn:
            return newest_id(conn, viewer, at_most)

    def latest_events(
        self,
        flt: EventFilter | None = None,
        *,
        viewer: Viewer | None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[Event]:
        """Newest first; `before` is an exclusive cursor for the next page. One
        row more than a page may be asked for, to tell whether another follows."""
        query = select(events).order_by(events.c.id.desc()).limit(min(limit, MAX_PAGE + 1))
        if viewer is not None:
            query = query.where(viewer.where(events.c.source_id))
        if before is not None:
            query = query.where(events.c.id < before)
        with self._read.connect() as conn:
            if flt is not None:
                query = query.where(matching(conn, flt, self.search))
            return [_row_to_event(r) for r in conn.execute(query).mappings()]

    def events_after(
        self,
        cursor: int,
        flt: EventFilter | None = None,
        *,
        viewer: Viewer | None,
        limit: int = MAX_PAGE,
    ) -> list[Event]:
        """Oldest first: what happened after `cursor` (the backlog of a resume)."""
        query = (
            select(events)
            .where(events.c.id > cursor)
            .order_by(events.c.id)
            .limit(min(limit, MAX_PAGE))
        )
        if viewer is not None:
            query = query.where(viewer.where(events.c.source_id))
        with self._read.connect() as conn:
            if flt is not None:
                query = query.where(matching(conn, flt, self.search, after=cursor))
            return [_row_to_event(r) for r in conn.execute(query).mappings()]

    def search_events(
        self,
        flt: EventFilter,
        *,
        viewer: Viewer | None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Event]:
        """The events `flt` selects, most relevant first (bm25 over its free
        text; words under a `-` do not count), newest first among equals and
        when the query has no free text. With OR, events that contain none of
        the words (`merger OR source:wiki`) come after those that do."""
        phrases, rest = flt.ranking_terms()
        with self._read.connect() as conn:
            if phrases and rest is not None:
                # Every match contains all the phrases: rank the newest
                # RANK_WITHIN of the matches the viewer may see.
                condition = None if rest.is_empty() else matching(conn, rest, self.search)
                if viewer is not None:
                    sees = viewer.where(events.c.source_id)
                    condition = sees if condition is None else and_(condition, sees)
                ranked = self.search.ranking(
                    events, phrases, any_of=False, newest=(condition, RANK_WITHIN)
                )
                query = (
                    select(events)
                    .join(ranked, ranked.c.id == events.c.id)
                    .order_by(ranked.c.score, events.c.id.desc())
                )
            elif phrases:
                ranked = self.search.ranking(events, phrases, any_of=True)
                query = (
                    select(events)
                    .outerjoin(ranked, ranked.c.id == events.c.id)
                    .where(matching(conn, flt, self.search))
                    .order_by(func.coalesce(ranked.c.score, 0.0), events.c.id.desc())
                )  # bm25 is below 0 for every match
            else:
                query = (
                    select(events)
                    .where(matching(conn, flt, self.search))
                    .order_by(events.c.id.desc())
                )
            if viewer is not None:
                query = query.where(viewer.where(events.c.source_id))
            query = query.limit(min(limit, MAX_PAGE + 1)).offset(offset)
            return [_row_to_event(r) for r in conn.execute(query).mappings()]

    def get_event(self, event_id: int, *, viewer: Viewer | None) -> Event | None:
        query = select(events).where(events.c.id == event_id)
        if viewer is not None:
            query = query.where(viewer.where(events.c.source_id))
        with self._read.connect() as conn:
            row = conn.execute(query).mappings().first()
            return _row_to_event(row) if row else None


def _carried(kind: str, state: JSONObject | None) -> JSONObject | None:
    """The part of a source's state its kind keeps across new options."""
    try:
        return connector_class(kind).carry_state(state)
    except TidingsError:  # the kind is gone: nothing to keep
        return None


def _delivery_chunks(
    records: Sequence[tuple[int, DeliveryRecord]],
) -> Iterator[list[tuple[int, DeliveryRecord]]]:
    """Consecutive deliveries to one source that share no item identity:
    each such run is appended as one poll's items would be. (An item sent
    twice, opened then edited, must be compared with its first version.)"""
    chunk: list[tuple[int, DeliveryRecord]] = []
    ids: set[str] = set()
    for i, rec in records:
        mine = {item.external_id for item in rec.items}
        if chunk and (rec.source.id != chunk[0][1].source.id or not ids.isdisjoint(mine)):
            yield chunk
            chunk, ids = [], set()
        chunk.append((i, rec))
        ids |= mine
    if chunk:
        yield chunk


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
