"""The jsonapi presets for Jira (Server/Data Center and Cloud), Confluence,
the Atlassian organization audit log, Jenkins and MediaWiki, mapped over the
shared intranet corpus (tests/corpus.py): every file of the corpus that
holds what a preset reads, every item of it.

Each file must map whole: as many events as items (less those a preset rule
skips on purpose), no problem, every title readable (no "None", no braces,
no doubled space), ids present and unique, links absolute, dates read where
the file has them, tags set; and a few items must come out exactly so.

The mapping is built here from the preset alone, as the connector builds
it, so these tests do not depend on the connector's fetching code; one test
checks that each preset's options are valid options of the real jsonapi
kind.

Two shapes are missing from the corpus, so two tests build a response from
the APIs' documented format instead (and say so): a MediaWiki
list=recentchanges answer (the corpus's MediaWiki files are generator
queries, which the mediawiki-pages preset reads), and Confluence content
with real version and history values (the corpus's expanded Confluence files
are OpenAPI stubs with "<string>" in every text).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jmespath
import pytest

from aggregator.types import EventData
from connectors.jsonapi import JsonApiOptions
from connectors.mapping import FieldMapping, Mapped, MappedOptions, load_preset, preset_names
from tests.corpus import corpus, files

PRESETS = (
    "jira", "jira-cloud", "confluence", "atlassian-audit", "jenkins", "mediawiki",
    "mediawiki-pages",
)  # fmt: skip
JIRA_SERVER = "https://jira.example.com/rest/api/2/search?jql=x&startAt=0"
JIRA_CLOUD = "https://example.atlassian.net/rest/api/2/search/jql?jql=x"
CONFLUENCE = "https://ctreminiom.atlassian.net/wiki/rest/api/content/search?cql=x"
AUDIT = "https://api.atlassian.com/admin/v1/orgs/9a1jj823-jac8-123d-jj01-63315k059cb2/events"
JENKINS = "https://ci.example.com/job/fish/api/json?tree=x"
WIKI = "https://yugipedia.com/api.php?action=query&format=json"


class _Opts(MappedOptions):
    """The jsonapi options a preset sets, typed loosely: only the mapping
    is built here."""

    preset_kind = "jsonapi"
    method: Any = None
    params: Any = None
    body: Any = None
    pagination: Any = None
    incremental: Any = None


def mapping(preset: str) -> FieldMapping:
    return _Opts.model_validate({"preset": preset}).mapping


def load(path: Path) -> Any:
    """A corpus file's JSON; None for one that is empty or not JSON."""
    try:
        return json.loads(path.read_bytes())
    except ValueError:
        return None


def faults(mapped: Mapped, expected: int, *, dated: bool, none: bool) -> list[str]:
    """What is wrong with a document's events; `expected` is how many;
    `none`: the document itself has the text "None" somewhere."""
    events = mapped.events
    out = [f"problem: {p}" for p in mapped.problems]
    if mapped.unmapped or len(events) != expected:
        out.append(f"{len(events)} events ({mapped.unmapped} unmapped), {expected} expected")
    ids = [e.external_id for e in events]
    if None in ids or len(set(ids)) != len(ids):
        out.append(f"ids missing or shared: {ids}")
    for e in events:
        title = e.title
        if not title or ("None" in title and not none) or "  " in title or set("{}") & set(title):
            out.append(f"{e.external_id}: unreadable title {title!r}")
        parts = urlsplit(e.url or "")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            out.append(f"{e.external_id}: url {e.url!r} is not absolute")
        if dated and e.published is None:
            out.append(f"{e.external_id}: no published date")
        if not e.tags:
            out.append(f"{e.external_id}: no tags")
    return out


def check(preset: str, doc: Any, base: str, expected: int, *, dated: bool = True) -> Mapped:
    mapped = mapping(preset).map(doc, base_url=base)
    wrong = faults(mapped, expected, dated=dated, none="None" in json.dumps(doc))
    assert not wrong, "\n".join(wrong)
    return mapped


