"""The app's copy of who is who and who may see what.

Authentication and visibility read an in-memory snapshot of users, groups,
tokens and source audiences; the store's `revision` says when it is stale. A
request checks the revision (one indexed read) before it trusts the snapshot,
and the live tail checks it before every publish, so a member removed from a
group — by this process, the CLI, or another web worker — loses access on
every path at once, open websockets included.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from aggregator.accounts import User
from aggregator.store.people import AccessSnapshot, People
from aggregator.visibility import Viewer

Via = Literal["session", "token", "proxy", "setup"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking. `user` is None only for the anonymous loopback client of
    an instance that has no accounts yet ("setup"): it sees everything but
    administers nothing; the first admin is made with `tidings users create`."""

    user: User | None
    viewer: Viewer
    via: Via
    credential: str | None = None  # the hash of the session key, or of the API token

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.is_admin

    @property
    def name(self) -> str:
        return self.user.name if self.user else "local"


class Access:
    def __init__(self, people: People, snapshot: AccessSnapshot) -> None:
        self.people = people
        self.snapshot = snapshot
        self._viewers: dict[int, Viewer] = {}
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()

    @classmethod
    async def load(cls, people: People) -> Access:
        return cls(people, await asyncio.to_thread(people.snapshot))

    async def current(self) -> AccessSnapshot:
        """The snapshot, reloaded first if the store has moved on."""
        revision = await asyncio.to_thread(self.people.revision)
        if revision != self.snapshot.revision:
            await self.reload()
        return self.snapshot

    async def reload(self) -> None:
        async with self._lock:
            snapshot = await asyncio.to_thread(self.people.snapshot)
            if snapshot.revision == self.snapshot.revision and snapshot == self.snapshot:
                return
            self.snapshot = snapshot
            self._viewers = {}
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def changed(self) -> asyncio.Event:
        """Set the next time the rules change (a fresh Event after each change)."""
        return self._changed

    def user(self, user_id: int) -> User | None:
        """The user as of now; None once deleted or disabled."""
        user = self.snapshot.users.get(user_id)
        return None if user is None or user.disabled else user

    def viewer(self, user: User) -> Viewer:
        viewer = self._viewers.get(user.id)
        if viewer is None:
            viewer = Viewer.of(user, self.snapshot.audiences)
            self._viewers[user.id] = viewer
        return viewer

    def principal(self, user: User, via: Via, credential: str | None = None) -> Principal:
        return Principal(user, self.viewer(user), via, credential)

    def session_user(self, key_hash: str, now: datetime) -> User | None:
        found = self.snapshot.sessions.get(key_hash)
        if found is None or found[1] <= now:
            return None
        return self.user(found[0])

    def refreshed(self, principal: Principal) -> Principal | None:
        """`principal` with its current rights, or None when it would no longer
        sign in: user deleted or disabled, token revoked, or a session from
        before a password change or "sign out everywhere"."""
        if principal.user is None:
            return principal if not self.snapshot.users else None
        user = self.user(principal.user.id)
        key = principal.credential or ""
        if principal.via == "session":
            user = self.session_user(key, datetime.now(UTC))
        elif principal.via == "token" and key not in self.snapshot.tokens:
            user = None
        if user is None or user.id != principal.user.id:
            return None
        return self.principal(user, principal.via, principal.credential)
