"""Intranet sources: a poll's warnings (items a mapping could not read, while
the rest were stored), and the webhook deliveries already received, so that a
replay stores nothing.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from aggregator.store.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sources", recreate="never") as batch:
        batch.add_column(sa.Column("last_warning", sa.Text, nullable=True))
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "source_id",
            sa.String(64),
            sa.ForeignKey("sources.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("delivery_id", sa.String(200), primary_key=True),
        sa.Column("received_at", UTCDateTime, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("sources", recreate="never") as batch:
        batch.drop_column("last_warning")