def by_id(events: list[EventData]) -> dict[str | None, EventData]:
    return {e.external_id: e for e in events}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- the presets themselves ---------------------------------------------------------


def test_presets_are_valid_jsonapi_options_with_setup_text() -> None:
    assert set(PRESETS) <= set(preset_names("jsonapi"))
    for name in PRESETS:
        preset = load_preset("jsonapi", name)
        assert preset.title and preset.description and "Credentials:" in preset.setup, name
        opts = JsonApiOptions.model_validate({"url": "https://example.org/api", "preset": name})
        assert opts.items == preset.options["items"], name
        assert opts.mapping.fields["id"].source == preset.fields["id"], name
    # The incremental ones start a week (a day for a wiki) back, not at the beginning.
    for name in ("jira", "jira-cloud", "confluence", "mediawiki", "mediawiki-pages"):
        opts = JsonApiOptions.model_validate({"url": "https://example.org/api", "preset": name})
        assert opts.incremental.since and opts.incremental.initial_since in ("7d", "1d"), name
        assert "{since}" in " ".join(opts.params.values()), name


def test_a_source_overrides_one_field_and_keeps_the_rest() -> None:
    doc = {"issues": [{"id": "1", "key": "LAW-1", "fields": {"summary": "Engagement"}}]}
    opts = _Opts.model_validate({"preset": "jira", "fields": {"title": "fields.summary"}})
    [event] = opts.mapping.map(doc, base_url=JIRA_SERVER).events
    assert (event.title, event.thread_id) == ("Engagement", "LAW-1")


# --- Jira -------------------------------------------------------------------------------


@pytest.mark.corpus
@pytest.mark.parametrize(
    ("preset", "base", "browse"),
    [
        ("jira", JIRA_SERVER, "https://jira.example.com/browse/AR-86"),
        ("jira-cloud", JIRA_CLOUD, "https://example.atlassian.net/browse/AR-86"),
        # A context path: links stay under it.
        ("jira", "https://intranet.example/jira/rest/api/2/search", "https://intranet.example/jira/browse/AR-86"),
    ],
)  # fmt: skip
def test_jira_corpus_issue_searches(preset: str, base: str, browse: str) -> None:
    corpus("intranet", "jira")
    found = {}
    for path in files("intranet/jira", "**/*.json"):
        doc = load(path)
        if isinstance(doc, dict) and isinstance(doc.get("issues"), list):
            check(preset, doc, base, len(doc["issues"]))
            found[path.name] = doc
    assert "issues_in_sprint.json" in found, sorted(found)
    [event] = mapping(preset).map(found["issues_in_sprint.json"], base_url=base).events
    # This search did not ask for the summary: key and status only.
    assert event.title == "AR-86 (Ready)"
    assert (event.external_id, event.thread_id, event.url) == ("12338", "AR-86", browse)
    assert event.published == event.updated == at("2016-02-01T08:17:04.000-08:00")
    assert (event.actor.name, event.actor.email) == ("mister Morris", "mister.morris@uservoice.com")
    assert event.tags == ("AR", "Task", "Ready", "Major")
    assert (event.verb, event.object_type) == ("Update", "Issue")


def test_jira_issue_with_summary_labels_and_a_new_issue() -> None:
    issue: dict[str, Any] = {
        "id": "10002",
        "key": "LAW-7",
        "self": "https://jira.example.com/rest/api/2/issue/10002",
        "fields": {
            "summary": "Review the engagement letter",
            "description": "Clause 4 needs a liability cap.",
            "status": {"name": "In Progress"},
            "issuetype": {"name": "Task"},
            "project": {"key": "LAW"},
            "labels": ["urgent", "merger"],
            "reporter": {"displayName": "Jane Doe"},
            "assignee": {"displayName": "Sam Lee"},
            "created": "2026-11-02T09:30:00.000+0100",
            "updated": "2026-11-03T10:00:00.000+0100",
        },
    }
    fresh = {**issue, "id": "10003", "key": "LAW-8"}
    fresh["fields"] = {**issue["fields"], "updated": issue["fields"]["created"], "assignee": None}
    doc = {"startAt": 0, "maxResults": 50, "total": 2, "issues": [issue, fresh]}
    edited, created = check("jira", doc, JIRA_SERVER, 2).events
    assert edited.title == "LAW-7: Review the engagement letter (In Progress)"
    assert edited.summary == "Clause 4 needs a liability cap."
    assert edited.tags == ("LAW", "Task", "In Progress", "urgent", "merger")
    assert (edited.verb, edited.actor.name) == ("Update", "Sam Lee")  # the assignee
    assert (created.verb, created.actor.name) == ("Create", "Jane Doe")  # the reporter
    assert created.url == "https://jira.example.com/browse/LAW-8"


