"""`tidings sources` (health), `tidings import-opml` and `tidings export-opml`."""

from __future__ import annotations

import getpass
import io
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.decide import prepare
from aggregator.opml import parse_opml
from aggregator.store import FailureRecord, Store
from aggregator.types import EventData
from tests.stores import store_url
from tests.support import CliRun as Run
from tests.support import feed_source

OPML = b"""<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <body>
    <outline text="Law">
      <outline type="rss" text="Court rulings" xmlUrl="https://rulings.example.com/feed.xml"/>
      <outline type="rss" text="Tax" xmlUrl="https://tax.example.com/t.rss" category="weekly"/>
      <outline text="Just a note"/>
    </outline>
    <outline type="rss" text="Wiki again" xmlUrl="https://wiki.example.com/feed"/>
    <outline type="rss" text="Rulings twice" xmlUrl="https://rulings.example.com/feed.xml"/>
  </body>
</opml>
"""


@pytest.fixture
def tidings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Run:
    """A config file with one feed source, `wiki`, and alerts after 3 failures."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'[store]\nurl = "{store_url(tmp_path)}"\n[poller]\nalert_after = 3\n'
        + feed_source("wiki", "https://wiki.example.com/feed", title="The Wiki")
    )
    monkeypatch.setattr(getpass, "getuser", lambda: "ops-person")
    return Run(config, capsys)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def store(tidings: Run) -> Iterator[Store]:
    assert tidings("sources") == 0  # creates the store with the config's sources
    s = tidings.store()
    yield s
    s.close()


NOW = datetime.now(UTC)


# --- tidings sources ------------------------------------------------------------


def test_sources_shows_failures_alerts_retries_and_moves(tidings: Run, store: Store) -> None:
    store.create_source(
        {"id": "blog", "kind": "feed", "url": "https://blog.example/feed"}, actor="t", now=NOW
    )
    store.create_source(
        {"id": "calm", "kind": "feed", "url": "https://calm.example/feed"}, actor="t", now=NOW
    )
    retry = datetime.now(UTC) + timedelta(hours=2, minutes=5)  # "in 2h", read soon after
    for n in range(3):
        store.record_failure("wiki", f"HTTP 503 from wiki, try {n}\nsecond line", now=NOW,
                             next_poll_at=retry)  # fmt: skip
    store.record_failure("blog", "timed out fetching https://blog.example/feed", now=NOW,
                         next_poll_at=retry)  # fmt: skip
    calm = next(s for s in store.db_sources() if s.id == "calm")
    items = prepare([EventData(external_id="1", title="one")])
    store.record_poll(calm, items, state=None, now=NOW, next_poll_at=retry,
                      permanent_redirect="https://calm.example/new-feed")  # fmt: skip

    assert tidings("sources") == 0
    lines = tidings.out.splitlines()
    header, rows = lines[0].split(), {line.split()[0]: line for line in lines[1:]}
    assert header[:3] == ["SOURCE", "KIND", "STATE"]
    assert "ALERT failing x3" in rows["wiki"]
    assert " in 2h " in rows["wiki"]  # when it is tried again
    assert "HTTP 503 from wiki, try 2 second line" in rows["wiki"]  # one line per source
    assert "failing x1" in rows["blog"] and "ALERT" not in rows["blog"]
    assert "timed out fetching https://blog.example/feed" in rows["blog"]
    calm_at = lines.index(rows["calm"])
    assert " ok " in rows["calm"]
    assert lines[calm_at + 1] == "    moved permanently to https://calm.example/new-feed"


def test_sources_shows_why_the_poller_stopped_a_source(tidings: Run, store: Store) -> None:
    reason = "HTTP 410 Gone from https://wiki.example.com/feed"
    store.record([FailureRecord("wiki", reason, NOW, NOW, gone=True)])
    assert tidings("sources") == 0
    lines = tidings.out.splitlines()
    assert lines[1].split()[:3] == ["wiki", "feed", "stopped"]
    assert " due " not in lines[1]  # not polled until resumed
    assert lines[2] == f"    stopped: {reason}; resume it in the web admin (Sources, Resume)"
    store.resume_source("wiki", actor="test", now=NOW)
    assert tidings("sources") == 0
    assert "stopped" not in tidings.out and "due" in tidings.out


# --- tidings import-opml -----------------------------------------------------------


def test_import_opml_creates_tagged_web_sources_and_reports_lines(
    tidings: Run, store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "subs.opml"
    path.write_bytes(OPML)
    assert tidings("import-opml", str(path), "--audience", "legal", "--audience", "tax") == 0
    assert tidings.out == "2 created, 2 already present, 1 invalid\n"
    assert tidings.err.splitlines() == [
        f"{path}:7: outline 'Just a note' has no xmlUrl: not a feed",
        f"{path}:10: https://rulings.example.com/feed.xml is already on line 5; skipped",
    ]
    origin, raw = store.source_table("tax") or ("", {})
    assert origin == "db"  # editable in the web admin, like one made there
    assert raw["tags"] == ["Law", "weekly"] and raw["audience"] == ["legal", "tax"]
    entry = store.people.audit_log(limit=1)[0]
    assert (entry.actor, entry.action, entry.target) == ("cli:ops-person", "source.create", "tax")

    assert tidings("import-opml", str(path)) == 0
    assert tidings.out == "0 created, 4 already present, 1 invalid\n"


def test_import_opml_never_prints_a_password_or_token(
    tidings: Run, store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "secret.opml"
    path.write_bytes(
        b"""<opml version="2.0"><body>
