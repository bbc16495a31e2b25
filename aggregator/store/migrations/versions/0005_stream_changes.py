"""When a saved stream last changed (its name or query): the personal feed's
Last-Modified must move when its content does, not only when events arrive.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from aggregator.store.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("streams") as batch:
        batch.add_column(sa.Column("changed_at", UTCDateTime, nullable=True))
    op.execute("UPDATE streams SET changed_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("streams") as batch:
        batch.drop_column("changed_at")