# --- Confluence -----------------------------------------------------------------------

CONFLUENCE_MOCKS = "intranet/confluence/go-atlassian/confluence/mocks"


def is_content(doc: Any) -> bool:
    """One Confluence content, or a list of them, with real values."""
    if not isinstance(doc, dict) or "<string>" in json.dumps(doc):
        return False
    items = doc.get("results") if "results" in doc else [doc]
    return isinstance(items, list) and all(
        isinstance(i, dict) and {"id", "type", "title"} <= set(i) for i in items
    )


@pytest.mark.corpus
def test_confluence_corpus_content_lists_and_contents() -> None:
    corpus(*CONFLUENCE_MOCKS.split("/"))
    events: dict[str, list[EventData]] = {}
    for path in files(CONFLUENCE_MOCKS, "*.json"):
        doc = load(path)
        if is_content(doc):
            count = len(doc["results"]) if "results" in doc else 1
            # Read without expand=version or history: these items have no dates.
            events[path.name] = check("confluence", doc, CONFLUENCE, count, dated=False).events
    assert {"get-contents.json", "get-content.json", "get-content-comments.json"} <= set(events)

    pages = events["get-contents.json"]
    assert [e.title for e in pages] == ["DUMMY", "TEST", "Confluence Page Title", "new page"]
    # In a list, webui is relative to the site's base: three levels up from the search.
    assert pages[1].url == "https://ctreminiom.atlassian.net/wiki/spaces/DUMMY/pages/64290817/TEST"
    assert {(e.object_type, e.tags) for e in pages} == {("Page", ("page",))}
    # One content carries its base URL itself.
    [page] = events["get-content.json"]
    assert page.url == (
        "https://ctreminiom.atlassian.net/wiki/spaces/DUMMY/pages/64290828/Confluence+Page+Title"
    )
    comment = events["get-content-comments.json"][0]
    assert (comment.title, comment.object_type) == ("Re: AAA", "Note")
    assert comment.url == (
        "https://ctreminiom.atlassian.net/wiki/spaces/DUMMY/pages/76513281/AAA"
        "?focusedCommentId=80412678#comment-80412678"
    )


@pytest.mark.corpus
def test_confluence_corpus_stubs_of_the_expanded_shape() -> None:
    """The OpenAPI stubs have every expanded key (space, history, version)
    with "<string>" for each text: every expression finds its key, and the
    only problems are the dates, which "<string>" is not."""
    for name in ("create-content.json", "get-content-attachments.json"):
        doc = load(corpus(*CONFLUENCE_MOCKS.split("/"), name))
        mapped = mapping("confluence").map(doc, base_url=CONFLUENCE)
        assert len(mapped.events) == mapped.items == 1 and mapped.unmapped == 0, name
        assert {p.split(" (")[0] for p in mapped.problems} == {
            "field 'published'",
            "field 'updated'",
        }, name
        [event] = mapped.events
        assert event.title == "<string> updated <string>", name
        assert (event.summary, event.verb) == ("Version 2154: <string>", "Update"), name


