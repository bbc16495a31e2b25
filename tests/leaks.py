"""No secret a test run makes or reads reaches its logs.

While the tests run, this notes every secret Tidings makes or reads in the
test process: random tokens (API tokens, session keys, CSRF tokens, the key
personal feeds are signed with), personal-feed signatures, every password it
hashes, and every value a secret reference (`env:`, `file:`) resolves to. It
also notes every log record any logger handles, as production's handlers
write it (web.logs.redact applied), and the logs of the `tidings` processes
the tests start (TidingsProcess). At the end of the session a secret found
in any of them fails the run (tests/conftest.py), naming where and what kind.

Not covered: secrets a `tidings` subprocess makes by itself (its own session
keys), which the test process never sees.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import argon2

_F = TypeVar("_F", bound=Callable[..., Any])
_WORD = re.compile(r"[A-Za-z0-9_-]+")
MIN_SECRET = 8  # shorter values (none of Tidings' own) would match by chance


@dataclass(frozen=True)
class Finding:
    where: str  # a logger's name or a log file's path
    kind: str  # what the secret was: "token", "password", ...


class LeakWatch:
    def __init__(self) -> None:
        self._secrets: dict[str, str] = {}  # value: kind
        self._files: set[Path] = set()
        self._records = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115

    # --- what is secret ------------------------------------------------------

    def secret(self, value: object, kind: str) -> None:
        if isinstance(value, str) and len(value) >= MIN_SECRET:
            self._secrets[value] = kind

    def forget(self, value: str) -> None:
        self._secrets.pop(value, None)

    # --- what is logged ------------------------------------------------------

    def record(self, record: logging.LogRecord) -> None:
        from web.logs import redact  # what every production handler applies

        try:
            text = record.getMessage()
        except Exception:  # a bad format string: its parts, as logging would print them
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        json.dump({"where": record.name, "text": redact(text)}, self._records)
        self._records.write("\n")

    def log_file(self, path: Path) -> None:
        self._files.add(path)

    def close(self) -> None:
        self._records.close()

    # --- the verdict ---------------------------------------------------------

    def findings(self) -> list[Finding]:
        words = {v: k for v, k in self._secrets.items() if _WORD.fullmatch(v)}
        others = {v: k for v, k in self._secrets.items() if v not in words}
        lengths = {len(v) for v in words}
        found = set()
        for where, text in self._texts():
            found |= {Finding(where, k) for v, k in others.items() if v in text}
            for run in _WORD.findall(text):
                for n in lengths:
                    for i in range(len(run) - n + 1):
                        if (kind := words.get(run[i : i + n])) is not None:
                            found.add(Finding(where, kind))
        return sorted(found, key=lambda f: (f.where, f.kind))

    def _texts(self) -> Iterator[tuple[str, str]]:
        from web.logs import redact

        self._records.flush()
        self._records.seek(0)
        for line in self._records:
            entry = json.loads(line)
            yield entry["where"], entry["text"]
        self._records.seek(0, 2)  # back to the end, for the records to come
        for path in sorted(self._files):
            if path.exists():  # a test may have removed its directory
                # Production writes these through the redacting handlers too.
                yield str(path), redact(path.read_text(encoding="utf-8", errors="replace"))


WATCH = LeakWatch()


def _noting(original: _F, kind: str, *, result: bool = True, arg: int = 0) -> _F:
    """`original`, noting its result (or its positional argument `arg`) as a secret."""

    @wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        value = original(*args, **kwargs)
        WATCH.secret(value if result else args[arg], kind)
        return value

    wrapper.__wrapped_for_leaks__ = original  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _replace_everywhere(module: str, name: str, replacement: Any) -> None:
    """Rebind `name` in `module` and in every loaded Tidings module that
    imported it by name."""
    original = getattr(sys.modules[module], name)
    for loaded in list(sys.modules.values()):
        ours = loaded is not None and loaded.__name__.split(".")[0] in ("aggregator", "web")
        if ours and getattr(loaded, name, None) is original:
            setattr(loaded, name, replacement)


def install() -> None:
    """Start noting secrets and log records (once, at session start)."""
    if getattr(secrets.token_urlsafe, "__wrapped_for_leaks__", None):
        return
    import aggregator.secrets
    import aggregator.store.streams
    import web.app
    import web.hooks  # noqa: F401

    secrets.token_urlsafe = _noting(secrets.token_urlsafe, "random token")
    streams = aggregator.store.streams
    streams._mac = _noting(streams._mac, "personal-feed signature")
    _replace_everywhere(
        "aggregator.secrets",
        "resolve_secret",
        _noting(aggregator.secrets.resolve_secret, "secret reference's value"),
    )
    argon2.PasswordHasher.hash = _noting(  # type: ignore[method-assign]
        argon2.PasswordHasher.hash, "password", result=False, arg=1
    )
    handlers = logging.Logger.callHandlers

    def call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
        WATCH.record(record)
        handlers(self, record)

    logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign]
