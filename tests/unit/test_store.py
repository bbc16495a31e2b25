from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from aggregator.config import SourceConfig, parse_config
from aggregator.decide import prepare
from aggregator.exceptions import ConfigError
from aggregator.filters import EventFilter
from aggregator.store import PollRecord, Store
from aggregator.types import Actor, EventData
from connectors.feed import FeedConnector, FeedOptions
from tests.stores import on_postgresql, store_url

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(store_url(tmp_path))
    yield s
    s.close()


def config(**source: object):
    base = {"id": "blog", "kind": "feed", "url": "https://e.org/feed", "tags": ["eng"]}
    return parse_config({"sources": [{**base, **source}]})


def items(*pairs: tuple[str, str]) -> list:
    return prepare([EventData(external_id=i, title=t) for i, t in pairs])


@pytest.mark.sqlite_only
def test_sqlite_runs_in_wal_mode(store: Store) -> None:
    with store._read.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_record_poll_appends_new_skips_same_appends_updates(store: Store) -> None:
    src = config().sources[0]
    store.sync_sources([src], NOW)
    later = NOW + timedelta(minutes=10)
    ids = store.record_poll(src, items(("a", "A"), ("b", "B")), state={"etag": "1"},
                            now=NOW, next_poll_at=later)  # fmt: skip
    assert len(ids) == 2 and ids[0] < ids[1]
    assert store.record_poll(src, items(("a", "A"), ("b", "B")), state={"etag": "2"},
                             now=NOW, next_poll_at=later) == []  # fmt: skip
    upd = store.record_poll(src, items(("a", "A v2")), state=None, now=NOW, next_poll_at=later)
    assert len(upd) == 1
    event = store.get_event(upd[0], viewer=None)
    assert event is not None and event.verb == "Update" and event.title == "A v2"
    assert event.audience == ("everyone",)
    state, failures = store.source_state("blog")
    assert state == {"etag": "2"} and failures == 0
    assert [e.id for e in store.latest_events(viewer=None)] == [upd[0], ids[1], ids[0]]


def test_lone_surrogates_and_nul_are_fixed_not_a_failed_poll(store: Store) -> None:
    """JSON's "\\ud800" decodes to half a character, which SQLite, nh3 and UTF-8
    all refuse, and PostgreSQL's text cannot hold "\\u0000": one such item must
    not fail every poll of its source."""
    src = config().sources[0]
    store.sync_sources([src], NOW)
    bad = "half \ud800 a\x00 pair"
    item = EventData(
        external_id="id\udfff\x00", title=bad, summary=bad, content_html=f"<p>{bad}</p>",
        url="https://e.org/\ud800", actor=Actor(bad, None, None), tags=(bad,),
    )  # fmt: skip
    [new] = store.record_poll(src, prepare([item]), state=None, now=NOW, next_poll_at=NOW)
    event = store.get_event(new, viewer=None)
    assert event is not None
    fixed = "half \ufffd a pair"
    assert (event.title, event.summary, event.actor.name) == (fixed, fixed, fixed)
    assert event.external_id == "id\ufffd" and fixed in event.content_html
    assert event.tags[0] == fixed and event.url == "https://e.org/\ufffd"
    # The next poll sees the same item as the same version: nothing new.
    assert store.record_poll(src, prepare([item]), state=None, now=NOW, next_poll_at=NOW) == []
    assert [e.id for e in store.latest_events(EventFilter.parse("pair"), viewer=None)] == [new]


def test_updates_can_be_ignored_per_source(store: Store) -> None:
    src = config(track_updates=False).sources[0]
    store.sync_sources([src], NOW)
    store.record_poll(src, items(("a", "A")), state=None, now=NOW, next_poll_at=NOW)
    assert store.record_poll(src, items(("a", "A2")), state=None, now=NOW, next_poll_at=NOW) == []


def test_failed_write_keeps_neither_events_nor_state(store: Store) -> None:
    src = config().sources[0]
    store.sync_sources([src], NOW)
    naive = datetime(2026, 1, 1)  # the store refuses naive datetimes mid-transaction
    with pytest.raises(Exception, match="naive"):
        store.record_poll(src, items(("a", "A")), state={"etag": "x"}, now=NOW,
                          next_poll_at=naive)  # fmt: skip
    assert store.max_event_id() == 0
    assert store.source_state("blog") == (None, 0)


