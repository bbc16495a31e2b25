"""Source health: why a source was disabled by the poller (410 Gone), and the
admins-only source that failing sources raise alerts in.

Revision ID: 0006
Revises: 0005
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from aggregator.store.schema import ALERTS_SOURCE, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("disabled_reason", sa.Text, nullable=True))
    table = sa.table(
        "sources",
        sa.column("id", sa.String),
        sa.column("kind", sa.String),
        sa.column("title", sa.Text),
        sa.column("origin", sa.String),
        sa.column("config", sa.JSON),
        sa.column("enabled", sa.Boolean),
        sa.column("consecutive_failures", sa.Integer),
        sa.column("created_at", UTCDateTime),
    )
    # Never polled (disabled, no connector); an empty audience is admins only.
    op.bulk_insert(
        table,
        [
            {
                "id": ALERTS_SOURCE,
                "kind": "system",
                "title": "Tidings alerts",
                "origin": "system",
                "config": {"audience": [], "tags": ["alert"]},
                "enabled": False,
                "consecutive_failures": 0,
                "created_at": datetime.now(UTC),
            }
        ],
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM entries WHERE source_id = :s").bindparams(s=ALERTS_SOURCE))
    op.execute(sa.text("DELETE FROM events WHERE source_id = :s").bindparams(s=ALERTS_SOURCE))
    op.execute(sa.text("DELETE FROM sources WHERE id = :s").bindparams(s=ALERTS_SOURCE))
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("disabled_reason")
