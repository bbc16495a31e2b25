"""A store that cannot be reached: `tidings check-config` says why and exits 2;
`/readyz` answers 503 with the driver's reason and logs it once a minute at
most. Neither ever shows the store's password."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from starlette.testclient import TestClient

import web.api
from aggregator.cli import main
from aggregator.config import parse_config
from tests.stores import PG_SERVER, store_url
from web.api import Outage
from web.app import create_app

PASSWORD = "pw-never-shown-4b7d"
REFUSING = f"postgresql+psycopg://tidings:{PASSWORD}@127.0.0.1:1/tidings"  # nothing on port 1
REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused'
)


def check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, *args: str
) -> tuple[int, str, str]:
    """`tidings check-config` on a config whose store is `url`."""
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nurl = "{url}"\n')
    code = main(["check-config", str(config), *args])
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    return code, out, err


# --- tidings check-config -------------------------------------------------------------


def test_a_reachable_store_gives_the_same_answer_as_ever(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = check(tmp_path, capsys, store_url(tmp_path))
    assert (code, out, err) == (0, f"{tmp_path / 'config.toml'}: ok (0 sources)\n", "")


def test_a_refusing_server_is_reported_soon_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code, out, err = check(tmp_path, capsys, REFUSING)
    assert time.monotonic() - started < 5
    assert (code, out) == (2, "")
    assert err == (
        f"error: {tmp_path / 'config.toml'} is valid, but cannot reach the store "
        f"postgresql+psycopg://tidings:***@127.0.0.1:1/tidings: {REFUSED}\n"
        "    Is the server running on that host and accepting TCP/IP connections?\n"
    )


def test_no_store_checks_the_file_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(tmp_path, capsys, REFUSING, "--no-store")[:2] == (
        0,
        f"{tmp_path / 'config.toml'}: ok (0 sources)\n",
    )


@pytest.mark.postgresql_only
def test_a_database_that_does_not_exist_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = make_url(PG_SERVER).set(database="tidings_no_such_db", password=PASSWORD)
    code, _out, err = check(tmp_path, capsys, url.render_as_string(hide_password=False))
    assert code == 2
    assert err.endswith(
        ":***@127.0.0.1:5432/tidings_no_such_db: connection failed: connection to server at "
        '"127.0.0.1", port 5432 failed: FATAL:  database "tidings_no_such_db" does not exist\n'
    ), err


def test_a_sqlite_file_that_cannot_be_created_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "var").write_text("a file where a directory should be")
    db = tmp_path / "var" / "data" / "tidings.db"
    code, _out, err = check(tmp_path, capsys, f"sqlite:///{db}")
    assert code == 2
    assert err.endswith(
        f"is valid, but cannot create the store {db}: {tmp_path / 'var'} is not a directory\n"
    )


def test_a_sqlite_file_in_a_directory_yet_to_be_made_is_fine_and_not_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every command makes the store and its directory on first use."""
    db = tmp_path / "var" / "data" / "tidings.db"
    assert check(tmp_path, capsys, f"sqlite:///{db}")[0] == 0
    assert not (tmp_path / "var").exists()


def test_a_file_that_is_not_a_database_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "tidings.db"
    db.write_text("hello" * 1000)
    code, _out, err = check(tmp_path, capsys, f"sqlite:///{db}")
    assert code == 2
    assert err.endswith(f"cannot open the store {db}: file is not a database\n")
    assert check(tmp_path, capsys, f"sqlite:///{tmp_path}")[2].endswith(
        f"the store {tmp_path} is not a file\n"
    )


# --- /readyz --------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    config = parse_config(
        {
            "store": {"url": store_url(tmp_path)},
            "server": {"allowed_hosts": ["testserver"]},
            "poller": {"enabled": False},
        }
    )
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as c:
        yield c


def refused() -> int:
    """What a store on a server that refuses connections raises."""
    engine = create_engine(REFUSING, poolclass=NullPool)
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT 1")) or 0)


def test_readyz_says_what_is_wrong_and_logs_where_once_a_minute(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert (client.get("/readyz").status_code, client.get("/readyz").text) == (200, "ready")
    monkeypatch.setattr(web.api, "store_outage", Outage(every=60.0))
    store = client.app.state.tidings.store  # type: ignore[attr-defined]
    with monkeypatch.context() as patch, caplog.at_level(logging.INFO, logger="web.api"):
        patch.setattr(store, "max_event_id", lambda **kw: refused())
        for _ in range(3):
            res = client.get("/readyz")
            # What went wrong, not where: the host and port are for the log.
            assert (res.status_code, res.text) == (
                503,
                "store unavailable: OperationalError: Connection refused",
            )
    assert PASSWORD not in caplog.text
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    # The whole message, its second line included; never the password.
    assert warning.getMessage() == (
        f"not ready: the store is unavailable: {REFUSED}\n"
        "\tIs the server running on that host and accepting TCP/IP connections?"
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="web.api"):
        assert client.get("/readyz").text == "ready"
        assert client.get("/readyz").text == "ready"
    assert [r.getMessage() for r in caplog.records] == ["ready: the store is available again"]


def test_an_outage_is_logged_as_it_starts_then_once_per_interval() -> None:
    outage = Outage(every=60.0)
    assert [outage.should_log(t) for t in (0, 1, 59.9, 60, 61, 130)] == [
        True, False, False, True, False, True,
    ]  # fmt: skip
    assert outage.ended() and not outage.ended()
    assert outage.should_log(131)  # a new outage is logged at once
