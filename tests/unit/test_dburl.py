"""A store URL's password, wherever it is written, is never shown and never
put on another program's command line (aggregator/dburl.py)."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from aggregator.dburl import libpq_url, password_of, shown, without_password


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://tidings:s3cret@db.internal:5433/tidings?sslmode=require",
        "postgresql+psycopg://tidings@db.internal:5433/tidings?sslmode=require&password=s3cret",
    ],
)
def test_the_password_is_found_and_taken_out_wherever_it_is(url: str) -> None:
    parsed = make_url(url)
    assert password_of(parsed) == "s3cret"
    assert shown(url) == (
        "postgresql+psycopg://tidings:***@db.internal:5433/tidings?sslmode=require"
    )
    assert libpq_url(without_password(parsed)) == (
        "postgresql://tidings@db.internal:5433/tidings?sslmode=require"
    )


def test_libpq_gets_the_url_whole_without_the_driver() -> None:
    url = libpq_url("postgresql+psycopg://tidings:s3cret@db.internal:5433/tidings")
    assert url == "postgresql://tidings:s3cret@db.internal:5433/tidings"
    assert password_of(make_url("sqlite:///var/tidings.db")) is None
