"""The shipped mapping presets end to end, on the real payloads of the shared
corpus (tests/corpus.py; skips with the reason outside CI).

jsonapi presets: a loopback server replays each corpus document page by page,
the way its preset pages (an offset, a cursor, a next-page field), to a source
configured with nothing but `preset` and a loopback `url` (and what the split
needs, said where it is set); the real Poller, with its parser processes,
polls it twice into a real Store. Every corpus item must be stored once, with
a readable title and an absolute link, every page must be asked for, and the
second poll must store nothing.

Webhook presets: one real `tidings serve` with one source per webhook preset
takes every corpus payload of that system as a real signed HTTP POST; a
websocket subscriber must get one meaningful event per delivery, and the same
delivery posted again must store nothing.

What each item maps to exactly is the unit tests' business
(tests/unit/test_presets_*.py); here it is the whole path: fetching, paging,
the parser pool, sanitising, storing, deduplicating and pushing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
import websockets

from aggregator.config import load_config, parse_source
from aggregator.filters import EventFilter
from aggregator.pipeline import PollOutcome
from aggregator.poller import Poller
from aggregator.store import Store
from aggregator.types import Event
from connectors.jsonapi import JsonApiOptions
from connectors.mapping import parse_time, preset_names
from connectors.webhook import WebhookOptions
from tests.corpus import corpus, files
from tests.support import FeedServer, Resource, TidingsProcess, write_config

pytestmark = [pytest.mark.integration, pytest.mark.corpus]

JIRA = "intranet/jira/go-jira"
CONFLUENCE = "intranet/confluence/go-atlassian/confluence/mocks"
ADMIN = "intranet/confluence/go-atlassian/admin/mocks"
JENKINS = "intranet/jenkins/jenkins-rest"
WIKI = "intranet/mediawiki/ygojson-yugipedia"
GITHUB_HOOKS = "intranet/github/octokit-webhooks"
GITLAB_HOOKS = "intranet/gitlab/go-gitlab"

# jsonapi presets no corpus document has the shape of; the unit tests build
# their responses from the APIs' documentation instead.
NO_CORPUS = {
    "mediawiki": "the corpus has no list=recentchanges answer, only generator queries",
    "github": "octokit/fixtures records no /events exchange",
    "gitlab": "go-gitlab has no events-API response (no action_name file)",
}


def read(area: str, name: str) -> Any:
    return json.loads(corpus(*area.split("/"), name).read_bytes())


# --- jsonapi: the replaying server ---------------------------------------------------------


class Pages(dict[str, Resource]):
    """FeedServer.resources that finds a response by the request's path and
    its page parameter alone. The preset's other parameters (some carry the
    poll's time, as {since}) are checked in the requests log instead."""

    def __init__(self) -> None:
        super().__init__()
        self.page_params: dict[str, str] = {}  # path -> the parameter naming a page

    def key(self, target: str) -> str:
        parts = urlsplit(target)
        param = self.page_params.get(parts.path)
        value = parse_qs(parts.query).get(param, [""])[0] if param else ""
        return f"{parts.path}#{value}"

    def get(self, target: str, default: Any = None) -> Any:
        return super().get(self.key(target), default)


@dataclass
class Case:
    """One source: the pages its server answers, in the order the preset
    should ask for them, and the corpus items they hold."""

    path: str  # the source's url, on the loopback server
    pages: list[tuple[str, Any]]  # (the page parameter's value, "" for none; the response)
    ids: list[str]  # the corpus items' ids, read straight from the corpus
    param: str | None = None  # the parameter naming a page, when the preset sends one
    options: dict[str, Any] = field(default_factory=dict)  # besides preset and url


Build = Callable[[Callable[[str], str]], Case]  # from the server's url(path)