def test_claims_carry_state_and_failures(store: Store) -> None:
    src = config().sources[0]
    store.sync_sources([src], NOW)
    store.record_poll(src, items(("a", "A")), state={"etag": "e"}, now=NOW, next_poll_at=NOW)
    store.record_failure("blog", "HTTP 500", now=NOW, next_poll_at=NOW)
    [claim] = store.claim(["blog"], NOW, lease=60)
    assert (claim.source_id, claim.state, claim.failures) == ("blog", {"etag": "e"}, 1)
    assert store.claim_due(NOW, 10, lease=60) == []  # leased


def test_group_commit_is_all_or_nothing(store: Store) -> None:
    from aggregator.store import FailureRecord, PollRecord

    cfg = parse_config({"sources": [
        {"id": i, "kind": "feed", "url": "https://e.org/f"} for i in ("a", "b")
    ]})  # fmt: skip
    store.sync_sources(cfg.sources, NOW)
    a, b = cfg.sources
    ok = PollRecord(a, items(("1", "One")), {"n": 1}, NOW, NOW)
    bad = PollRecord(b, items(("2", "Two")), {"n": 2}, NOW, datetime(2026, 1, 1))  # naive
    with pytest.raises(Exception, match="naive"):
        store.record([ok, FailureRecord("b", "x", NOW, NOW), bad])
    assert store.max_event_id() == 0 and store.source_state("a") == (None, 0)
    assert [len(ids) for ids in store.record([ok, FailureRecord("b", "x", NOW, NOW)])] == [1, 0]
    assert store.source_state("a") == ({"n": 1}, 0) and store.source_state("b") == (None, 1)


def test_failures_count_up_and_reset(store: Store) -> None:
    src = config().sources[0]
    store.sync_sources([src], NOW)
    store.record_failure("blog", "HTTP 500", now=NOW, next_poll_at=NOW)
    store.record_failure("blog", "HTTP 502", now=NOW, next_poll_at=NOW)
    status = store.source_statuses(viewer=None)[0]
    assert status.consecutive_failures == 2 and status.last_error == "HTTP 502"
    store.record_poll(src, items(("a", "A")), state=None, now=NOW, next_poll_at=NOW)
    status = store.source_statuses(viewer=None)[0]
    assert status.consecutive_failures == 0 and status.last_error is None
    assert status.event_count == 1


def test_claim_due_leases_sources(store: Store) -> None:
    cfg = parse_config({"sources": [
        {"id": f"s{i}", "kind": "feed", "url": "https://e.org/f"} for i in range(3)
    ]})  # fmt: skip
    store.sync_sources(cfg.sources, NOW)
    first = sorted(c.source_id for c in store.claim_due(NOW, 2, lease=60))
    assert first in (["s0", "s1"], ["s0", "s2"], ["s1", "s2"])
    assert len(store.claim_due(NOW, 10, lease=60)) == 1
    assert store.claim_due(NOW, 10, lease=60) == []
    assert len(store.claim_due(NOW + timedelta(seconds=61), 10, lease=60)) == 3