def confluence_content(
    id: str, kind: str, title: str, number: int, by: str, when: str, **extra: Any
) -> dict[str, Any]:
    person = {"type": "known", "displayName": by, "email": f"{by.split()[0].lower()}@acme.example"}
    return {
        "id": id,
        "type": kind,
        "status": "current",
        "title": title,
        "space": {"id": 98306, "key": "LEGAL", "name": "Legal"},
        "history": {
            "latest": True,
            "createdBy": person,
            "createdDate": "2026-10-01T08:00:00.000Z",
        },
        "version": {
            "by": person,
            "when": when,
            "number": number,
            "message": "",
            "minorEdit": False,
        },
        "container": {"id": 98306, "key": "LEGAL", "name": "Legal"},
        "_links": {
            "webui": f"/spaces/LEGAL/pages/{id}/{title.replace(' ', '+')}",
            "self": f"https://acme.atlassian.net/wiki/rest/api/content/{id}",
        },
        **extra,
    }


def test_confluence_documented_search_response() -> None:
    """Built from the documented shape of GET /wiki/rest/api/content/search
    with expand=space,history,version,container (not in the corpus)."""
    edited = confluence_content(
        "65798145", "page", "Engagement checklist", 5, "Sam Lee", "2026-11-03T10:00:00.000Z"
    )
    edited["version"]["message"] = "Clause 4 rewritten"
    comment = confluence_content(
        "80412678", "comment", "Re: Engagement checklist", 1, "Ann Moss",
        "2026-11-03T11:00:00.000Z",
        container={"id": "65798145", "type": "page", "title": "Engagement checklist"},
    )  # fmt: skip
    doc: dict[str, Any] = {
        "results": [
            confluence_content(
                "65798150", "page", "Conflict checks", 1, "Jane Doe", "2026-11-02T09:00:00.000Z"
            ),
            edited,
            confluence_content(
                "65798160", "blogpost", "Office move", 1, "Jane Doe", "2026-11-03T09:00:00.000Z"
            ),
            comment,
        ],
        "start": 0,
        "limit": 25,
        "size": 4,
        "_links": {
            "base": "https://acme.atlassian.net/wiki",
            "context": "/wiki",
            "next": "/rest/api/content/search?next=true&cursor=_f_MjU%3D&limit=25&start=25",
        },
    }
    base = "https://acme.atlassian.net/wiki/rest/api/content/search?cql=x"
    created, updated, post, note = check("confluence", doc, base, 4).events
    assert created.title == "Jane Doe created Conflict checks"
    assert (created.verb, created.summary, created.thread_id) == ("Create", "Version 1", "65798150")
    assert updated.title == "Sam Lee updated Engagement checklist"
    assert (updated.verb, updated.summary) == ("Update", "Version 5: Clause 4 rewritten")
    assert (updated.actor.name, updated.actor.email) == ("Sam Lee", "sam@acme.example")
    assert updated.published == updated.updated == at("2026-11-03T10:00:00+00:00")
    assert updated.url == (
        "https://acme.atlassian.net/wiki/spaces/LEGAL/pages/65798145/Engagement+checklist"
    )
    assert updated.tags == ("LEGAL", "page")
    assert (post.object_type, post.title) == ("Article", "Jane Doe created Office move")
    assert note.title == "Ann Moss commented on Engagement checklist"
    assert (note.object_type, note.thread_id) == ("Note", "65798145")  # the page's thread

    # Server or Data Center under a context path: links stay under it.
    server = "https://intranet.example/confluence/rest/api/content/search?cql=x"
    assert mapping("confluence").map(doc, base_url=server).events[0].url == (
        "https://intranet.example/confluence/spaces/LEGAL/pages/65798150/Conflict+checks"
    )
    # The next page is relative to the site's base, which the response gives.
    next_page = load_preset("jsonapi", "confluence").options["pagination"]["next"]
    assert jmespath.search(next_page, doc) == (
        "https://acme.atlassian.net/wiki/rest/api/content/search?next=true&cursor=_f_MjU%3D"
        "&limit=25&start=25"
    )
    del doc["_links"]["next"]
    assert jmespath.search(next_page, doc) is None


# --- Atlassian organization audit log --------------------------------------------------