def split(items: list[Any], parts: int) -> list[list[Any]]:
    size = -(-len(items) // parts)
    return [items[i : i + size] for i in range(0, len(items), size)]


def jira(url: Callable[[str], str]) -> Case:
    # The corpus holds one searched issue. Jira's envelope is synthesised: a
    # page of one (maxResults = 1, the only option changed), then an empty
    # second page, as Jira answers when an issue left the search between pages.
    doc = read(JIRA, "issues_in_sprint.json")
    [issue] = doc["issues"]
    first = {**doc, "startAt": 0, "maxResults": 1, "total": 2}
    second = {**doc, "startAt": 1, "maxResults": 1, "total": 1, "issues": []}
    return Case(
        "/jira/rest/api/2/search",
        [("0", first), ("1", second)],
        [issue["id"]],
        param="startAt",
        options={"pagination": {"size": 1}},
    )


def jira_cloud(url: Callable[[str], str]) -> Case:
    # The same issue through the enhanced search; the envelope (nextPageToken,
    # isLast) is synthesised, the last page empty as above.
    doc = read(JIRA, "issues_in_sprint.json")
    [issue] = doc["issues"]
    return Case(
        "/jira-cloud/rest/api/2/search/jql",
        [
            ("", {"issues": [issue], "nextPageToken": "page-2", "isLast": False}),
            ("page-2", {"issues": [], "isLast": True}),
        ],
        [issue["id"]],
        param="nextPageToken",
    )


def confluence(url: Callable[[str], str]) -> Case:
    # A CQL search answering the pages of get-contents.json over two pages and
    # the comments of get-content-comments.json on a third. The envelope
    # (_links.base, _links.next, start, limit, size) is synthesised, in the
    # documented shape: next is relative to base, which is the loopback site.
    contents = read(CONFLUENCE, "get-contents.json")["results"]
    comments = read(CONFLUENCE, "get-content-comments.json")["results"]
    site = "/confluence/wiki"
    chunks = [*split(contents, 2), comments]
    pages: list[tuple[str, Any]] = []
    start = 0
    for n, chunk in enumerate(chunks):
        links = {"base": url(site), "context": site}
        if n + 1 < len(chunks):
            after = start + len(chunk)
            links["next"] = f"/rest/api/content/search?next=true&cursor=c{n + 2}&start={after}"
        doc = {"results": chunk, "start": start, "limit": 2, "size": len(chunk), "_links": links}
        pages.append((f"c{n + 1}" if n else "", doc))
        start += len(chunk)
    return Case(
        f"{site}/rest/api/content/search",
        pages,
        [c["id"] for c in contents + comments],
        param="cursor",
    )


def confluence_one(url: Callable[[str], str]) -> Case:
    # One content's own URL: get-content.json whole, a single page.
    doc = read(CONFLUENCE, "get-content.json")
    return Case(f"/confluence/wiki/rest/api/content/{doc['id']}", [("", doc)], [doc["id"]])


def atlassian_audit(url: Callable[[str], str]) -> Case:
    # The 38 events of get-organization-audit-events.json over the preset's
    # two pages; meta.next (the cursor) is synthesised, links kept as they are.
    doc = read(ADMIN, "get-organization-audit-events.json")
    first, second = split(doc["data"], 2)
    return Case(
        "/atlassian/admin/v1/orgs/9a1jj823-jac8-123d-jj01-63315k059cb2/events",
        [
            ("", {**doc, "data": first, "meta": {**doc["meta"], "next": "cursor-2"}}),
            ("cursor-2", {**doc, "data": second}),
        ],
        [e["id"] for e in doc["data"]],
        param="cursor",
    )


def jenkins_job(url: Callable[[str], str]) -> Case:
    # The preset reads one page (the last 20 builds): job-info.json whole.
    doc = read(JENKINS, "job-info.json")
    return Case("/jenkins/job/fish/api/json", [("", doc)], [b["url"] for b in doc["builds"]])


def jenkins_build(name: str) -> Build:
    def build(url: Callable[[str], str]) -> Case:
        # One build's own URL (the setup's second form), the file whole.
        doc = read(JENKINS, name)
        path = f"/jenkins-{name.removesuffix('.json')}/job/fish/{doc['number']}/api/json"
        return Case(path, [("", doc)], [doc["url"]])

    return build


def wiki_pages(doc: Any) -> list[str]:
    return [str(p["pageid"]) for p in doc.get("query", {}).get("pages", []) if "pageid" in p]


def wiki_chain(names: list[str], key: str, options: dict[str, Any] | None = None) -> Build:
    """Generator answers as MediaWiki chained them: each page is asked for by
    the continue value of the one before, verbatim. The last page's continue
    (pointing out of the corpus) is dropped: that envelope is synthesised."""

    def build(url: Callable[[str], str]) -> Case:
        docs = [read(WIKI, n) for n in names]
        pages: list[tuple[str, Any]] = []
        cursor = ""
        for n, doc in enumerate(docs):
            if n + 1 == len(docs):
                doc = {k: v for k, v in doc.items() if k != "continue"}
            pages.append((cursor, doc))
            cursor = doc.get("continue", {}).get(key, "")
        ids = [i for doc in docs for i in wiki_pages(doc)]
        path = f"/wiki-{key}/api.php"
        return Case(path, pages, ids, param=key, options=options or {})

    return build


def wiki_single(name: str) -> Build:
    def build(url: Callable[[str], str]) -> Case:
        # A titles query: one answer, no continue; a missing title is skipped.
        doc = read(WIKI, name)
        return Case(f"/wiki-{name[:8]}/api.php", [("", doc)], wiki_pages(doc))

    return build


# The MediaWiki generator answers, in the order MediaWiki chained them. For
# recentchanges the corpus's README.md lists the requests: 6d16 -> 6e83 ->
# b5af; the page after b5af is not in the corpus, so 67a6 (another
# recentchanges answer, no page in common) stands in for it.
RECENT_CHANGES = [
    "6d161257-b964-325a-97f3-caa0a7595c1d.json",
    "6e830fd3-2129-3126-86bf-d537dbc0a0f8.json",
    "b5afe4f0-e943-3f2a-8ff0-20bb4cebf1ca.json",
    "67a629a6-9382-3b72-911c-cff00dfa55b5.json",
]
CATEGORY_MEMBERS = [
    "ea149b60-110a-38a5-9d35-ba1f79789c49.json",
    "801da9c6-a54d-3dde-8c40-644784dc1a8f.json",
    "63386b25-b81d-36b1-bddc-6f77b87ec389.json",
]
EMBEDDED_IN = [
    "e9fd828a-1e30-3724-88f1-90dc8aba7ce8.json",
    "82812e9b-a761-39e1-89ea-22d88a418ceb.json",
    "47fde061-8304-3579-928b-001d0f1de723.json",
]
BUILDS = [
    "build-info.json",
    "build-info-git-commit.json",
    "build-info-no-params.json",
    "build-info-empty-and-null-params.json",
]
TITLES = {
    "wiki-titles": "94ffcf19-10e8-3079-987e-c96a9f837ec7.json",
    "wiki-missing": "b36f61f5-0725-3ba7-ba4a-0045ea5e1108.json",
    "wiki-empty": "cf797f99-25fd-3695-87c4-78e14cf0fe66.json",
}
# Other generators, as the preset's setup says: params.generator, and
# pagination.param and pagination.next set to the generator's continue key.
CATEGORIES = {
    "params": {"generator": "categorymembers"},
    "pagination": {"param": "gcmcontinue", "next": "continue.gcmcontinue"},
}
EMBEDDING = {
    "params": {"generator": "embeddedin"},
    "pagination": {"param": "geicontinue", "next": "continue.geicontinue"},
}

# source id -> (preset, how to build its case)
CASES: dict[str, tuple[str, Build]] = {
    "jira": ("jira", jira),
    "jira-cloud": ("jira-cloud", jira_cloud),
    "confluence-search": ("confluence", confluence),
    "confluence-content": ("confluence", confluence_one),
    "atlassian-audit": ("atlassian-audit", atlassian_audit),
    "jenkins-job": ("jenkins", jenkins_job),
    **{f"jenkins-{n.removesuffix('.json')}": ("jenkins", jenkins_build(n)) for n in BUILDS},
    "wiki-recentchanges": ("mediawiki-pages", wiki_chain(RECENT_CHANGES, "grccontinue")),
    "wiki-categorymembers": (
        "mediawiki-pages",
        wiki_chain(CATEGORY_MEMBERS, "gcmcontinue", CATEGORIES),
    ),
    "wiki-embeddedin": ("mediawiki-pages", wiki_chain(EMBEDDED_IN, "geicontinue", EMBEDDING)),
    **{sid: ("mediawiki-pages", wiki_single(name)) for sid, name in TITLES.items()},
}


def toml_source(sid: str, preset: str, case: Case, url: str) -> str:
    """One [[sources]] table; the case's options one table deep at most."""
    table = {"id": sid, "kind": "jsonapi", "preset": preset, "url": url, "interval": "1h"}
    lines = ["", "[[sources]]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    for name, value in case.options.items():
        lines.append(f"[sources.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Replay:
    server: FeedServer
    pages: Pages
    cases: dict[str, Case]
    store: Store
    polls: list[dict[str, PollOutcome]]
    requests: list[list[str]]  # the paths asked for, per poll

    def asked(self, sid: str, poll: int) -> list[str]:
        route = self.cases[sid].path
        return [p for p in self.requests[poll] if urlsplit(p).path == route]

    def events(self, sid: str) -> list[Event]:
        return self.store.latest_events(EventFilter.parse(f"source:{sid}"), viewer=None, limit=500)


async def poll_twice(
    config_path: Path, server: FeedServer
) -> tuple[Store, list[dict[str, PollOutcome]], list[list[str]]]:
    """Two polls of every source by the real Poller; each poll's outcomes and
    the paths it asked for."""
    config = load_config(config_path)
    store = Store(config.store_url)
    store.sync_sources(config.sources, datetime.now(UTC), config_file=config.source_file)
    poller = Poller(config, store)  # a real parser process pool: everything is pickled
    outcomes: list[dict[str, PollOutcome]] = []
    requests: list[list[str]] = []
    try:
        for _ in range(2):
            seen = len(server.requests)
            found = await poller.poll_now()
            outcomes.append({o.source_id: o for o in found})
            requests.append([p for p, _ in server.requests[seen:]])
    finally:
        await poller.aclose()
    return store, outcomes, requests


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replay]:
    corpus("intranet")  # outside CI without the corpus: skip, saying why
    with FeedServer() as server:
        pages = Pages()
        server.resources = pages
        cases = {sid: build(server.url) for sid, (_, build) in CASES.items()}
        for case in cases.values():
            if case.param:
                pages.page_params[case.path] = case.param
            for value, doc in case.pages:
                pages[f"{case.path}#{value}"] = Resource(
                    body=json.dumps(doc).encode(), content_type="application/json"
                )
        sources = "".join(
            toml_source(sid, CASES[sid][0], case, server.url(case.path))
            for sid, case in cases.items()
        )
        config = write_config(tmp_path_factory.mktemp("presets"), sources)
        store, polls, requests = asyncio.run(poll_twice(config, server))
        try:
            yield Replay(server, pages, cases, store, polls, requests)
        finally:
            store.close()


def title_faults(title: str, raw: str) -> list[str]:
    """What makes a title unreadable; `raw` is the document it came from, as
    JSON (where "None" may be a real word)."""
    found = []
    if not title.strip():
        found.append("empty")
    if "None" in title and "None" not in raw:
        found.append("None")
    if "{" in title or "}" in title:
        found.append("a brace")
    return found


def absolute(url: str | None) -> bool:
    parts = urlsplit(url or "")
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def test_every_jsonapi_preset_is_replayed_or_has_no_corpus_shape() -> None:
    covered = {preset for preset, _ in CASES.values()}
    assert set(preset_names("jsonapi")) == covered | set(NO_CORPUS), (
        "a jsonapi preset without an end-to-end case: add one to CASES, or say in "
        "NO_CORPUS why the corpus has nothing of its shape"
    )
    assert not covered & set(NO_CORPUS)


@pytest.mark.parametrize("sid", sorted(CASES))
def test_jsonapi_preset_replays_the_corpus(replay: Replay, sid: str) -> None:
    case = replay.cases[sid]
    first, second = replay.asked(sid, 0), replay.asked(sid, 1)
    log = f"\nasked on the first poll: {first}\non the second: {second}"
    outcome = replay.polls[0][sid]
    assert outcome.error is None, outcome.error + log
    status = {s.id: s for s in replay.store.source_statuses(viewer=None)}[sid]
    assert status.last_warning is None, status.last_warning + log

    # Every page, in order, and the preset's parameters with the first.
    served = [f"{case.path}#{value}" for value, _ in case.pages]
    asked = [replay.pages.key(p) for p in first]
    assert asked == served, f"pages asked for {asked}, served {served}" + log
    table = {"id": sid, "kind": "jsonapi", "preset": CASES[sid][0], **case.options}
    opts = parse_source({**table, "url": replay.server.url(case.path)}, "source", "file").options
    assert isinstance(opts, JsonApiOptions)
    sent = parse_qs(urlsplit(first[0]).query)
    assert set(opts.params) <= set(sent), log
    if opts.pagination.size_param:
        assert sent[opts.pagination.size_param] == [str(opts.pagination.size)], log

    # Each corpus item stored once, readable and linked.
    events = replay.events(sid)
    stored = sorted(e.external_id for e in events)
    assert stored == sorted(case.ids), log
    assert sorted(outcome.new_event_ids) == sorted(e.id for e in events)
    raw = json.dumps([doc for _, doc in case.pages])
    faults = [f"{e.external_id}: title {e.title!r}" for e in events if title_faults(e.title, raw)]
    faults += [f"{e.external_id}: url {e.url!r}" for e in events if not absolute(e.url)]
    assert not faults, "\n".join(faults)

    # The second poll reads it all again, and stores nothing.
    again = replay.polls[1][sid]
    assert again.error is None and again.new_event_ids == [], (again, log)
    assert sorted(e.external_id for e in replay.events(sid)) == stored
    assert [replay.pages.key(p) for p in second] == [replay.pages.key(p) for p in first], log
    # An incremental preset asks from where the first poll ended.
    state, _ = replay.store.source_state(sid)
    since = (state or {}).get("since")
    if since is not None and opts.incremental.since_format:
        when = parse_time(since)
        assert when is not None
        expected = when.strftime(opts.incremental.since_format)
        values = [v for vs in parse_qs(urlsplit(second[0]).query).values() for v in vs]
        assert any(expected in v for v in values), (expected, log)


# --- webhooks: real signed POSTs to a running app ---------------------------------------------

SECRET = "a webhook secret for the preset tests"
SECRET_ENV = "TIDINGS_E2E_PRESET_SECRET"
# Events whose news is a result, often reported by a bot: the preset names
# the check, workflow or pipeline in the title, not the sender (the unit tests
# check that); the sender is still the actor.
GITHUB_CI = {"check_run", "check_suite", "workflow_job", "workflow_run", "status",
             "deployment_status"}  # fmt: skip
GITLAB_CI = {"pipeline", "build", "deployment", "release", "access_token"}
# X-Gitlab-Event as GitLab sends it, by the payload's kind; system hooks send "System Hook".
GITLAB_EVENTS = {
    "push": "Push Hook", "tag_push": "Tag Push Hook", "issue": "Issue Hook",
    "work_item": "Issue Hook", "note": "Note Hook", "merge_request": "Merge Request Hook",
    "wiki_page": "Wiki Page Hook", "pipeline": "Pipeline Hook", "build": "Job Hook",
    "deployment": "Deployment Hook", "feature_flag": "Feature Flag Hook",
    "release": "Release Hook", "emoji": "Emoji Hook", "milestone": "Milestone Hook",
    "access_token": "Resource Access Token Hook",
}  # fmt: skip


def gitlab_kind(doc: dict[str, Any]) -> str:
    return str(doc.get("object_kind") or doc["event_name"])


def github_event(path: Path, doc: dict[str, Any]) -> str:
    return path.parent.name  # octokit/webhooks files each event under its X-GitHub-Event


def gitlab_event(path: Path, doc: dict[str, Any]) -> str:
    if path.parent.name == "systemhooks":
        return "System Hook"
    kind = gitlab_kind(doc)
    if kind.startswith("user_") and kind.endswith("_group"):
        return "Member Hook"
    if kind.startswith("subgroup_"):
        return "Subgroup Hook"
    return GITLAB_EVENTS[kind]


@dataclass(frozen=True)
class System:
    """A webhook preset's corpus: its payloads and how each is sent."""

    payloads: Callable[[], list[Path]]
    event: Callable[[Path, dict[str, Any]], str]  # the event header's value
    kind: Callable[[Path, dict[str, Any]], str]  # the event type the tags must hold
    ci: set[str]


SYSTEMS = {
    "github": System(
        lambda: files(GITHUB_HOOKS, "*/*.json"), github_event, github_event, GITHUB_CI
    ),
    # Project and group webhooks, and system hooks; the rest of go-gitlab is API responses.
    "gitlab": System(
        lambda: files(GITLAB_HOOKS, "webhooks/*.json") + files(GITLAB_HOOKS, "systemhooks/*.json"),
        gitlab_event,
        lambda path, doc: gitlab_kind(doc),
        GITLAB_CI,
    ),
}
DELIVERIES = [
    pytest.param(name, path, id=f"{name}/{path.parent.name}/{path.name}")
    for name in preset_names("webhook")
    if name in SYSTEMS
    for path in SYSTEMS[name].payloads()
]


def hook_table(name: str) -> dict[str, Any]:
    return {"id": f"hook-{name}", "kind": "webhook", "preset": name, "secret": f"env:{SECRET_ENV}"}


def hook_options(name: str) -> WebhookOptions:
    options = parse_source(hook_table(name), "source", "file").options
    assert isinstance(options, WebhookOptions)
    return options


def signed(options: WebhookOptions, body: bytes) -> dict[str, str]:
    """The header proving the sender, by the preset's signature scheme."""
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    value = {"github": f"sha256={digest}", "hmac": digest, "bearer": f"Bearer {SECRET}"}.get(
        options.signature, SECRET
    )
    name = options.signature_header_name
    assert name is not None, "a preset that checks no signature"
    return {name: value}


@dataclass
class Hooks:
    app: TidingsProcess
    token: str
    store: Store

    def ws(self) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        return websockets.connect(self.app.ws_url, additional_headers=headers)

    def events(self, sid: str) -> list[Event]:
        return self.store.latest_events(EventFilter.parse(f"source:{sid}"), viewer=None, limit=500)


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hooks]:
    corpus("intranet")
    tables = []
    for name in preset_names("webhook"):
        table = hook_table(name)
        tables.append(
            "\n[[sources]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
        )
    config = write_config(tmp_path_factory.mktemp("preset-hooks"), "".join(tables))
    store = Store(load_config(config).store_url)
    now = datetime.now(UTC)
    store.people.create_user("root", password_hash=None, admin=True, actor="test", now=now)
    token = store.people.create_token("root", "ws", actor="test", now=now)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(SECRET_ENV, SECRET)  # the child process inherits it
        with TidingsProcess(config) as app:
            try:
                yield Hooks(app, token, store)
            finally:
                store.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=20) as c:
        yield c


