"""The tables. The migrations in `migrations/versions` create exactly these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

from aggregator.config import ALERTS_SOURCE

__all__ = ["ALERTS_SOURCE"]  # where the store's users look for it


# Ids a client pages by (events, the audit log) are 64-bit on PostgreSQL, as SQLite's rowids
# are: a cursor may be anything up to 2**63 - 1. On SQLite the primary key must
# stay INTEGER to be the rowid.
LongId = Integer().with_variant(BigInteger(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


metadata = MetaData()

sources = Table(
    "sources",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("title", Text),
    # "file": read-only in the admin UI; "db": made there; "system": Tidings' own
    Column("origin", String(8), nullable=False),
    Column("config", JSON, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("state", JSON),
    Column("next_poll_at", UTCDateTime, index=True),
    Column("last_poll_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("last_error", Text),
    Column("last_error_at", UTCDateTime),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("permanent_redirect", Text),
    Column("created_at", UTCDateTime, nullable=False),
    # Set by the poller (410 Gone): not polled until an admin resumes it (0006).
    Column("disabled_reason", Text),
    # The last successful poll's problems (items it could not map), or None (0007).
    Column("last_warning", Text),
)

# Webhook deliveries received, by the sender's delivery id: a replay stores nothing (0007).
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("source_id", String(64), ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("delivery_id", String(200), primary_key=True),
    Column("received_at", UTCDateTime, nullable=False, index=True),
)

events = Table(
    "events",
    metadata,
    Column("id", LongId, primary_key=True, autoincrement=True),
    Column("source_id", String(64), ForeignKey("sources.id"), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("external_id", Text, nullable=False),
    Column("content_hash", String(32), nullable=False),
    Column("verb", String(32), nullable=False),
    Column("object_type", String(32), nullable=False),
    Column("title", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("content_html", Text, nullable=False),
    Column("url", Text),
    Column("actor_name", Text),
    Column("actor_email", Text),
    Column("actor_url", Text),
    Column("published", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime),
    Column("tags", JSON, nullable=False),
    Column("thread_id", Text),
    Column("extra", JSON, nullable=False),
    Column("audience", JSON, nullable=False),
    Column("ingested_at", UTCDateTime, nullable=False),
    Index("ix_events_source_id_id", "source_id", "id"),
    # AUTOINCREMENT: ids are never reused, even after retention deletes the newest,
    # so a client's cursor can never point at a different event later.
    sqlite_autoincrement=True,
)

# Each event's tags, folded as filters.fold does, for `tag:` (0010): filled by
# triggers on `events`, emptied by the cascade.
event_tags = Table(
    "event_tags",
    metadata,
    Column("tag", Text, primary_key=True),
    Column("event_id", LongId, ForeignKey("events.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_event_tags_event_id", "event_id"),
    sqlite_with_rowid=False,
)

# The latest version of every item: what decide() compares a poll against.
entries = Table(
    "entries",
    metadata,
    Column("source_id", String(64), ForeignKey("sources.id"), primary_key=True),
    Column("external_id", Text, primary_key=True),
    Column("content_hash", String(32), nullable=False),
    Column("event_id", LongId, nullable=False),
)

# --- people ------------------------------------------------------------------

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(8), nullable=False),  # "admin" | "member"
    Column("password_hash", Text),  # argon2id; NULL: signs in through the proxy only
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    # AUTOINCREMENT: a deleted user's id is never given to someone else.
    sqlite_autoincrement=True,
)

groups = Table(
    "groups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", Integer, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(64), nullable=False),
    # SHA-256 of a 256-bit random token: fast to look up, useless if the table leaks.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    sqlite_autoincrement=True,
)

# Signed-in browsers. The cookie holds a random key; this holds its SHA-256, so
# signing out (or a password change) ends a session on the server, not only in
# the browser that asked.
sessions = Table(
    "sessions",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

# Small named values: the session signing key, the access-control revision.
settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", LongId, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False),
    Column("detail", JSON, nullable=False),
    sqlite_autoincrement=True,
)

# --- streams ------------------------------------------------------------------

# A user's saved streams: named queries, each with the newest event id the user
# has seen in it (unread = visible matches above it).
streams = Table(
    "streams",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("query", Text, nullable=False),
    Column("position", Integer, nullable=False, default=0),
    Column("last_read_id", LongId, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("changed_at", UTCDateTime),  # name or query (migration 0005)
    Index("ix_streams_user_id", "user_id"),
    sqlite_autoincrement=True,
)

# Unread counts kept across restarts and shared by web workers (migration
# 0011): a count that had a long backlog to go through is written here, so the
# next process goes on from it (aggregator/store/unread.py). Only a cache:
# emptying it costs one full count per stream.
unread_counts = Table(
    "unread_counts",
    metadata,
    Column("stream_id", Integer, ForeignKey("streams.id", ondelete="CASCADE"), primary_key=True),
    Column("viewer", String(32), primary_key=True),  # digest of the viewer's sources
    Column("basis", String(32), nullable=False),  # digest of the query and cap
    Column("last_read_id", LongId, nullable=False),  # counted from here ...
    Column("upto_id", LongId, nullable=False),  # ... up to here
    Column("unread", Integer, nullable=False),
)

# Per-user personal-feed credentials: the token in feed URLs is derived from
# the store's feed key and this serial; bumping it revokes every old feed URL.
feed_tokens = Table(
    "feed_tokens",
    metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("serial", Integer, nullable=False, default=0),
)