ADMIN_MOCKS = "intranet/confluence/go-atlassian/admin/mocks"


@pytest.mark.corpus
def test_atlassian_audit_corpus_events() -> None:
    corpus(*ADMIN_MOCKS.split("/"))
    events: dict[str, list[EventData]] = {}
    for path in files(ADMIN_MOCKS, "*.json"):
        doc = load(path)
        data = doc.get("data") if isinstance(doc, dict) else None
        items = data if isinstance(data, list) else [data]
        if items and all(isinstance(i, dict) and i.get("type") == "events" for i in items):
            events[path.name] = check("atlassian-audit", doc, AUDIT, len(items)).events
    assert set(events) == {
        "get-organization-audit-events.json",
        "get-organization-audit-event.json",
    }
    log = by_id(events["get-organization-audit-events.json"])
    assert len(log) == 38
    added = log["695fc96a-1efb-446f-ab66-44758d8309e3"]
    assert added.title == "Carlos Treminio: Added ctreminiom079@gmail.com to jira-users group"
    assert added.url == (
        "https://ctreminiom.atlassian.net/admin/s/6c4aa501-ace5-401f-aa34-81147b376ed0"
        "/groups/56ec7a8d-1165-4cca-bd29-d9a9773b32db"
    )
    assert added.tags == ("audit", "user_added_to_group")
    assert added.published == at("2021-01-23T05:36:38.440Z")
    # No sentence from Atlassian: the action and what it was about.
    deleted = log["25e4c3e7-7f0d-4b84-8028-330fed144a51"]
    assert deleted.title == "go-atlassian-demo-api: policy_deleted global-realm-policy"
    # "Atlassian Internal System" is its email too: no address.
    system = log["bbeb2440-ec88-47d7-bd6f-2b2b4dd2f532"]
    assert (system.actor.name, system.actor.email) == ("Atlassian Internal System", None)


# --- Jenkins ---------------------------------------------------------------------------

JENKINS_FILES = "intranet/jenkins/jenkins-rest"


def is_builds(doc: Any) -> bool:
    """A job's builds, or one build."""
    if not isinstance(doc, dict):
        return False
    return isinstance(doc.get("builds"), list) or {"number", "url", "timestamp"} <= set(doc)


@pytest.mark.corpus
def test_jenkins_corpus_jobs_and_builds() -> None:
    corpus(*JENKINS_FILES.split("/"))
    events: dict[str, list[EventData]] = {}
    for path in files(JENKINS_FILES, "*.json"):
        doc = load(path)
        if is_builds(doc):
            builds = doc.get("builds", [doc])
            # A job read without the tree parameter lists numbers and URLs only.
            dated = all("timestamp" in b for b in builds)
            events[path.name] = check("jenkins", doc, JENKINS, len(builds), dated=dated).events
    assert {
        "job-info.json",
        "build-info.json",
        "build-info-git-commit.json",
        "build-info-no-params.json",
        "build-info-empty-and-null-params.json",
    } <= set(events)
    assert [e.title for e in events["job-info.json"]] == [f"Build #{n}" for n in range(7, 0, -1)]
    assert events["job-info.json"][0].url == "http://localhost:32769/job/fish/7/"

    [build] = events["build-info.json"]
    assert (build.title, build.external_id) == (
        "fish #10 succeeded",
        "http://localhost:32769/job/fish/10/",
    )
    assert (build.actor.name, build.summary) == ("anonymous", "Started by user anonymous")
    assert build.published == datetime.fromtimestamp((1461091892486 + 60750) / 1000, UTC)  # the end
    assert (build.tags, build.object_type) == (("jenkins", "SUCCESS"), "Build")
    [git] = events["build-info-git-commit.json"]
    assert git.summary == "Started by user anonymous. Commit comment"


