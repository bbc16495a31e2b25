"""Who may see which events: one rule, used by SQL and by the live predicate.

A source's `audience` lists groups, or `everyone` (every signed-in user); an
empty audience means admins only. Its events inherit it. Admins see every
source. A viewer carries the set of source ids it may see, so every read path
asks the same question: `viewer.where(events.c.source_id)` in SQL, `viewer.can_see(id)`
in memory. Unknown sources are invisible: a source added after the set was
computed shows nothing until it is recomputed, never too much.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import ColumnElement, false, true

from aggregator.accounts import EVERYONE, User


def admits(audience: Iterable[str], user: User) -> bool:
    """Whether `user` is in `audience`."""
    if user.disabled:
        return False
    if user.is_admin:
        return True
    # Group names are unique without case: "Legal" in a config is group "legal".
    groups = {g.casefold() for g in user.groups}
    return any(a == EVERYONE or a.casefold() in groups for a in audience)


@dataclass(frozen=True, slots=True)
class Viewer:
    name: str
    sources: frozenset[str] | None  # None: every source, present and future

    @classmethod
    def everything(cls, name: str) -> Viewer:
        return cls(name, None)

    @classmethod
    def of(cls, user: User, audiences: Mapping[str, Iterable[str]]) -> Viewer:
        if user.is_admin and not user.disabled:
            return cls.everything(user.name)
        return cls(user.name, frozenset(s for s, a in audiences.items() if admits(a, user)))

    def can_see(self, source_id: str) -> bool:
        return self.sources is None or source_id in self.sources

    def where(self, source_id: ColumnElement[str]) -> ColumnElement[bool]:
        """The SQL condition on a column holding source ids."""
        if self.sources is None:
            return true()
        if not self.sources:
            return false()
        return source_id.in_(sorted(self.sources))