async def next_event(ws: Any, wait: float = 10.0) -> dict[str, Any]:
    """The next event message's event (heartbeats skipped)."""
    async with asyncio.timeout(wait):
        while True:
            msg = json.loads(await ws.recv())
            if msg["type"] == "event":
                event: dict[str, Any] = msg["event"]
                return event


def links(value: Any, keys: frozenset[str]) -> bool:
    """Whether some key of `keys`, anywhere in `value`, holds an http(s) URL."""
    if isinstance(value, dict):
        return any(
            (k in keys and isinstance(v, str) and absolute(v)) or links(v, keys)
            for k, v in value.items()
        )
    return isinstance(value, list) and any(links(v, keys) for v in value)


def person(name: str, doc: dict[str, Any]) -> str | None:
    """Who the payload says did it, when it says so."""
    if name == "github":
        return str(doc["sender"]["login"]) if doc.get("sender") else None
    user = doc.get("user")
    found = user.get("name") if isinstance(user, dict) else doc.get("user_name")
    return str(found) if found else None


def test_every_webhook_preset_has_corpus_payloads() -> None:
    corpus("intranet")
    names = preset_names("webhook")
    assert names and set(names) <= set(SYSTEMS), "a webhook preset without corpus payloads here"
    assert all(SYSTEMS[n].payloads() for n in names)


