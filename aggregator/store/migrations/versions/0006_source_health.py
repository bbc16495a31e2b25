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


_COLUMNS = (
    "kind, title, origin, config, enabled, state, next_poll_at, last_poll_at, "
    "last_success_at, last_error, last_error_at, consecutive_failures, "
    "permanent_redirect, created_at, disabled_reason"
)


def upgrade() -> None:
    with op.batch_alter_table("sources", recreate="never") as batch:
        batch.add_column(sa.Column("disabled_reason", sa.Text, nullable=True))
    _free_the_id()
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


def _free_the_id() -> None:
    """A source someone already called `tidings-alerts` moves, with its events,
    to `tidings-alerts-renamed` (its config file must rename it: the id is
    now refused there), so the alerts never take over its audience."""
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM sources WHERE id = :s"), {"s": ALERTS_SOURCE}).first():
        new = {"old": ALERTS_SOURCE, "new": f"{ALERTS_SOURCE}-renamed"}
        bind.execute(
            sa.text(
                f"INSERT INTO sources (id, {_COLUMNS}) "  # noqa: S608 - fixed column names
                f"SELECT :new, {_COLUMNS} FROM sources WHERE id = :old"
            ),
            new,
        )
        for table in ("events", "entries"):
            bind.execute(
                sa.text(f"UPDATE {table} SET source_id = :new WHERE source_id = :old"),  # noqa: S608
                new,
            )
        bind.execute(sa.text("DELETE FROM sources WHERE id = :old"), new)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM entries WHERE source_id = :s").bindparams(s=ALERTS_SOURCE))
    op.execute(sa.text("DELETE FROM events WHERE source_id = :s").bindparams(s=ALERTS_SOURCE))
    op.execute(sa.text("DELETE FROM sources WHERE id = :s").bindparams(s=ALERTS_SOURCE))
    # recreate="never": copying the table trips the events' foreign keys.
    with op.batch_alter_table("sources", recreate="never") as batch:
        batch.drop_column("disabled_reason")
