"""`event_tags`: each event's tags, folded (ASCII lower case, as
aggregator/filters.fold), one row per tag and event, so that `tag:` reads an
index instead of unpacking every event's JSON list. A rare tag had to look at
every event of a range: 20 unread counts a month behind at 100,000 events
spent 190 of their 330 ms in two tag streams.

Triggers on `events` keep it, as FTS5's do (0004), so every way events go in
(the poller, webhooks, imports, the benchmarks' bulk loads) fills it alike;
ON DELETE CASCADE empties it. Tags are never rewritten in place: a changed
item is a new event.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    sqlite = conn.dialect.name == "sqlite"
    op.create_table(
        "event_tags",
        sa.Column("tag", sa.Text, primary_key=True),
        sa.Column(
            "event_id",
            sa.Integer().with_variant(sa.BigInteger(), "postgresql"),
            sa.ForeignKey("events.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sqlite_with_rowid=False,
    )
    # For the cascade: deleting an event finds its tags without a scan.
    op.create_index("ix_event_tags_event_id", "event_tags", ["event_id"])
    if sqlite:
        op.execute(
            """
            CREATE TRIGGER event_tags_insert AFTER INSERT ON events BEGIN
                INSERT OR IGNORE INTO event_tags(tag, event_id)
                SELECT lower(value), new.id FROM json_each(new.tags) WHERE type = 'text';
            END
            """
        )
        op.execute(
            "INSERT OR IGNORE INTO event_tags(tag, event_id) "
            "SELECT lower(t.value), e.id FROM events e, json_each(e.tags) t "
            "WHERE t.type = 'text'"
        )
        return
    # One statement-level trigger: a bulk insert (COPY included) costs one call.
    op.execute(
        """
        CREATE FUNCTION event_tags_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO event_tags(tag, event_id)
            SELECT DISTINCT lower(t.value COLLATE "C"), n.id
            FROM inserted n, json_array_elements_text(n.tags) AS t(value)
            ON CONFLICT DO NOTHING;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER event_tags_insert AFTER INSERT ON events "
        "REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT "
        "EXECUTE FUNCTION event_tags_insert()"
    )
    op.execute(
        'INSERT INTO event_tags(tag, event_id) SELECT DISTINCT lower(t.value COLLATE "C"), e.id '
        "FROM events e, json_array_elements_text(e.tags) AS t(value)"
    )
    op.execute("ANALYZE event_tags")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER event_tags_insert ON events")
        op.execute("DROP FUNCTION event_tags_insert()")
    else:
        op.execute("DROP TRIGGER event_tags_insert")
    op.drop_table("event_tags")