@pytest.mark.corpus
def test_jenkins_running_build_then_its_outcome_keep_one_id() -> None:
    build = load(corpus(*JENKINS_FILES.split("/"), "build-info.json"))
    outcomes: list[tuple[dict[str, Any], str]] = [
        ({"building": True, "result": None, "duration": 0}, "fish #10 started"),
        ({"result": "FAILURE"}, "fish #10 failed"),
        ({"result": "UNSTABLE"}, "fish #10 is unstable"),
        ({"result": "ABORTED"}, "fish #10 was aborted"),
        ({"result": "NOT_BUILT"}, "fish #10 was not built"),
        ({"result": None}, "fish #10"),  # finished, outcome unknown
    ]
    doc = {"builds": [{**build, **change} for change, _ in outcomes]}
    mapped = mapping("jenkins").map(doc, base_url=JENKINS)
    assert [e.title for e in mapped.events] == [title for _, title in outcomes]
    assert {e.external_id for e in mapped.events} == {build["url"]} and not mapped.problems
    running, unknown = mapped.events[0], mapped.events[-1]
    assert (running.tags, unknown.tags) == (("jenkins", "BUILDING"), ("jenkins",))
    assert running.published == datetime.fromtimestamp(1461091892486 / 1000, UTC)  # the start
    # A job with no build yet has no items, and that is no error.
    assert mapping("jenkins").map({"name": "new-job", "builds": []}).events == []


# --- MediaWiki -------------------------------------------------------------------------

WIKI_FILES = "intranet/mediawiki/ygojson-yugipedia"


@pytest.mark.corpus
def test_mediawiki_pages_corpus_generator_queries() -> None:
    corpus(*WIKI_FILES.split("/"))
    events: dict[str, list[EventData]] = {}
    for path in files(WIKI_FILES, "*.json"):
        doc = load(path)
        pages = doc.get("query", {}).get("pages", [])
        expected = sum(1 for p in pages if not p.get("missing"))
        events[path.name] = check("mediawiki-pages", doc, WIKI, expected).events
    assert len(events) == 13 and sum(len(e) for e in events.values()) == 102
    # Asked for by title: one missing page, skipped; an empty answer is no items.
    assert events["b36f61f5-0725-3ba7-ba4a-0045ea5e1108.json"] == []
    assert events["cf797f99-25fd-3695-87c4-78e14cf0fe66.json"] == []
    first, second = events["94ffcf19-10e8-3079-987e-c96a9f837ec7.json"]
    # Revisions read without their user (or ids): the page's title, and the page itself.
    assert (first.title, first.external_id) == ("Legend of Blue Eyes White Dragon", "2484")
    assert first.url == "https://yugipedia.com/index.php?curid=2484"
    assert first.published == at("2023-11-07T08:35:13Z")
    assert (second.title, second.thread_id, second.tags) == ("Eternity Code", "663218", ("wiki",))
    recent = events["6e830fd3-2129-3126-86bf-d537dbc0a0f8.json"]
    assert [e.title for e in recent[:2]] == ["Toon monster", "Replay"]


def test_mediawiki_pages_with_the_revisions_the_preset_asks_for() -> None:
    revision = {
        "revid": 88410, "parentid": 88402, "minor": True, "user": "Jane Doe", "userid": 14,
        "timestamp": "2026-11-02T09:30:00Z", "comment": "Clause 4",
    }  # fmt: skip
    doc = {
        "batchcomplete": True,
        "query": {
            "pages": [{"pageid": 1201, "ns": 0, "title": "Templates", "revisions": [revision]}]
        },
    }
    [page] = check("mediawiki-pages", doc, "https://wiki.example/w/api.php", 1).events
    assert (page.title, page.summary, page.verb) == (
        "Jane Doe edited Templates",
        "Clause 4",
        "Update",
    )
    assert page.url == "https://wiki.example/w/index.php?diff=88410"
    assert page.actor.url == "https://wiki.example/w/index.php?title=Special:Redirect/user/14"
    assert page.tags == ("wiki", "minor")


