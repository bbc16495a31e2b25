"""Users, groups, API tokens, settings and the audit log, in the store.

Every change that can alter what someone may see or who someone is bumps the
store's `revision` in the same transaction, and writes an audit entry naming
who made it: web workers compare revisions to know when to reload access
rules, so a member removed from a group in one process loses access in all.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from aggregator.accounts import (
    ADMIN,
    MEMBER,
    ApiToken,
    AuditEntry,
    User,
    check_group_name,
    check_user_name,
    new_token,
    token_hash,
)
from aggregator.exceptions import AccountError
from aggregator.store.schema import (
    api_tokens,
    audit_log,
    groups,
    memberships,
    sessions,
    settings,
    sources,
    users,
)

REVISION = "revision"


def bump_revision(conn: Connection, key: str = REVISION) -> None:
    """Add one to the counter `key` in the settings table."""
    current = conn.scalar(select(settings.c.value).where(settings.c.key == key))
    if current is None:
        conn.execute(insert(settings).values(key=key, value="1"))
    else:
        value = str(int(current) + 1)
        conn.execute(update(settings).where(settings.c.key == key).values(value=value))


def read_revision(conn: Connection, key: str = REVISION) -> int:
    """The counter `key` in the settings table (0 before its first bump)."""
    value = conn.scalar(select(settings.c.value).where(settings.c.key == key))
    return int(value) if value is not None else 0


def audit(
    conn: Connection, actor: str, action: str, target: str, now: datetime, **detail: Any
) -> None:
    conn.execute(
        insert(audit_log).values(at=now, actor=actor, action=action, target=target, detail=detail)
    )


@dataclass(frozen=True)
class AccessSnapshot:
    """Everything needed to authenticate a request and decide what it may
    see, read in one transaction; rebuilt when `revision` changes."""

    revision: int
    users: dict[int, User]
    by_name: dict[str, int]
    tokens: dict[str, tuple[int, int]] = field(repr=False)  # token hash -> (id, user id)
    sessions: dict[str, tuple[int, datetime]] = field(repr=False)  # key hash -> (user, expiry)
    audiences: dict[str, tuple[str, ...]]  # source id -> audience

    def user_named(self, name: str) -> User | None:
        """User names are unique without case, and found so."""
        uid = self.by_name.get(name.casefold())
        return self.users.get(uid) if uid is not None else None


class People:
    def __init__(self, read: Engine, writing: Callable[[], AbstractContextManager[Connection]]):
        self._read = read
        self._writing = writing

    # --- reading ----------------------------------------------------------

    def revision(self) -> int:
        with self._read.connect() as conn:
            return read_revision(conn)

    def snapshot(self) -> AccessSnapshot:
        with self._read.begin() as conn:
            revision = read_revision(conn)
            member_of: dict[int, set[str]] = {}
            for uid, gname in conn.execute(
                select(memberships.c.user_id, groups.c.name).join(
                    groups, groups.c.id == memberships.c.group_id
                )
            ):
                member_of.setdefault(uid, set()).add(gname)
            found = {r.id: _user(r, member_of.get(r.id, ())) for r in conn.execute(select(users))}
            tokens = {
                r.token_hash: (r.id, r.user_id)
                for r in conn.execute(
                    select(api_tokens.c.id, api_tokens.c.user_id, api_tokens.c.token_hash)
                )
            }
            live_sessions = {
                r.key_hash: (r.user_id, r.expires_at)
                for r in conn.execute(
                    select(sessions.c.key_hash, sessions.c.user_id, sessions.c.expires_at)
                )
            }
            audiences = {
                r.id: tuple(r.config.get("audience", ()))
                for r in conn.execute(select(sources.c.id, sources.c.config))
            }
        return AccessSnapshot(
            revision=revision,
            users=found,
            by_name={u.name.casefold(): u.id for u in found.values()},
            tokens=tokens,
            sessions=live_sessions,
            audiences=audiences,
        )

    def count_users(self) -> int:
        with self._read.connect() as conn:
            return conn.scalar(select(func.count()).select_from(users)) or 0

    def users(self) -> list[User]:
        return sorted(self.snapshot().users.values(), key=lambda u: u.name.lower())

    def user(self, name: str) -> User | None:
        return self.snapshot().user_named(name)

    def password_hash(self, name: str) -> str | None:
        with self._read.connect() as conn:
            value: str | None = conn.scalar(
                select(users.c.password_hash).where(users.c.name == name)
            )
            return value

    def groups(self) -> dict[str, list[str]]:
        """Every group and its members' names, by group name."""
        with self._read.connect() as conn:
            result: dict[str, list[str]] = {
                g: [] for g in conn.scalars(select(groups.c.name).order_by(groups.c.name))
            }
            for gname, uname in conn.execute(
                select(groups.c.name, users.c.name)
                .join(memberships, memberships.c.group_id == groups.c.id)
                .join(users, users.c.id == memberships.c.user_id)
                .order_by(users.c.name)
            ):
                result[gname].append(uname)
            return result

    def tokens(self, user: str | None = None) -> list[ApiToken]:
        query = (
            select(api_tokens, users.c.name.label("user"))
            .join(users, users.c.id == api_tokens.c.user_id)
            .order_by(api_tokens.c.id)
        )
        if user is not None:
            query = query.where(users.c.name == user)
        with self._read.connect() as conn:
            return [
                ApiToken(r.id, r.user, r.name, r.created_at, r.last_used_at)
                for r in conn.execute(query)
            ]

    def audit_log(self, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(audit_log.c.id < before)
        with self._read.connect() as conn:
            return [
                AuditEntry(r.id, r.at, r.actor, r.action, r.target, r.detail)
                for r in conn.execute(query)
            ]

    def setting(self, key: str, default: Callable[[], str]) -> str:
        """The value of `key`, created from `default()` on first use."""
        with self._read.connect() as conn:
            value = conn.scalar(select(settings.c.value).where(settings.c.key == key))
        if value is not None:
            return str(value)
        with self._writing() as conn:
            value = conn.scalar(select(settings.c.value).where(settings.c.key == key))
            if value is None:
                value = default()
                conn.execute(insert(settings).values(key=key, value=value))
            return str(value)

    def session_secret(self) -> str:
        return self.setting("session_secret", lambda: secrets.token_urlsafe(48))

    # --- users ------------------------------------------------------------

    def create_user(
        self,
        name: str,
        *,
        password_hash: str | None,
        admin: bool = False,
        groups: Iterable[str] = (),
        actor: str,
        now: datetime,
    ) -> User:
        check_user_name(name)
        wanted = [check_group_name(g) for g in dict.fromkeys(groups)]
        with self._writing() as conn:
            if conn.scalar(select(users.c.id).where(func.lower(users.c.name) == name.lower())):
                raise AccountError(f"user {name!r} already exists", field="name")
            uid: int = conn.execute(
                insert(users).values(
                    name=name,
                    role=ADMIN if admin else MEMBER,
                    password_hash=password_hash,
                    disabled=False,
                    created_at=now,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            self._set_groups(conn, uid, wanted, now, actor)
            audit(conn, actor, "user.create", name, now, admin=admin, groups=wanted)
            bump_revision(conn)
        user = self.user(name)
        assert user is not None
        return user

    def update_user(
        self,
        name: str,
        *,
        actor: str,
        now: datetime,
        admin: bool | None = None,
        disabled: bool | None = None,
        groups: Sequence[str] | None = None,
        password_hash: str | None = None,
        sign_out: bool = False,
        keep_session: str | None = None,
    ) -> None:
        """Change what is given. A new password, disabling, or `sign_out`
        ends every session the user has but `keep_session` (a key hash: the
        browser that changed its own password stays signed in)."""
        wanted = None if groups is None else [check_group_name(g) for g in dict.fromkeys(groups)]
        with self._writing() as conn:
            uid = self._user_id(conn, name)
            values: dict[str, Any] = {}
            changes: dict[str, Any] = {}
            if admin is not None:
                values["role"] = changes["role"] = ADMIN if admin else MEMBER
                if not admin:
                    self._keep_an_admin(conn, uid)
            if disabled is not None:
                values["disabled"] = changes["disabled"] = disabled
                if disabled:
                    self._keep_an_admin(conn, uid)
            if password_hash is not None:
                values["password_hash"] = password_hash
                changes["password_changed"] = True
            if password_hash is not None or disabled or sign_out:
                conn.execute(
                    delete(sessions).where(
                        sessions.c.user_id == uid, sessions.c.key_hash != (keep_session or "")
                    )
                )
                if sign_out:
                    changes["signed_out"] = True
            if values:
                conn.execute(update(users).where(users.c.id == uid).values(**values))
            if wanted is not None:
                changes["groups"] = wanted
                self._set_groups(conn, uid, wanted, now, actor)
            if changes:
                audit(conn, actor, "user.update", name, now, **changes)
                bump_revision(conn)

    def delete_user(self, name: str, *, actor: str, now: datetime) -> None:
        with self._writing() as conn:
            uid = self._user_id(conn, name)
            self._keep_an_admin(conn, uid)
            conn.execute(delete(memberships).where(memberships.c.user_id == uid))
            conn.execute(delete(api_tokens).where(api_tokens.c.user_id == uid))
            conn.execute(delete(sessions).where(sessions.c.user_id == uid))
            conn.execute(delete(users).where(users.c.id == uid))
            audit(conn, actor, "user.delete", name, now)
            bump_revision(conn)

    # --- groups -----------------------------------------------------------

    def create_group(self, name: str, *, actor: str, now: datetime) -> None:
        check_group_name(name)
        with self._writing() as conn:
            if conn.scalar(select(groups.c.id).where(func.lower(groups.c.name) == name.lower())):
                raise AccountError(f"group {name!r} already exists", field="group")
            conn.execute(insert(groups).values(name=name, created_at=now))
            audit(conn, actor, "group.create", name, now)
            bump_revision(conn)

    def delete_group(self, name: str, *, actor: str, now: datetime) -> None:
        with self._writing() as conn:
            gid = conn.scalar(select(groups.c.id).where(groups.c.name == name))
            if gid is None:
                raise AccountError(f"no group {name!r}", field="group")
            conn.execute(delete(memberships).where(memberships.c.group_id == gid))
            conn.execute(delete(groups).where(groups.c.id == gid))
            audit(conn, actor, "group.delete", name, now)
            bump_revision(conn)

    def add_member(self, group: str, user: str, *, actor: str, now: datetime) -> None:
        with self._writing() as conn:
            uid = self._user_id(conn, user)
            gid = self._group_id(conn, check_group_name(group), now, actor)
            exists = conn.scalar(
                select(func.count())
                .select_from(memberships)
                .where(memberships.c.user_id == uid, memberships.c.group_id == gid)
            )
            if not exists:
                conn.execute(insert(memberships).values(user_id=uid, group_id=gid))
                audit(conn, actor, "group.add_member", group, now, user=user)
                bump_revision(conn)

    def remove_member(self, group: str, user: str, *, actor: str, now: datetime) -> None:
        with self._writing() as conn:
            uid = self._user_id(conn, user)
            gid = conn.scalar(select(groups.c.id).where(func.lower(groups.c.name) == group.lower()))
            if gid is None:
                raise AccountError(f"no group {group!r}", field="group")
            gone = conn.execute(
                delete(memberships).where(
                    memberships.c.user_id == uid, memberships.c.group_id == gid
                )
            ).rowcount
            if gone:
                audit(conn, actor, "group.remove_member", group, now, user=user)
                bump_revision(conn)

    # --- sessions ---------------------------------------------------------

    def create_session(self, user_id: int, *, now: datetime, lifetime: timedelta) -> str:
        """A new session for a signed-in browser: the key for its cookie (only
        the key's hash is kept). Expired sessions are swept on the way."""
        key = secrets.token_urlsafe(32)
        with self._writing() as conn:
            conn.execute(delete(sessions).where(sessions.c.expires_at <= now))
            conn.execute(
                insert(sessions).values(
                    key_hash=token_hash(key),
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + lifetime,
                )
            )
            bump_revision(conn)
        return key

    def end_session(self, key_hash: str) -> None:
        with self._writing() as conn:
            if conn.execute(delete(sessions).where(sessions.c.key_hash == key_hash)).rowcount:
                bump_revision(conn)

    # --- tokens -----------------------------------------------------------

    def create_token(self, user: str, name: str, *, actor: str, now: datetime) -> str:
        """A new API token for `user`; the only time its value is known."""
        name = name.strip()
        if not name or len(name) > 64:
            raise AccountError("a token needs a name of 1-64 characters", field="token_name")
        token = new_token()
        with self._writing() as conn:
            uid = self._user_id(conn, user)
            conn.execute(
                insert(api_tokens).values(
                    user_id=uid, name=name, token_hash=token_hash(token), created_at=now
                )
            )
            audit(conn, actor, "token.create", user, now, name=name)
            bump_revision(conn)
        return token

    def revoke_token(
        self, token_id: int, *, actor: str, now: datetime, user: str | None = None
    ) -> None:
        """Revoke a token (only one of `user`'s, when given)."""
        with self._writing() as conn:
            query = (
                select(api_tokens.c.name, users.c.name.label("user"))
                .join(users, users.c.id == api_tokens.c.user_id)
                .where(api_tokens.c.id == token_id)
            )
            if user is not None:
                query = query.where(users.c.name == user)
            row = conn.execute(query).first()
            if row is None:
                raise AccountError(f"no token {token_id}")
            conn.execute(delete(api_tokens).where(api_tokens.c.id == token_id))
            audit(conn, actor, "token.revoke", row.user, now, name=row.name)
            bump_revision(conn)

    def touch_token(self, token_id: int, now: datetime) -> None:
        with self._writing() as conn:
            conn.execute(
                update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=now)
            )

    # --- helpers ----------------------------------------------------------

    @staticmethod
    def _user_id(conn: Connection, name: str) -> int:
        uid: int | None = conn.scalar(select(users.c.id).where(users.c.name == name))
        if uid is None:
            raise AccountError(f"no user {name!r}", field="name")
        return uid

    @staticmethod
    def _group_id(conn: Connection, name: str, now: datetime, actor: str) -> int:
        """The group's id; the group is created if it does not exist. Names are
        matched without case, as create_group does: "Legal" is group "legal"."""
        gid: int | None = conn.scalar(
            select(groups.c.id).where(func.lower(groups.c.name) == name.lower())
        )
        if gid is None:
            gid = conn.execute(
                insert(groups).values(name=name, created_at=now)
            ).inserted_primary_key[0]  # type: ignore[index]
            audit(conn, actor, "group.create", name, now)
        assert gid is not None
        return gid

    def _set_groups(
        self, conn: Connection, uid: int, wanted: Sequence[str], now: datetime, actor: str
    ) -> None:
        conn.execute(delete(memberships).where(memberships.c.user_id == uid))
        for name in wanted:
            gid = self._group_id(conn, name, now, actor)
            conn.execute(insert(memberships).values(user_id=uid, group_id=gid))

    @staticmethod
    def _keep_an_admin(conn: Connection, uid: int) -> None:
        """Refuse a change that would leave no enabled admin."""
        others = conn.scalar(
            select(func.count())
            .select_from(users)
            .where(users.c.role == ADMIN, ~users.c.disabled, users.c.id != uid)
        )
        role = conn.scalar(select(users.c.role).where(users.c.id == uid))
        if role == ADMIN and not others:
            raise AccountError("this is the last admin; make another admin first")


def _user(row: Any, member_of: Iterable[str]) -> User:
    return User(
        id=row.id,
        name=row.name,
        role=row.role,
        groups=frozenset(member_of),
        disabled=row.disabled,
        has_password=row.password_hash is not None,
        created_at=row.created_at,
    )