@pytest.mark.parametrize(("name", "path"), DELIVERIES)
async def test_webhook_preset_takes_a_corpus_delivery(
    hooks: Hooks, client: httpx2.AsyncClient, name: str, path: Path
) -> None:
    options = hook_options(name)
    # The bytes as the sender wrote them: the signature covers them.
    body = await asyncio.to_thread(path.read_bytes)
    doc = json.loads(body)
    kind = SYSTEMS[name].kind(path, doc)
    event_type = SYSTEMS[name].event(path, doc)
    delivery = str(uuid.uuid4())
    # The event's identity: the delivery's, unless the preset maps one of its
    # own (GitHub's commit and deployment statuses keep their GitHub id).
    [mapped] = options.mapping.map(doc, event=event_type).events
    identity = mapped.external_id or delivery
    headers = {"Content-Type": "application/json", **signed(options, body)}
    if options.event_header:
        headers[options.event_header] = event_type
    if options.delivery_header:
        headers[options.delivery_header] = delivery
    sid = f"hook-{name}"
    url = f"{hooks.app.base}/hooks/{sid}"
    before = len(hooks.events(sid))

    async with hooks.ws() as ws:
        subscribe = {"type": "subscribe", "stream": "s", "query": f"source:{sid}", "cursor": None}
        await ws.send(json.dumps(subscribe))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
        arrival = asyncio.create_task(next_event(ws))
        try:
            res = await client.post(url, content=body, headers=headers)
            assert res.status_code == 200, res.text
            assert res.json()["status"] == "stored", res.text
            event = await arrival
        finally:
            arrival.cancel()
    [stored] = res.json()["events"]
    assert event["id"] == stored and event["source_id"] == sid
    assert event["external_id"] == identity

    title = event["title"]
    assert not title_faults(title, body.decode()), title
    who = person(name, doc)
    if who:
        assert event["actor"]["name"] == who, (event["actor"], title)
        if kind not in SYSTEMS[name].ci:
            assert who in title, title
    elif name == "gitlab" and any(doc.get(k) for k in ("user_username", "username", "owner_name")):
        assert event["actor"]["name"], title
    link_keys = frozenset({"html_url"} if name == "github" else {"url", "web_url", "homepage"})
    if links(doc, link_keys):
        assert absolute(event["url"]), (event["url"], title)
    assert kind in event["tags"], (event["tags"], title)

    # The same delivery again: acknowledged, and nothing stored.
    again = await client.post(url, content=body, headers=headers)
    assert again.status_code == 200 and again.json() == {"status": "duplicate"}, again.text
    mine = [e for e in hooks.events(sid) if e.external_id == identity]
    assert len(mine) == 1 and len(hooks.events(sid)) == before + 1