def change(rcid: int, kind: str, title: str, user: str, **extra: Any) -> dict[str, Any]:
    """One recentchanges entry as formatversion=2 writes it with the
    preset's rcprop (title|ids|flags|user|userid|timestamp|comment|loginfo)."""
    return {
        "type": kind, "ns": 0, "title": title, "pageid": 1200 + rcid, "revid": 88400 + rcid,
        "old_revid": 88300 + rcid, "rcid": 120500 + rcid, "user": user, "userid": 10 + rcid,
        "bot": False, "new": kind == "new", "minor": False,
        "timestamp": f"2026-11-02T09:{rcid:02d}:00Z", "comment": "", **extra,
    }  # fmt: skip


def test_mediawiki_documented_recentchanges_response() -> None:
    """Built from the documented shape of action=query&list=recentchanges
    (formatversion=2): the corpus has no such answer."""
    log = {"revid": 0, "old_revid": 0, "pageid": 0}
    doc = {
        "batchcomplete": True,
        "continue": {"rccontinue": "20261102093500|120560", "continue": "-||"},
        "query": {
            "recentchanges": [
                change(1, "edit", "Contract templates", "Jane Doe", minor=True, comment="Clause 4"),
                change(2, "new", "Conflict checks", "Sam Lee", old_revid=0),
                change(3, "edit", "Contract templates", "192.0.2.7", userid=0, anon=True),
                change(4, "categorize", "Category:Templates", "Jane Doe"),
                change(5, "log", "File:Org chart.pdf", "Ann Moss", logid=5512, logtype="upload",
                       logaction="upload", comment="Q4 update"),
                change(6, "log", "Onboarding", "Ann Moss", logid=5513, logtype="move",
                       logaction="move", logparams={"target_title": "Onboarding (2026)"}),
                change(7, "log", "Old draft", "Admin", logid=5514, logtype="delete",
                       logaction="delete", **log),
                change(8, "log", "User:New Hire", "New Hire", logid=5515, logtype="newusers",
                       logaction="create", **log),
                change(9, "log", "Contract templates", "Admin", logid=5516, logtype="patrol",
                       logaction="patrol"),
                change(10, "log", "User:Spammer", "Admin", logid=5517, logtype="block",
                       logaction="block", bot=True, **log),
            ]
        },
    }  # fmt: skip
    base = "https://wiki.example/w/api.php?action=query&list=recentchanges"
    # The categorize entry and the patrol entry are skipped on purpose.
    events = by_id(check("mediawiki", doc, base, 8).events)
    edit = events["120501"]
    assert (edit.title, edit.summary, edit.verb) == (
        "Jane Doe edited Contract templates",
        "Clause 4",
        "Update",
    )
    assert edit.url == "https://wiki.example/w/index.php?diff=88401"
    assert edit.actor.url == "https://wiki.example/w/index.php?title=Special:Redirect/user/11"
    assert (edit.tags, edit.thread_id) == (("wiki", "edit", "minor"), "1201")
    assert edit.published == at("2026-11-02T09:01:00Z")
    assert (events["120502"].title, events["120502"].verb) == (
        "Sam Lee created Conflict checks",
        "Create",
    )
    anonymous = events["120503"]
    assert (anonymous.title, anonymous.actor.url) == ("192.0.2.7 edited Contract templates", None)
    upload = events["120505"]
    assert (upload.title, upload.object_type) == (
        "Ann Moss uploaded File:Org chart.pdf",
        "Document",
    )
    assert upload.url == "https://wiki.example/w/index.php?title=Special:Log&logid=5512"
    assert events["120506"].title == "Ann Moss moved Onboarding to Onboarding (2026)"
    deleted = events["120507"]
    assert (deleted.title, deleted.verb, deleted.thread_id) == (
        "Admin deleted Old draft",
        "Delete",
        "Old draft",
    )
    assert (events["120508"].title, events["120508"].verb) == ("New Hire joined the wiki", "Join")
    assert events["120510"].title == "Admin block User:Spammer"
    assert events["120510"].tags == ("wiki", "log", "bot")
    # The next page's cursor.
    pagination = load_preset("jsonapi", "mediawiki").options["pagination"]
    assert jmespath.search(pagination["next"], doc) == "20261102093500|120560"
