"""Sources, the append-only event log, and the latest version of each item.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from aggregator.store.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("origin", sa.String(8), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("state", sa.JSON),
        sa.Column("next_poll_at", UTCDateTime),
        sa.Column("last_poll_at", UTCDateTime),
        sa.Column("last_success_at", UTCDateTime),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_at", UTCDateTime),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("permanent_redirect", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_sources_next_poll_at", "sources", ["next_poll_at"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source_id", sa.String(64), sa.ForeignKey("sources.id"), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("external_id", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(32), nullable=False),
        sa.Column("verb", sa.String(32), nullable=False),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("content_html", sa.Text, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("actor_name", sa.Text),
        sa.Column("actor_email", sa.Text),
        sa.Column("actor_url", sa.Text),
        sa.Column("published", UTCDateTime, nullable=False),
        sa.Column("updated", UTCDateTime),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("thread_id", sa.Text),
        sa.Column("extra", sa.JSON, nullable=False),
        sa.Column("audience", sa.JSON, nullable=False),
        sa.Column("ingested_at", UTCDateTime, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_source_id_id", "events", ["source_id", "id"])
    op.create_table(
        "entries",
        sa.Column("source_id", sa.String(64), sa.ForeignKey("sources.id"), primary_key=True),
        sa.Column("external_id", sa.Text, primary_key=True),
        sa.Column("content_hash", sa.String(32), nullable=False),
        sa.Column("event_id", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("entries")
    op.drop_table("events")
    op.drop_table("sources")