def test_pollers_claiming_at_once_take_each_due_source_once(store: Store, tmp_path: Path) -> None:
    """Four pollers (each its own Store: its own connections) claim 400 due
    sources in small bites at the same moment: every source goes to exactly one."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = parse_config({"sources": [
        {"id": f"s{i}", "kind": "feed", "url": "https://e.org/f"} for i in range(400)
    ]})  # fmt: skip
    store.sync_sources(cfg.sources, NOW)
    pollers = [Store(store.url) for _ in range(4)]

    def claim_all(poller: Store) -> list[str]:
        taken: list[str] = []
        for _ in range(400):  # bounded: at least one source a bite until none is left
            bite = poller.claim_due(NOW, 7, lease=60)
            if not bite:
                return taken
            taken += [c.source_id for c in bite]
        raise AssertionError("claims did not run out")

    try:
        with ThreadPoolExecutor(4) as pool:
            taken = [sid for got in pool.map(claim_all, pollers) for sid in got]
    finally:
        for p in pollers:
            p.close()
    assert sorted(taken) == sorted(f"s{i}" for i in range(400))


def test_sources_removed_from_the_file_are_disabled(store: Store) -> None:
    store.sync_sources(config().sources, NOW)
    store.sync_sources([], NOW)
    assert store.source_statuses(viewer=None)[0].enabled is False
    assert store.claim_due(NOW, 10, lease=60) == []


def test_history_paging_and_filters(store: Store) -> None:
    src = config().sources[0]
    store.sync_sources([src], NOW)
    ids = store.record_poll(src, items(*[(str(i), f"Title {i}") for i in range(10)]),
                            state=None, now=NOW, next_poll_at=NOW)  # fmt: skip
    page = store.latest_events(viewer=None, limit=4)
    assert [e.id for e in page] == ids[::-1][:4]
    page2 = store.latest_events(viewer=None, before=page[-1].id, limit=4)
    assert [e.id for e in page2] == ids[::-1][4:8]
    assert [e.id for e in store.events_after(ids[6], viewer=None)] == ids[7:]
    assert [e.title for e in store.latest_events(EventFilter.parse("title 3"), viewer=None)] == [
        "Title 3"
    ]
    assert store.latest_events(EventFilter.parse("source:other"), viewer=None) == []


def test_ids_are_never_reused(store: Store) -> None:
    src = config().sources[0]
    store.sync_sources([src], NOW)
    [first] = store.record_poll(src, items(("a", "A")), state=None, now=NOW, next_poll_at=NOW)
    with store._write.begin() as conn:
        conn.execute(text("DELETE FROM entries"))
        conn.execute(text("DELETE FROM events"))
    [second] = store.record_poll(src, items(("a", "A")), state=None, now=NOW, next_poll_at=NOW)
    assert second > first


def _head_revision() -> str | None:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    import aggregator.store

    ini = Path(aggregator.store.__file__).with_name("alembic.ini")
    return ScriptDirectory.from_config(AlembicConfig(str(ini))).get_current_head()


def test_processes_starting_at_once_on_an_empty_store_migrate_in_turn(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url = store_url(tmp_path, "race", empty=True)
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: Store(url), range(4)))  # each raises if it lost a race
    with stores[0]._read.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
            _head_revision()
        )
    for s in stores:
        s.close()


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    url = store_url(tmp_path, "m")
    Store(url).close()
    again = Store(url)
    with again._read.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version is not None and version == _head_revision()
    again.close()


def test_changed_source_settings_are_due_at_once(store: Store) -> None:
    store.sync_sources(config(interval="1h").sources, NOW)
    store.claim_due(NOW, 10, lease=3600)
    store.sync_sources(config(interval="1h").sources, NOW)
    assert store.claim_due(NOW, 10, lease=60) == []  # unchanged: the lease holds
    store.sync_sources(config(interval="5s").sources, NOW)
    assert [c.source_id for c in store.claim_due(NOW, 10, lease=60)] == ["blog"]


def test_schema_matches_the_migrations(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from aggregator.store.schema import metadata

    def ours(name: str | None, type_: str, parent: object) -> bool:
        # The full-text index of each back-end (migrations 0004 and 0008) is
        # its own machinery, not part of the portable schema.
        return not (
            type_ in ("table", "index")
            and name is not None
            and name.startswith(("events_fts", "event_search", "ix_event_search"))
        )

    with store._read.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": ours})
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_a_changed_url_forgets_the_old_etag(store: Store) -> None:
    src = config().sources[0]
    store.sync_sources([src], NOW)
    store.record_poll(src, items(("a", "A")), state={"etag": "e"}, now=NOW, next_poll_at=NOW)
    store.sync_sources(config(tags=["other"]).sources, NOW)
    assert store.source_state("blog")[0] == {"etag": "e"}  # same options: state kept
    store.sync_sources(config(url="https://e.org/moved").sources, NOW)
    # The ETag is gone; what says how its items were read stays (FeedConnector.carry_state).
    assert store.source_state("blog")[0] == {"rules": 1}


def test_renewing_extends_only_a_claim_still_as_it_was_made(store: Store) -> None:
    """A running poll's claim is renewed; one its poll has recorded, one an
    admin made due, or one that lapsed and another poller took, is not."""
    cfg = parse_config({"sources": [
        {"id": f"s{i}", "kind": "feed", "url": "https://e.org/f"} for i in range(4)
    ]})  # fmt: skip
    store.sync_sources(cfg.sources, NOW)
    claims = {c.source_id: c.until for c in store.claim_due(NOW, 10, lease=15)}
    assert set(claims.values()) == {NOW + timedelta(seconds=15)}
    store.record_poll(
        cfg.sources[1], [], state=None, now=NOW, next_poll_at=NOW + timedelta(minutes=5)
    )
    store.set_next_poll(["s2"], NOW)  # "Poll now"
    [taken] = store.claim(["s3"], NOW + timedelta(seconds=1), lease=15)  # say it lapsed
    assert taken.until == NOW + timedelta(seconds=16)
    until = NOW + timedelta(seconds=25)
    assert store.renew(claims, until) == {"s0"}
    due = {c.source_id for c in store.claim_due(NOW + timedelta(seconds=15.5), 10, lease=15)}
    assert due == {"s2"}  # s0 renewed, s1 recorded, s3 the other poller's


def test_a_poller_hands_back_what_it_does_not_know(store: Store) -> None:
    from aggregator.poller import LEASE, UNKNOWN_RETRY, Poller

    def sources(*ids: str) -> list[SourceConfig]:
        raw = [{"id": i, "kind": "feed", "url": "https://e.org/f"} for i in ids]
        return list(parse_config({"sources": raw}).sources)

    mine = parse_config({"sources": [{"id": "mine", "kind": "feed", "url": "https://e.org/f"}]})
    store.sync_sources(mine.sources, NOW, config_file="/etc/mine.toml")
    store.sync_sources(sources("theirs"), NOW, config_file="/etc/theirs.toml")
    poller = Poller(mine, store)
    assert [c.source_id for c in poller._claim_due(NOW, 10)] == ["mine"]
    # "theirs" is due again soon, for a poller of its own file; until then nobody takes it.
    assert store.claim_due(NOW, 10, 60) == []
    later = NOW + timedelta(seconds=UNKNOWN_RETRY)
    # By then the claim of "mine" (never renewed: no poll ran) has lapsed too.
    assert LEASE < UNKNOWN_RETRY
    assert sorted(c.source_id for c in store.claim_due(later, 10, 60)) == ["mine", "theirs"]
    # One made in the web admin since the poller's last look is its own, not handed back.
    store.create_source(
        {"id": "web", "kind": "feed", "url": "https://e.org/w"}, actor="a", now=later
    )
    assert [c.source_id for c in poller._claim_due(later, 10)] == ["web"]


def test_another_config_files_sources_are_left_alone(store: Store) -> None:
    store.sync_sources(config().sources, NOW, config_file="/etc/main.toml")
    store.sync_sources([], NOW, config_file="/tmp/other.toml")
    assert store.source_statuses(viewer=None)[0].enabled is True
    store.sync_sources([], NOW, config_file="/etc/main.toml")
    assert store.source_statuses(viewer=None)[0].enabled is False


def test_a_rebaseline_updates_changed_items_silently_and_keeps_new_ones(store: Store) -> None:
    src = config().sources[0]
    store.sync_sources([src], NOW)
    store.record_poll(src, items(("a", "A"), ("b", "B")), state=None, now=NOW, next_poll_at=NOW)
    changed = items(("a", "A, read differently"), ("b", "B"), ("c", "C"))
    [ids] = store.record([PollRecord(src, changed, None, NOW, NOW, rebaseline=True)])
    assert [store.get_event(i, viewer=None).external_id for i in ids] == ["c"]  # type: ignore[union-attr]
    # The next ordinary poll of the same items finds nothing new or changed.
    assert store.record_poll(src, changed, state=None, now=NOW, next_poll_at=NOW) == []


def test_new_options_keep_only_what_the_kind_carries(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = config().sources[0]
    store.sync_sources([src], NOW)
    store.record_poll(
        src, items(("a", "A")), state={"etag": "e", "identity": "link"}, now=NOW, next_poll_at=NOW
    )
    monkeypatch.setattr(
        FeedConnector,
        "carry_state",
        classmethod(lambda cls, s: {"identity": (s or {})["identity"]}),
    )
    store.sync_sources(config(url="https://e.org/moved").sources, NOW)
    assert store.source_state("blog")[0] == {"identity": "link"}


def test_migration_0006_frees_the_alerts_id_and_goes_back_down(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import create_engine

    import aggregator.store

    url = store_url(tmp_path, "old", empty=True)
    cfg = AlembicConfig(str(Path(aggregator.store.__file__).with_name("alembic.ini")))
    engine = create_engine(url)

    def migrate(step: str, target: str) -> None:
        with engine.begin() as conn:
            if not on_postgresql():  # PostgreSQL always enforces them
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            cfg.attributes["connection"] = conn
            getattr(command, step)(cfg, target)

    migrate("upgrade", "0005")
    with engine.begin() as conn:  # someone's own source, made before the id was reserved
        conn.exec_driver_sql(
            "INSERT INTO sources (id, kind, origin, config, enabled, consecutive_failures,"
            " created_at) VALUES ('tidings-alerts', 'feed', 'db', '{\"audience\": [\"everyone\"]}',"
            " TRUE, 0, '2026-01-01 00:00:00')"
        )
    store = Store(url)  # upgrades to the head
    src = SourceConfig(
        id="tidings-alerts-renamed", kind="feed", options=FeedOptions(url="https://e.org/f")
    )
    store.record_poll(src, items(("x", "X")), state=None, now=NOW, next_poll_at=NOW)
    with store._read.connect() as conn:
        rows = dict(conn.execute(text("SELECT id, origin FROM sources")).all())
    assert rows == {"tidings-alerts": "system", "tidings-alerts-renamed": "db"}
    store.close()
    migrate("downgrade", "0005")  # a store with events goes back down
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT id FROM sources").scalars().all() == [
            "tidings-alerts-renamed"
        ]
        assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar() == 1
    engine.dispose()


def test_the_alerts_id_is_reserved() -> None:
    with pytest.raises(ConfigError, match="'tidings-alerts' is reserved"):
        config(id="tidings-alerts")


def test_a_store_of_the_previous_schema_upgrades_with_its_data(tmp_path: Path) -> None:
    """What `tidings` of the previous release wrote (schema 0007: events, full
    text, people, tokens, streams and read marks, source state) is all there,
    searchable and usable after the upgrade to the newest schema."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    import aggregator.store

    url = store_url(tmp_path, "previous")
    old = Store(url)
    src = config().sources[0]
    old.sync_sources([src], NOW)
    old.people.create_user("ann", password_hash="h", admin=False, actor="t", now=NOW)
    token = old.people.create_token("ann", "script", actor="t", now=NOW)
    ann = old.people.user("ann")
    assert ann is not None
    stream = old.streams.create(ann.id, "Deals", "merger", now=NOW, viewer=None)
    ids = old.record_poll(
        src, items(("a", "Merger talks"), ("b", "Budget review")), state={"etag": "v1"},
        now=NOW, next_poll_at=NOW,
    )  # fmt: skip
    old.streams.mark_read(ann.id, stream.id, ids[0], viewer=None)
    cfg = AlembicConfig(str(Path(aggregator.store.__file__).with_name("alembic.ini")))
    with old._write.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007")
    old.close()

    store = Store(url)  # upgrades to the head
    try:
        assert [e.id for e in store.latest_events(viewer=None)] == ids[::-1]
        found = store.search_events(EventFilter.parse("merger"), viewer=None, limit=10)
        assert [e.id for e in found] == [ids[0]]
        assert store.source_state("blog") == ({"etag": "v1"}, 0)
        assert [t.name for t in store.people.tokens("ann")] == ["script"] and token
        [kept] = store.streams.list(ann.id)
        assert (kept.name, kept.query, kept.last_read_id) == ("Deals", "merger", ids[0])
        more = store.record_poll(src, items(("c", "Merger closed")), state=None, now=NOW,
                                 next_poll_at=NOW)  # fmt: skip
        assert more[0] > ids[-1]
        found = store.search_events(EventFilter.parse("merger"), viewer=None, limit=10)
        assert [e.id for e in found] == [more[0], ids[0]]
    finally:
        store.close()
