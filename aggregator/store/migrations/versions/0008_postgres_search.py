"""PostgreSQL: 64-bit event ids (as SQLite's rowids: a cursor may be
anything up to 2**63 - 1), and full-text search: `event_search`, one tsvector per event
built from Tidings' own tokens (aggregator/search_postgres.py), GIN-indexed,
and filled from the events already stored. SQLite has its FTS5 index (0004).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TSVECTOR

from aggregator.search_postgres import TsvectorSearch

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BATCH = 2_000
BIGINT_COLUMNS = [
    ("events", "id"),
    ("entries", "event_id"),
    ("audit_log", "id"),
    ("streams", "last_read_id"),
]


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    for table, column in BIGINT_COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger)
    for sequence in ("events_id_seq", "audit_log_id_seq"):
        op.execute(f"ALTER SEQUENCE {sequence} AS bigint")
    op.create_table(
        "event_search",
        sa.Column(
            "event_id",
            sa.BigInteger,
            sa.ForeignKey("events.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("doc", TSVECTOR, nullable=False),
    )
    op.create_index("ix_event_search_doc", "event_search", ["doc"], postgresql_using="gin")
    search, last = TsvectorSearch(), 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT id, title, summary, actor_name FROM events WHERE id > :last "
                "ORDER BY id LIMIT :n"
            ),
            {"last": last, "n": BATCH},
        ).all()
        if not rows:
            break
        search.index(conn, [tuple(r) for r in rows])
        last = rows[-1][0]


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_table("event_search")
    for sequence in ("events_id_seq", "audit_log_id_seq"):
        op.execute(f"ALTER SEQUENCE {sequence} AS integer")
    for table, column in BIGINT_COLUMNS:
        op.alter_column(table, column, type_=sa.Integer)
