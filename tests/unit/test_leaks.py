"""The leak watch (tests/leaks.py) finds a secret in a log, as production
would write it: a personal feed's path is redacted there, a bare token not."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from aggregator.accounts import hash_password, new_token
from aggregator.store.streams import _mac
from tests.leaks import WATCH, Finding

log = logging.getLogger("aggregator.leaktest")


def kinds_in(where: str) -> set[str]:
    return {f.kind for f in WATCH.findings() if f.where == where}


def test_a_token_logged_in_clear_is_found_and_a_redacted_feed_path_is_not() -> None:
    token = new_token()
    signature = _mac("key", 1, 1)
    try:
        log.warning("GET /feeds/1.%s/atom 200", signature)
        assert kinds_in(log.name) == set()
        log.warning("made %s for alice", token)
        log.warning("feed of 1.%s", signature)
        assert kinds_in(log.name) == {"random token", "personal-feed signature"}
    finally:
        WATCH.forget(token[len("tid_") :])
        WATCH.forget(signature)
    assert kinds_in(log.name) == set()


def test_a_hashed_password_in_a_process_log_is_found(tmp_path: Path) -> None:
    password = f"pw {secrets.token_hex(8)}"  # in no other test's log
    hash_password(password)
    logfile = tmp_path / "serve.log"
    logfile.write_text(f"INFO {password!r}\n")
    WATCH.log_file(logfile)
    try:
        assert Finding(str(logfile), "password") in WATCH.findings()
    finally:
        WATCH.forget(password)
