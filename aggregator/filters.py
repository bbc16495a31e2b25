"""Stream queries: one parser, two back-ends that must agree.

At this stage a query is a conjunction of terms:
  free text (every word must appear in the title or summary), `source:a,b`,
  `kind:feed`, each optionally negated with a leading `-`; quotes group words.
`EventFilter.where()` compiles to SQL for history; `EventFilter.matches()` is
the in-memory predicate for live events. Case folding is ASCII-only on both
sides because SQLite's lower() is; full-text search replaces this later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, not_, or_, true

from aggregator.exceptions import QueryError
from aggregator.types import Event

FIELDS = ("source", "kind")
_TOKEN = re.compile(r'\s*(-?)(?:(\w+):)?(?:"([^"]*)"|(\S+))')
_ASCII_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


_LATER = ("author", "tag", "type", "verb", "since", "until")


def _refuse_unsupported(word: str, position: int) -> None:
    """Syntax of the full language that is not built yet must not silently
    become free text (which would match nothing, or the wrong things)."""
    field, colon, _ = word.partition(":")
    if colon and field.isidentifier():
        if field.lower() in _LATER:
            raise QueryError(f"{field}: is not supported yet", position)
        if field.lower() in FIELDS:
            raise QueryError(f"{field}: needs a value", position)
        known = ", ".join(f"{f}:" for f in FIELDS)
        raise QueryError(f"unknown field {field.lower()!r} (known: {known})", position)
    if word == "OR":
        raise QueryError("OR is not supported yet", position)
    for bracket in "()":
        if bracket in word:
            raise QueryError("parentheses are not supported yet", position + word.index(bracket))


def _fold(text: str) -> str:
    return text.translate(_ASCII_UPPER)


@dataclass(frozen=True, slots=True)
class Term:
    field: str | None  # None: free text
    values: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class EventFilter:
    terms: tuple[Term, ...] = ()

    @classmethod
    def parse(cls, query: str | None) -> EventFilter:
        text = query or ""
        terms: list[Term] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                raise QueryError("unexpected character", pos)
            neg, field, quoted, bare = match.groups()
            start = match.start(2) if field else match.start()
            value = quoted if quoted is not None else bare
            if quoted is None and bare.count('"'):
                raise QueryError("unclosed quote", text.index('"', pos))
            if field is not None:
                field = field.lower()
                if field not in FIELDS:
                    _refuse_unsupported(f"{field}:", start)
                values = tuple(v for v in value.split(",") if v)
                if not values:
                    raise QueryError(f"{field}: needs a value", start)
                terms.append(Term(field, values, bool(neg)))
            elif quoted is not None:
                if value:
                    terms.append(Term(None, (_fold(value),), bool(neg)))
            else:
                _refuse_unsupported(value, match.start(4))
                terms.append(Term(None, (_fold(value),), bool(neg)))
            pos = match.end()
        return cls(tuple(terms))

    def where(self, table: Any) -> ColumnElement[bool]:
        """The SQL condition on the `events` table."""
        clauses: list[ColumnElement[bool]] = []
        for term in self.terms:
            clause: ColumnElement[bool]
            if term.field == "source":
                clause = table.c.source_id.in_(term.values)
            elif term.field == "kind":
                clause = table.c.kind.in_(term.values)
            else:
                word = term.values[0]
                clause = or_(
                    func.lower(table.c.title).contains(word, autoescape=True),
                    func.lower(table.c.summary).contains(word, autoescape=True),
                )
            clauses.append(not_(clause) if term.negated else clause)
        return and_(true(), *clauses)

    def matches(self, event: Event) -> bool:
        """The same condition, in memory, for live events."""
        for term in self.terms:
            if term.field == "source":
                hit = event.source_id in term.values
            elif term.field == "kind":
                hit = event.kind in term.values
            else:
                word = term.values[0]
                hit = word in _fold(event.title) or word in _fold(event.summary)
            if hit == term.negated:
                return False
        return True
