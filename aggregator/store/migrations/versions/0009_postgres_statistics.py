"""PostgreSQL: statistics the planner needs to pick the right plan.

- `kind:`, `verb:` and `type:` compare `lower(column COLLATE "C")` (ASCII-only
  folding, aggregator/filters.py). Without statistics on those expressions the
  planner guessed each keeps 0.5% of events, and for a common kind and verb
  chose a sequential scan and a sort (200,000 events: 145 ms a page, a full
  scan at 10M) instead of walking ids newest first (9.5 ms).
- The tsvector column's statistics went down only to words in 0.4% of events,
  so a rare word was guessed at 400 matches and the plan walked ids instead of
  the GIN index (45 ms instead of 0.6 ms); a larger sample sees rarer words.

SQLite needs neither: Store.optimize() runs its ANALYZE.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FOLDED = ", ".join(f'lower({c} COLLATE "C")' for c in ("kind", "verb", "object_type"))


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    if (conn.dialect.server_version_info or (0,)) >= (14,):  # expressions: PostgreSQL 14+
        op.execute(f"CREATE STATISTICS events_folded ON {FOLDED} FROM events")
    op.execute("ALTER TABLE event_search ALTER COLUMN doc SET STATISTICS 1000")
    # Samples, not whole tables: a few seconds at 10,000,000 events.
    op.execute("ANALYZE events")
    op.execute("ANALYZE event_search")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE event_search ALTER COLUMN doc SET STATISTICS -1")
    op.execute("DROP STATISTICS IF EXISTS events_folded")
