"""Full-text search on SQLite: an FTS5 index of the events' title, summary and
author's name, external content (the text stays in `events` only), kept in
sync by triggers, and filled from the events already stored.

The tokenizer is the one aggregator/search.py emulates in Python; changing it
needs a new migration that rebuilds the index. A later migration that
recreates `events` (Alembic's batch mode on SQLite copies the table) must
create these triggers again. PostgreSQL gets its tsvector index with its
back-end; nothing happens there yet.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "CREATE VIRTUAL TABLE events_fts USING fts5(title, summary, actor_name, "
        "content='events', content_rowid='id', tokenize='unicode61 remove_diacritics 2')"
    )
    op.execute(
        """
        CREATE TRIGGER events_fts_insert AFTER INSERT ON events BEGIN
            INSERT INTO events_fts(rowid, title, summary, actor_name)
            VALUES (new.id, new.title, new.summary, new.actor_name);
        END
        """
    )
    op.execute(
        """
        CREATE TRIGGER events_fts_delete AFTER DELETE ON events BEGIN
            INSERT INTO events_fts(events_fts, rowid, title, summary, actor_name)
            VALUES ('delete', old.id, old.title, old.summary, old.actor_name);
        END
        """
    )
    # Only when indexed text changes: a source's new audience rewrites all its
    # events, and must not re-index them.
    op.execute(
        """
        CREATE TRIGGER events_fts_update AFTER UPDATE OF title, summary, actor_name ON events
        BEGIN
            INSERT INTO events_fts(events_fts, rowid, title, summary, actor_name)
            VALUES ('delete', old.id, old.title, old.summary, old.actor_name);
            INSERT INTO events_fts(rowid, title, summary, actor_name)
            VALUES (new.id, new.title, new.summary, new.actor_name);
        END
        """
    )
    op.execute("INSERT INTO events_fts(events_fts) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for trigger in ("events_fts_update", "events_fts_delete", "events_fts_insert"):
        op.execute(f"DROP TRIGGER {trigger}")
    op.execute("DROP TABLE events_fts")