<outline text="a" xmlUrl="https://host.example/feed?token=x"/>
<outline text="b" xmlUrl="https://bob:s3cret@host.example/feed?token=x"/>
<outline text="c" xmlUrl="https://bob:s3cret@other.example/feed?token=x"/>
</body></opml>"""
    )
    assert tidings("import-opml", str(path)) == 0
    assert tidings.out == "1 created, 1 already present, 1 invalid\n"
    assert tidings.err.splitlines() == [
        f"{path}:3: https://host.example/feed?… is already on line 2; skipped",
        f"{path}:4: https://other.example/feed?…: url: credentials do not belong in the URL: "
        "use username and password",
    ]


def test_import_opml_shows_progress_on_a_terminal(
    tidings: Run, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "subs.opml"
    path.write_bytes(OPML)
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert tidings("import-opml", str(path)) == 0
    assert "| 0/3 [" in terminal.getvalue()  # a bar over the 3 feeds (cleared at the end)
    assert tidings.out == "2 created, 2 already present, 1 invalid\n"


def test_import_opml_refuses_a_bad_file_or_audience_and_changes_nothing(
    tidings: Run, store: Store, tmp_path: Path
) -> None:
    before = store.source_statuses(viewer=None)
    assert tidings("import-opml", str(tmp_path / "missing.opml")) == 2
    assert "cannot read" in tidings.err and "missing.opml" in tidings.err
    bad = tmp_path / "bad.opml"
    bad.write_text("<opml><body><outline></body></opml>")
    assert tidings("import-opml", str(bad)) == 2
    assert f"error: {bad}: this is not an OPML subscription list" in tidings.err
    assert "line 1" in tidings.err
    good = tmp_path / "subs.opml"
    good.write_bytes(OPML)
    assert tidings("import-opml", str(good), "--audience", "bad group!") == 2
    assert tidings.err.startswith("error: --audience: 'bad group!': a group name is")
    assert store.source_statuses(viewer=None) == before


# --- tidings export-opml -----------------------------------------------------------


def test_export_opml_writes_file_and_web_sources(
    tidings: Run, store: Store, tmp_path: Path
) -> None:
    store.create_source(
        {"id": "blog", "kind": "feed", "url": "https://blog.example/feed", "tags": ["news"]},
        actor="t", now=NOW,
    )  # fmt: skip
    out = tmp_path / "out.opml"
    assert tidings("export-opml", "-o", str(out)) == 0
    assert tidings.out == ""
    assert tidings.err == f"wrote 2 feed sources to {out}\n"
    feeds = {(f.url, f.title, f.tags) for f in parse_opml(out.read_bytes()).feeds}
    assert feeds == {
        ("https://wiki.example.com/feed", "The Wiki", ()),
        ("https://blog.example/feed", "blog", ("news",)),
    }
    # Without -o, the document is the standard output, and only it.
    assert tidings("export-opml") == 0
    assert tidings.out.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">')
    assert {(f.url, f.title, f.tags) for f in parse_opml(tidings.out.encode()).feeds} == feeds
    assert tidings.err == "wrote 2 feed sources\n"


def test_export_opml_warns_on_stderr_when_a_url_carries_a_token(
    tidings: Run, store: Store, tmp_path: Path
) -> None:
    url = "https://blog.example/feed?token=s3cret"
    store.create_source({"id": "blog", "kind": "feed", "url": url}, actor="t", now=NOW)
    out = tmp_path / "out.opml"
    # A real process: pytest's log capture would otherwise take the warning
    # away from stderr, which is where it must show.
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from aggregator.cli import main; sys.exit(main())",
         "export-opml", "-o", str(out), "--config", str(tidings.config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert url in {f.url for f in parse_opml(out.read_bytes()).feeds}  # written whole
    warning, wrote = run.stderr.splitlines()
    assert "WARNING" in warning and "(blog)" in warning and "s3cret" not in warning
    assert "query string or user:password" in warning
    assert wrote == f"wrote 2 feed sources to {out}"
