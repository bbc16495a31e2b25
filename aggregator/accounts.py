"""People: who they are, how their secrets are kept, what names they may have.

Passwords are hashed with argon2id (argon2-cffi's defaults follow RFC 9106).
API tokens are 256-bit random strings: a plain SHA-256 of one is as good as a
slow hash (nobody can guess the input) and can be looked up by value.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from aggregator.exceptions import AccountError

ADMIN = "admin"
MEMBER = "member"
EVERYONE = "everyone"  # the audience of every signed-in user; not a group
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # argon2 hashes anything, but a megabyte "password" is an attack
TOKEN_PREFIX = "tid_"  # noqa: S105 - lets secret scanners recognise a leaked token

_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: str
    groups: frozenset[str]
    disabled: bool
    has_password: bool
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    user: str
    name: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, object]


def check_user_name(name: str) -> str:
    if not _USER_NAME.match(name):
        raise AccountError(
            "a user name is 1-64 letters, digits and . _ @ + - (starting with a letter or digit)",
            field="name",
        )
    return name


def check_group_name(name: str) -> str:
    if not _GROUP_NAME.match(name):
        raise AccountError(
            "a group name is 1-64 letters, digits and . _ - (starting with a letter or digit)",
            field="group",
        )
    if name.lower() == EVERYONE:
        raise AccountError(
            f"{EVERYONE!r} means every signed-in user; it is not a group", field="group"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters", field="password")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"a password has at most {MAX_PASSWORD} characters", field="password")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches. Always does the full work, so timing does
    not tell whether the user exists (pass None for an unknown user)."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
