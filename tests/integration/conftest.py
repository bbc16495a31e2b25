"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dovecot import Dovecot


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    """A real Dovecot on loopback for one test module (tests/dovecot.py)."""
    server = Dovecot().start()
    try:
        yield server
    finally:
        server.stop()
