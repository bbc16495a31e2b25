"""Full-text search on PostgreSQL: a tsvector per event made from OUR tokens.

PostgreSQL's own parser splits text differently from FTS5 (it keeps e-mail
addresses, URLs and hyphenated words whole), so it is not used: the document
is built here from `search.tokenize`, as a tsvector literal, and stored in
`event_search` (migration 0008; GIN-indexed) when the events are inserted.
A query is a tsquery literal of the same tokens, so both back-ends select the
same events (test_query_property.py runs on both).

Columns are weights: the author's name is C, the title A, the summary B,
each with its own positions, so a phrase (`'a':A <-> 'b':A`) matches inside
one column only, as in FTS5. Limits PostgreSQL sets, where the two can
differ: positions stop at 16,383 (a phrase past the 16,383rd token of a long
summary is not found; its words still are), a lexeme keeps at most 256
positions, and a token longer than 2,046 bytes is cut to that length.
Ranking is ts_rank with the column weights FTS5's bm25 uses (title 4,
summary 1, author 2), negated so that lower is better, as bm25's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Subquery,
    Table,
    bindparam,
    cast,
    column,
    func,
    insert,
    literal,
    literal_column,
    select,
    table,
)
from sqlalchemy.dialects.postgresql import TSQUERY, TSVECTOR
from sqlalchemy.sql.elements import ColumnElement

from aggregator.search import Field, Phrase, tokenize

# Migration 0008 makes it, on PostgreSQL only: (event_id -> events.id ON
# DELETE CASCADE, doc tsvector), GIN-indexed.
event_search = table("event_search", column("event_id", Integer), column("doc", TSVECTOR))

MAX_POSITION = 16_383
MAX_LEXEME_BYTES = 2_046
MAX_LEXEMES = 20_000  # distinct words of one event: the tsvector must stay under 1 MB
WEIGHT = {"title": "A", "summary": "B", "author": "C"}
# ts_rank's weights are for {D, C, B, A}: author 2, summary 1, title 4 (as bm25's).
RANK_WEIGHTS: ColumnElement[Any] = literal_column("'{0, 0.5, 0.25, 1}'::float4[]")


def _lexeme(token: str) -> str:
    raw = token.encode("utf-8", "replace")
    if len(raw) > MAX_LEXEME_BYTES:
        token = raw[:MAX_LEXEME_BYTES].decode("utf-8", "ignore")
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def document(title: str, summary: str, author: str) -> str:
    """The tsvector literal of one event's indexed columns."""
    positions: dict[str, list[str]] = {}
    at = 0
    for text, weight in ((author, "C"), (title, "A"), (summary, "B")):
        for token in tokenize(text):
            at = min(at + 1, MAX_POSITION)
            found = positions.get(token)
            if found is None:
                if len(positions) >= MAX_LEXEMES:
                    continue
                positions[token] = found = []
            if len(found) < 256:
                found.append(f"{at}{weight}")
        at = min(at + 1, MAX_POSITION)  # a gap: no phrase spans two columns
    return " ".join(f"{_lexeme(t)}:{','.join(p)}" for t, p in positions.items())


def query(phrases: Sequence[Phrase], *, field: Field = "text", any_of: bool = False) -> str:
    """The tsquery literal for `phrases` (tokens `tokenize` made: never user
    syntax, every token quoted)."""
    if not phrases or not all(phrases):
        raise ValueError("full-text search needs at least one token in every phrase")
    weights = "C" if field == "author" else "ACB"
    parts = []
    for phrase in phrases:
        if len(phrase) == 1:
            parts.append(f"{_lexeme(phrase[0])}:{weights}")
        else:  # each column on its own: a phrase never spans two
            one = [" <-> ".join(f"{_lexeme(t)}:{w}" for t in phrase) for w in weights]
            parts.append("(" + " | ".join(f"({p})" for p in one) + ")")
    return (" | " if any_of else " & ").join(parts)


class TsvectorSearch:
    """`TextSearch` on PostgreSQL (see the module docstring)."""

    dialect = "postgresql"

    def match(
        self,
        events: Table,
        phrases: Sequence[Phrase],
        *,
        field: Field = "text",
        any_of: bool = False,
        after: int | None = None,
    ) -> ColumnElement[bool]:
        q = cast(literal(query(phrases, field=field, any_of=any_of)), TSQUERY)
        found = select(event_search.c.event_id).where(event_search.c.doc.op("@@")(q))
        if after is not None:
            found = found.where(event_search.c.event_id > after)
        return events.c.id.in_(found)

    def ranking(
        self,
        events: Table,
        phrases: Sequence[Phrase],
        *,
        any_of: bool,
        newest: tuple[ColumnElement[bool] | None, int] | None = None,
    ) -> Subquery:
        q = cast(literal(query(phrases, any_of=any_of)), TSQUERY)
        score = -func.ts_rank(RANK_WEIGHTS, event_search.c.doc, q)
        ranked = select(event_search.c.event_id.label("id"), score.label("score")).where(
            event_search.c.doc.op("@@")(q)
        )
        if newest is not None:
            condition, count = newest
            if condition is not None:
                joined = ranked.join(events, events.c.id == event_search.c.event_id)
                ranked = joined.where(condition)
            ranked = ranked.order_by(event_search.c.event_id.desc()).limit(count)
        return ranked.subquery("ranked")

    def index(self, conn: Connection, rows: Iterable[tuple[int, str, str, str | None]]) -> None:
        """Index events just inserted: (id, title, summary, author's name)."""
        values = [
            {"e": event_id, "d": document(title, summary, author or "")}
            for event_id, title, summary, author in rows
        ]
        if values:
            conn.execute(
                insert(event_search).values(
                    event_id=bindparam("e"), doc=cast(bindparam("d"), TSVECTOR)
                ),
                values,
            )
