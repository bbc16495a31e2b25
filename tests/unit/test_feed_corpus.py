"""Every file of the shared feed corpus (about 4,300: RSS 0.9x to 2.0, RDF,
Atom 0.3 and 1.0, JSON Feed, and the malformed, mis-encoded and hostile
files feed libraries test themselves with) through the feed connector's
parse-and-normalise path: parse_feed, then a first poll's identities
(settle_identities), then prepare.

Nothing is skipped but the corpus's manifest. Its few files that are not
feeds (OPML lists, HTML pages, README-style .md files, podcastparser's
expected-output .json files) must come out as what a poll would record: a
ParseError. Any other exception fails the test with the file's name.

For a well-formed file (feedparser's bozo flag clear; for JSON, valid JSON)
the event count is the document's entry count less the entries that share
one identity, computed here from feedparser's (or json's) own view of the
entries with the rule docs/connectors.md states: the guid when no two
entries share one, else the link when no two share one, an entry without
that key falling back to its link (when unshared), then to a hash of title
and date (of the content, when both are missing).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import feedparser
import pytest

from aggregator.decide import prepare, settle_identities
from aggregator.exceptions import ParseError
from connectors.feed import parse_feed
from tests.corpus import corpus, files

URL = "https://corpus.example/feed"
JSON_START = re.compile(rb"^\s*(?:\xef\xbb\xbf)?\s*\{")
ERROR_KIND = re.compile(
    r"(not an RSS/Atom/JSON feed|not valid JSON|not a JSON Feed)"
    r"(?: \((?:<unknown>:\d+:\d+: )?([^()]*))?"
)


@dataclass(frozen=True, slots=True)
class Outcome:
    path: str
    events: int
    attachments: int
    error: str | None  # the kind of ParseError
    crash: str | None  # any other exception: a bug
    well_formed: bool
    entries: int  # as feedparser or json sees them
    expected: int | None  # entries less shared identities; None: must be a ParseError
    version: str


def error_kind(err: ParseError) -> str:
    found = ERROR_KIND.search(str(err))
    if found is None:
        return str(err)
    kind, reason = found.groups()
    return f"{kind}: {reason.strip()}" if reason and kind.startswith("not an RSS") else kind


def distinct(entries: Sequence[Any], key: Callable[[Any, str], Any]) -> int:
    """How many identities the documented rule gives `entries`; `key(entry,
    name)` reads "guid", "link", "title", "date" or "content"."""
    guids = [key(e, "guid") for e in entries]
    links = [key(e, "link") for e in entries]
    present_guids = [g for g in guids if g]
    present_links = [link for link in links if link]
    if present_guids and len(set(present_guids)) == len(present_guids):
        scheme = "guid"
    elif present_links and len(set(present_links)) == len(present_links):
        scheme = "link"
    else:
        scheme = "hash"
    shared = {link for link, n in Counter(present_links).items() if n > 1}
    found: set[tuple[Any, ...]] = set()
    for entry, guid, link in zip(entries, guids, links, strict=True):
        if scheme == "guid" and guid:
            found.add(("id", guid))
        elif scheme != "hash" and link and link not in shared:
            found.add(("id", link))
        elif key(entry, "title") or key(entry, "date"):
            found.add(("hash", key(entry, "title"), key(entry, "date")))
        else:
            found.add(("hash", key(entry, "content")))
    return len(found)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _xml_key(entry: Any, name: str) -> Any:
    if name == "date":
        return dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")
    if name == "content":
        content = entry.get("content")
        return content[0].get("value", "") if content else entry.get("summary", "")
    return _text(entry.get({"guid": "id", "link": "link", "title": "title"}[name]))


def _iso(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _json_key(item: dict[str, Any], name: str) -> Any:
    if name == "guid":
        guid = item.get("id")
        return str(guid).strip() if type(guid) in (str, int) else ""
    if name == "date":
        return _iso(item.get("date_published")) or _iso(item.get("date_modified"))
    if name == "content":
        return _text(item.get("content_html")) or _text(item.get("content_text"))
    return _text(item.get({"link": "url", "title": "title"}[name]))


def reference(body: bytes) -> tuple[bool, int, int | None, str]:
    """(well formed, entries, expected events, version) from feedparser or json."""
    if JSON_START.match(body):
        try:
            doc = json.loads(body)
        except ValueError:
            return False, 0, None, "json"
        if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
            return True, 0, None, "json"
        # Items that are not objects are skipped: there is nothing in them.
        items = [i for i in doc["items"] if isinstance(i, dict)]
        number = str(doc.get("version", "")).rsplit("/", 1)[-1]
        version = "jsonfeed" + {"1": "1.0", "": "?"}.get(number, number)
        return True, len(items), distinct(items, _json_key), version
    parsed = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
    entries = parsed.entries
    return not parsed.bozo, len(entries), distinct(entries, _xml_key), parsed.get("version", "")


def run(path: Path) -> Outcome:
    body = path.read_bytes()
    events = attachments = 0
    error = crash = None
    try:
        items, _ = settle_identities(parse_feed(body, URL).events, None)
        prepared = prepare(items)
        events = len(prepared)
        attachments = sum(len(p.data.extra.get("attachments", ())) for p in prepared)
    except ParseError as err:
        error = error_kind(err)
    except Exception as err:  # a bug: reported with the file, after the whole run
        crash = f"{type(err).__name__}: {err}"
    well_formed, entries, expected, version = reference(body)
    root = corpus("feeds")
    return Outcome(
        str(path.relative_to(root)), events, attachments, error, crash, well_formed,
        entries, expected, version,
    )  # fmt: skip


def corpus_files() -> list[Path]:
    return [p for p in files("feeds", "**/*") if p.is_file() and p.name != "manifest.tsv"]


@pytest.mark.corpus
def test_every_corpus_file_parses_or_fails_cleanly() -> None:
    corpus("feeds")
    paths = corpus_files()
    assert len(paths) > 4000, "expected the whole feed corpus"
    started = time.perf_counter()
    outcomes = [run(p) for p in paths]
    seconds = time.perf_counter() - started

    crashes = [f"{o.path}: {o.crash}" for o in outcomes if o.crash]
    assert not crashes, "\n".join(crashes)
    # Each file yields events, or a recorded error, or is a feed with no entries.
    silent = [o.path for o in outcomes if not (o.events or o.error or o.entries == 0)]
    assert not silent, silent
    # A well-formed document: one event per entry less shared identities, and
    # a ParseError only when there is nothing to read (or it is not a feed).
    wrong = [
        f"{o.path}: {o.events} events for {o.entries} entries ({o.expected} expected), "
        f"error {o.error}"
        for o in outcomes
        if o.well_formed
        and (
            (o.expected is None and o.error is None)
            or (o.expected is not None and o.error is not None and o.entries > 0)
            or (o.expected is not None and o.error is None and o.events != o.expected)
        )
    ]
    assert not wrong, "\n".join(wrong)

    # Every format reaches events somewhere in the corpus.
    formats = Counter(o.version for o in outcomes if o.events)
    for version in ("rss090", "rss091u", "rss091n", "rss092", "rss093", "rss094", "rss10",
                    "rss20", "atom03", "atom10", "jsonfeed1.0", "jsonfeed1.1"):  # fmt: skip
        assert formats[version], f"no {version} file produced events: {formats}"

    errors = Counter(o.error for o in outcomes if o.error)
    checked = [o for o in outcomes if o.well_formed and o.expected is not None and not o.error]
    print(
        f"\nfeed corpus: {len(outcomes)} files in {seconds:.1f}s, "
        f"{sum(o.events for o in outcomes)} events "
        f"({sum(o.attachments for o in outcomes)} attachments), "
        f"{sum(errors.values())} ParseErrors, "
        f"{sum(1 for o in outcomes if not o.events and not o.error)} feeds without entries"
    )
    print(
        f"well-formed files checked entry for entry: {len(checked)} "
        f"({sum(o.entries for o in checked)} entries, "
        f"{sum(o.entries - o.events for o in checked)} sharing an identity); "
        f"ill-formed: {sum(1 for o in outcomes if not o.well_formed)}"
    )
    print("errors by kind:")
    for kind, count in errors.most_common():
        print(f"  {count:5d}  {kind}")
    print("files with events by format:", dict(sorted(formats.items())))
