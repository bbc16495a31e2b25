"""The GitHub and GitLab presets (connectors/presets/{webhook,jsonapi}/{github,gitlab}.toml)
against the shared corpus: every GitHub webhook payload of octokit/webhooks and every
GitLab webhook and system hook payload of go-gitlab maps to one event with a
meaningful title, an actor, a link and tags naming the event type.

The corpus holds no events-API responses for either forge (octokit/fixtures records
no /events exchange, go-gitlab has no "action_name" file), so the events-API presets
are tested on responses built here from corpus webhook payloads, in the shape the
forges document for their events APIs.

The mapping is built through MappedOptions directly, not through the webhook and
jsonapi option classes: a small subclass per kind that ignores the options the
preset sets for the connector (signature, pagination...), so these tests check the
mapping data alone.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ConfigDict

from aggregator.types import EventData
from connectors.mapping import MappedOptions, load_preset
from tests.corpus import corpus, files

GITHUB_HOOKS = "intranet/github/octokit-webhooks"
GITLAB_HOOKS = "intranet/gitlab/go-gitlab"

# Verbs the presets use (Activity Streams 2.0 activity types).
VERBS = {"Create", "Update", "Delete", "Announce", "Accept", "Reject", "Add", "Remove",
         "Like", "Undo", "Move", "Invite", "Join", "Leave"}  # fmt: skip
# GitHub events whose news is a result (a check, a build, a deployment), often
# reported by a bot: their titles name the check or workflow, not the sender.
GITHUB_CI = {"check_run", "check_suite", "workflow_job", "workflow_run", "status",
             "deployment_status"}  # fmt: skip
GITLAB_CI = {"pipeline", "build", "deployment", "release", "access_token"}
# GitHub webhook event type -> events-API type.
API_TYPES = {
    "push": "PushEvent", "pull_request": "PullRequestEvent", "issues": "IssuesEvent",
    "issue_comment": "IssueCommentEvent", "create": "CreateEvent", "delete": "DeleteEvent",
    "fork": "ForkEvent", "watch": "WatchEvent", "release": "ReleaseEvent",
    "pull_request_review": "PullRequestReviewEvent", "gollum": "GollumEvent",
    "member": "MemberEvent", "commit_comment": "CommitCommentEvent",
}  # fmt: skip


class _WebhookOpts(MappedOptions):
    preset_kind = "webhook"
    model_config = ConfigDict(extra="ignore", frozen=True)


class _JsonApiOpts(MappedOptions):
    preset_kind = "jsonapi"
    model_config = ConfigDict(extra="ignore", frozen=True)


def webhook(name: str) -> _WebhookOpts:
    return _WebhookOpts(preset=name)


def jsonapi(name: str) -> _JsonApiOpts:
    return _JsonApiOpts(preset=name)


def one(
    opts: MappedOptions, doc: Any, *, event: str | None = None, base: str | None = None
) -> EventData:
    mapped = opts.mapping.map(doc, event=event, base_url=base)
    assert mapped.problems == [], mapped.problems
    assert len(mapped.events) == 1, mapped.events
    return mapped.events[0]


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def title_problems(title: str) -> list[str]:
    """What is wrong with a title: a leftover placeholder, a missing value."""
    found = []
    if not title.strip():
        found.append("empty")
    for bad in ("None", "null", "{", "}", "  ", " :", "#:", "!:", " in :"):
        if bad in title:
            found.append(f"contains {bad!r}")
    if title != title.strip() or title.endswith((":", " in", " to", " on")):
        found.append("ends in a dangling word")
    return found


# --- the presets themselves ----------------------------------------------------------

WEBHOOK_OPTIONS = {"signature", "event_header", "delivery_header", "items"}
JSONAPI_OPTIONS = {"items", "method", "headers", "params", "pagination", "incremental"}
PAGINATION_KEYS = {"type", "next", "param", "size_param", "size", "start", "total", "max_pages"}


@pytest.mark.parametrize(
    ("kind", "name"),
    [("webhook", "github"), ("webhook", "gitlab"), ("jsonapi", "github"), ("jsonapi", "gitlab")],
)
def test_preset_compiles_and_sets_only_known_options(kind: str, name: str) -> None:
    preset = load_preset(kind, name)
    assert preset.title and preset.description and preset.setup
    assert preset.rules, "a preset for a forge has rules per event type"
    allowed = WEBHOOK_OPTIONS if kind == "webhook" else JSONAPI_OPTIONS
    assert set(preset.options) <= allowed, set(preset.options) - allowed
    opts = webhook(name) if kind == "webhook" else jsonapi(name)  # compiles every expression
    assert len(opts.mapping.rules) == len(preset.rules)
    if kind == "jsonapi":
        pagination = preset.options["pagination"]
        assert set(pagination) <= PAGINATION_KEYS
        assert pagination["type"] == "link" and pagination["max_pages"] == 3
        assert preset.fields["id"] == "id"
        assert opts.mapping.items_source == "[*]"


def test_webhook_presets_name_their_headers_and_signatures() -> None:
    github = load_preset("webhook", "github").options
    assert github == {
        "signature": "github", "event_header": "X-GitHub-Event",
        "delivery_header": "X-GitHub-Delivery", "items": "@",
    }  # fmt: skip
    gitlab = load_preset("webhook", "gitlab").options
    assert gitlab["signature"] == "gitlab"
    assert gitlab["event_header"] == "X-Gitlab-Event"
    assert gitlab["delivery_header"] == "X-Gitlab-Event-UUID"
    assert "application/json" in load_preset("webhook", "github").setup


def test_a_source_field_overrides_the_preset() -> None:
    opts = _WebhookOpts(preset="github", fields={"title": {"template": "{sender.login} did it"}})
    doc = {"action": "opened", "number": 1, "pull_request": {"title": "T"},
           "sender": {"login": "alice"}, "repository": {"full_name": "o/r"}}  # fmt: skip
    event = one(opts, doc, event="pull_request")
    assert event.title == "alice did it"
    assert event.tags == ("pull_request", "o/r")  # the preset's other fields still apply


# --- GitHub webhooks: the corpus ---------------------------------------------------------


def check_github(path: Path, event: EventData, doc: dict[str, Any], kind: str) -> list[str]:
    wrong = title_problems(event.title)
    login = doc["sender"]["login"]
    if event.actor.name != login:
        wrong.append(f"actor {event.actor.name!r}, not {login!r}")
    if event.actor.url != doc["sender"]["html_url"]:
        wrong.append(f"actor url {event.actor.url!r}")
    if kind in GITHUB_CI:
        named = {
            "check_run": lambda: doc["check_run"]["name"],
            "workflow_job": lambda: doc["workflow_job"]["name"],
            "workflow_run": lambda: doc["workflow_run"]["name"] or doc["workflow"]["name"],
            "status": lambda: doc["context"],
            "deployment_status": lambda: doc["deployment"]["environment"],
        }[kind]()
        if named not in event.title:
            wrong.append(f"title does not name {named!r}")
    elif login not in event.title:
        wrong.append("title does not name the sender")
    if not (event.url or "").startswith(("https://", "http://")):
        wrong.append(f"url {event.url!r}")
    tags = set(event.tags)
    expected = {kind, doc["repository"]["full_name"]}
    for holder in ("issue", "pull_request", "discussion"):
        expected |= {label["name"] for label in (doc.get(holder) or {}).get("labels") or []}
    if not expected <= tags:
        wrong.append(f"tags {event.tags} lack {expected - tags}")
    if event.verb not in VERBS:
        wrong.append(f"verb {event.verb!r}")
    if event.object_type == "Note":  # the default: no rule of this event type matched
        wrong.append("object_type not set by a rule")
    return [f"{path.parent.name}/{path.name}: {w} ({event.title!r})" for w in wrong]


@pytest.mark.corpus
def test_every_github_webhook_payload_maps_to_a_meaningful_event() -> None:
    corpus(GITHUB_HOOKS)
    paths = files(GITHUB_HOOKS, "*/*.json")
    assert len(paths) >= 19, paths
    opts = webhook("github")
    wrong: list[str] = []
    for path in paths:
        kind = path.parent.name  # the directory is the X-GitHub-Event value
        doc = load(path)
        mapped = opts.mapping.map(doc, event=kind)
        if mapped.problems or len(mapped.events) != 1:
            wrong.append(f"{path}: {len(mapped.events)} events, problems {mapped.problems}")
            continue
        wrong += check_github(path, mapped.events[0], doc, kind)
    assert not wrong, "\n".join(wrong)
    assert {p.parent.name for p in paths} >= {"push", "pull_request", "issues", "issue_comment"}


GITHUB_TITLES = {
    "pull_request/assigned.payload.json":
        "Codertocat assigned Codertocat to pull request #2: "
        "Update the README with new information.",
    "issues/assigned.payload.json":
        "Codertocat assigned Codertocat to issue #1: Spelling error in the README file",
    "issue_comment/created.payload.json":
        "Codertocat commented on issue #1: Spelling error in the README file",
    "pull_request_review/dismissed.payload.json":
        "Codertocat dismissed Codertocat's review of pull request #2: "
        "Update the README with new information.",
    "push/1.payload.json": "Codertocat deleted refs/tags/simple-tag in Codertocat/Hello-World",
    "create/payload.json": "Codertocat created tag simple-tag in Codertocat/Hello-World",
    "delete/payload.json": "Codertocat deleted tag simple-tag in Codertocat/Hello-World",
    "fork/payload.json": "Octocoders forked Codertocat/Hello-World to Octocoders/Hello-World",
    "watch/started.payload.json": "Codertocat starred Codertocat/Hello-World",
    "gollum/payload.json": "rachmari edited wiki page Home in Codertocat/Hello-World",
    "member/added.payload.json": "hacktocat added hacktocat to Codertocat/Hello-World",
    "release/created.payload.json": "Codertocat created release 0.0.1 in Codertocat/Hello-World",
    "commit_comment/created.payload.json":
        "Codertocat commented on a commit in Codertocat/Hello-World",
    "discussion/answered.payload.json": "Codertocat marked an answer to discussion #4: TEST edit",
    "check_run/completed.payload.json":
        "Check Octocoders-linter succeeded on changes in Codertocat/Hello-World",
    "workflow_job/in_progress.payload.json":
        "CodeQL job Analyze (javascript) started on main in Codertocat/Hello-World",
    "workflow_run/completed.payload.json":
        "Workflow test #163 succeeded on master in octo-org/octo-repo",
    "status/payload.json": "Status default succeeded in Codertocat/Hello-World",
    "deployment_status/gh-pages.payload.json":
        "Deployment of master to github-pages is in progress in Codertocat/Hello-World",
}  # fmt: skip


@pytest.mark.corpus
@pytest.mark.parametrize(("name", "title"), sorted(GITHUB_TITLES.items()))
def test_github_webhook_exact_titles(name: str, title: str) -> None:
    path = corpus(GITHUB_HOOKS, *name.split("/"))
    assert one(webhook("github"), load(path), event=path.parent.name).title == title


def github_payload(name: str) -> dict[str, Any]:
    return copy.deepcopy(load(corpus(GITHUB_HOOKS, *name.split("/"))))


@pytest.mark.corpus
def test_github_pull_request_actions() -> None:
    """The corpus has one pull_request action; the others are its payload with
    another action, as GitHub sends them."""
    opts = webhook("github")
    base = github_payload("pull_request/assigned.payload.json")
    pr = "pull request #2: Update the README with new information."

    def title(action: str, **changes: Any) -> EventData:
        doc = copy.deepcopy(base)
        doc["action"] = action
        for key, value in changes.items():
            if key == "merged":
                doc["pull_request"]["merged"] = value
                doc["pull_request"]["merged_at"] = "2019-05-15T15:30:00Z" if value else None
            else:
                doc[key] = value
        return one(opts, doc, event="pull_request")

    opened = title("opened")
    assert opened.title == f"Codertocat opened {pr}"
    assert (opened.verb, opened.object_type) == ("Create", "PullRequest")
    assert opened.summary == base["pull_request"]["body"]
    assert opened.thread_id == "Codertocat/Hello-World#2"
    merged = title("closed", merged=True)
    assert merged.title == f"Codertocat merged {pr}"
    assert merged.verb == "Accept"
    assert merged.published is not None and merged.published.minute == 30  # merged_at
    assert title("closed", merged=False).title == f"Codertocat closed {pr}"
    assert title("reopened").title == f"Codertocat reopened {pr}"
    assert title("synchronize").title == f"Codertocat pushed to {pr}"
    assert (
        title("review_requested", requested_reviewer={"login": "octocat"}).title
        == f"Codertocat requested a review from octocat on {pr}"
    )
    assert title("labeled", label={"name": "bug"}).title == f"Codertocat added label bug to {pr}"
    assert title("ready_for_review").title == (
        "Codertocat marked pull request #2 ready for review: "
        "Update the README with new information."
    )
    # An action GitHub adds later still reads as a sentence.
    assert title("edited").title == f"Codertocat edited {pr}"


@pytest.mark.corpus
def test_github_pushes_name_the_branch_and_count_commits() -> None:
    opts = webhook("github")
    doc = github_payload("push/1.payload.json")
    commit = {"id": "a" * 40, "message": "Fix login", "timestamp": "2019-05-15T15:20:30Z",
              "url": "https://github.com/Codertocat/Hello-World/commit/" + "a" * 40}  # fmt: skip
    doc.update(
        ref="refs/heads/master", after="a" * 40, deleted=False, created=False,
        commits=[commit, commit, commit], head_commit=commit,
    )  # fmt: skip
    event = one(opts, doc, event="push")
    assert event.title == "Codertocat pushed 3 commits to master in Codertocat/Hello-World"
    assert event.url == doc["compare"]
    assert event.actor.email == doc["pusher"]["email"]
    assert event.published is not None and event.published.timestamp() == 1557933657  # pushed_at
    assert event.summary == "Fix login\nFix login\nFix login"
    assert (event.verb, event.object_type, event.tags) == (
        "Update", "Commit", ("push", "Codertocat/Hello-World"),
    )  # fmt: skip

    doc.update(commits=[commit])
    assert one(opts, doc, event="push").title == (
        "Codertocat pushed 1 commit to master in Codertocat/Hello-World"
    )
    # Any branch is named short (strip_prefix).
    doc.update(ref="refs/heads/fix-login")
    assert one(opts, doc, event="push").title == (
        "Codertocat pushed 1 commit to fix-login in Codertocat/Hello-World"
    )
    doc.update(forced=True)
    assert one(opts, doc, event="push").title == (
        "Codertocat force-pushed fix-login in Codertocat/Hello-World"
    )


@pytest.mark.corpus
def test_github_ping_is_skipped_and_unknown_events_still_read() -> None:
    opts = webhook("github")
    hello = github_payload("watch/started.payload.json")
    ping = {"zen": "Keep it logically awesome.", "hook_id": 1, "hook": {"type": "Repository"},
            "repository": hello["repository"], "sender": hello["sender"]}  # fmt: skip
    mapped = opts.mapping.map(ping, event="ping")
    assert (mapped.events, mapped.problems, mapped.unmapped) == ([], [], 0)

    label = {"action": "created", "label": {"name": "bug", "color": "d73a4a"},
             "repository": hello["repository"], "sender": hello["sender"]}  # fmt: skip
    event = one(opts, label, event="some_future_event")
    assert event.title == "Codertocat created label in Codertocat/Hello-World"
    assert event.actor.name == "Codertocat"
    assert event.url == "https://github.com/Codertocat/Hello-World"
    assert event.tags == ("Codertocat/Hello-World",)


# --- GitLab webhooks and system hooks: the corpus ---------------------------------------------


def gitlab_kind(doc: dict[str, Any]) -> str:
    return str(doc.get("object_kind") or doc["event_name"])


def check_gitlab(name: str, event: EventData, doc: dict[str, Any]) -> list[str]:
    wrong = title_problems(event.title)
    kind = gitlab_kind(doc)
    if kind not in event.tags:
        wrong.append(f"tags {event.tags} lack {kind!r}")
    person = next(
        (doc[k] for k in ("user", "user_name", "user_username", "username", "owner_name")
         if doc.get(k)),
        None,
    )  # fmt: skip
    if person and not event.actor.name:
        wrong.append("no actor, though the payload names a person")
    # Who did it is in the title, but for CI results and owner-only system hooks.
    named = ("user" in doc or "user_name" in doc) and kind not in GITLAB_CI
    if named and (not event.actor.name or event.actor.name not in event.title):
        wrong.append(f"title does not name the actor {event.actor.name!r}")
    links = any(s.startswith(("http://", "https://")) for s in strings(doc))
    if links and not (event.url or "").startswith(("http://", "https://")):
        wrong.append(f"url {event.url!r}, though the payload has links")
    if event.verb not in VERBS:
        wrong.append(f"verb {event.verb!r}")
    if event.object_type == "Note":  # the default: no rule matched
        wrong.append("object_type not set by a rule")
    for label in doc.get("labels") or []:
        if label["title"] not in event.tags:
            wrong.append(f"label {label['title']!r} not in tags")
    return [f"{name}: {w} ({event.title!r})" for w in wrong]


@pytest.mark.corpus
def test_every_gitlab_hook_payload_maps_to_a_meaningful_event() -> None:
    corpus(GITLAB_HOOKS)
    paths = files(GITLAB_HOOKS, "webhooks/*.json") + files(GITLAB_HOOKS, "systemhooks/*.json")
    assert len(paths) >= 45, paths
    opts = webhook("gitlab")
    wrong: list[str] = []
    kinds = set()
    for path in paths:
        doc = load(path)
        name = f"{path.parent.name}/{path.name}"
        kinds.add(gitlab_kind(doc))
        mapped = opts.mapping.map(doc, event="System Hook")  # the header plays no part
        if mapped.problems or len(mapped.events) != 1:
            wrong.append(f"{name}: {len(mapped.events)} events, problems {mapped.problems}")
            continue
        wrong += check_gitlab(name, mapped.events[0], doc)
    assert not wrong, "\n".join(wrong)
    assert {"push", "merge_request", "note", "project_create", "user_create"} <= kinds


GITLAB_TITLES = {
    "webhooks/merge_request.json": "User1 opened merge request !1: MS-Viewport",
    "webhooks/service_merge_request.json":
        "the test pushed to merge request !2: Update client.go 🎉",
    "webhooks/group_merge_request.json":
        "User1 merged a merge request in exm-namespace/example-project",
    "systemhooks/merge_request.json": "Administrator updated merge request !1: MS-Viewport",
    "webhooks/issue.json": "Administrator opened issue #23: New API: create/update/delete file",
    "webhooks/note_issue.json": "User1 commented on issue #17: test_issue",
    "webhooks/note_merge_request.json":
        "Administrator commented on merge request !1: Tempora et eos debitis quae laborum et.",
    "webhooks/note_commit.json": "User1 commented on a commit in gitlabhq/gitlab-test",
    "webhooks/note_snippet.json": "User1 commented on snippet $53: test",
    "webhooks/push.json": "John Smith pushed 4 commits to master in mike/diaspora",
    "systemhooks/push.json": "John Smith pushed 1 commit to master in mike/diaspora",
    "webhooks/tag_push.json": "John Smith pushed refs/tags/v1.0.0 to jsmith/example",
    "webhooks/wiki_page.json": "User1 created wiki page Awesome in root/awesome-project",
    "webhooks/pipeline.json": "Pipeline #31 succeeded on master in gitlab-org/gitlab-test",
    "webhooks/job.json":
        "Job auto_deploy:start succeeded on main in John Smith / release-tools-fake",
    "webhooks/deployment.json":
        "Deployment of 1.0.0 to staging succeeded in root/test-deployment-webhooks",
    "webhooks/release.json": "Release 1.0.0 published in exm-namespace/example-project",
    "webhooks/member.json": "User1 was added to group webhook-test as Guest",
    "webhooks/subgroup.json": "Subgroup group-1/subgroup-1 was created",
    "systemhooks/project_create.json": "Project jsmith/storecloud was created",
    "systemhooks/project_rename.json": "Project jsmith/overscore was renamed to jsmith/underscore",
    "systemhooks/group_rename.json":
        "Group parent-group/old-name was renamed to parent-group/better-name",
    "systemhooks/user_create.json": "User John Smith (js) was created",
    "systemhooks/user_remove_from_team.json":
        "John Smith was removed from project jsmith/storecloud",
    "systemhooks/key_create.json": "SSH key added for root",
}  # fmt: skip


@pytest.mark.corpus
@pytest.mark.parametrize(("name", "title"), sorted(GITLAB_TITLES.items()))
def test_gitlab_hook_exact_titles(name: str, title: str) -> None:
    doc = load(corpus(GITLAB_HOOKS, *name.split("/")))
    assert one(webhook("gitlab"), doc).title == title


@pytest.mark.corpus
def test_gitlab_merge_request_fields() -> None:
    doc = load(corpus(GITLAB_HOOKS, "webhooks", "merge_request.json"))
    event = one(webhook("gitlab"), doc, event="Merge Request Hook")
    assert event.url == "http://example.com/diaspora/merge_requests/1"
    assert (event.actor.name, event.actor.email) == ("User1", "user1@example.com")
    assert event.published is not None
    assert event.published.isoformat() == "2013-12-03T17:23:34+00:00"
    assert (event.verb, event.object_type) == ("Create", "MergeRequest")
    assert event.tags == ("merge_request", "gitlabhq/gitlab-test", "API")
    assert event.thread_id == "gitlabhq/gitlab-test!1"
    merged = copy.deepcopy(doc)
    merged["object_attributes"]["action"] = "merge"
    assert one(webhook("gitlab"), merged).title == "User1 merged merge request !1: MS-Viewport"


@pytest.mark.corpus
def test_gitlab_ruby_style_dates_are_read() -> None:
    # GitLab writes "2015-05-17 18:08:09 UTC"; connectors.mapping.parse_time reads it.
    doc = load(corpus(GITLAB_HOOKS, "webhooks", "note_commit.json"))
    written = doc["object_attributes"]["updated_at"]
    assert written.endswith(" UTC")
    published = one(webhook("gitlab"), doc).published
    assert published is not None and published.strftime("%Y-%m-%d %H:%M:%S UTC") == written


# --- the GitHub events API: responses built from corpus payloads ---------------------------------

GITHUB_API = "https://api.github.com/repos/Codertocat/Hello-World/events"


def api_event(kind: str, doc: dict[str, Any], n: int, **payload: Any) -> dict[str, Any]:
    """A webhook payload in the events API's shape: the actor and repo apart, the
    rest as `payload`, API URLs only."""
    login = doc["sender"]["login"]
    repo = doc["repository"]["full_name"]
    apart = ("repository", "sender", "organization", "installation", "enterprise")
    body = {k: v for k, v in doc.items() if k not in apart}
    body.update(payload)
    return {
        "id": str(22249084947 + n),
        "type": API_TYPES.get(kind, kind),
        "actor": {"id": doc["sender"]["id"], "login": login, "display_login": login,
                  "url": f"https://api.github.com/users/{login}",
                  "avatar_url": doc["sender"]["avatar_url"]},
        "repo": {"id": doc["repository"]["id"], "name": repo,
                 "url": f"https://api.github.com/repos/{repo}"},
        "payload": body,
        "public": True,
        "created_at": f"2024-05-15T15:{n:02d}:00Z",
    }  # fmt: skip


def github_api_response() -> list[dict[str, Any]]:
    corpus(GITHUB_HOOKS)
    events = []
    for n, kind in enumerate(sorted(API_TYPES)):
        doc = load(files(GITHUB_HOOKS, f"{kind}/*.json")[0])
        extra: dict[str, Any] = {}
        if kind == "push":  # github.com's PushEvent: no commit list any more
            doc = {k: doc[k] for k in ("sender", "repository")}
            extra = {"repository_id": 186853002, "push_id": 10115855396,
                     "ref": "refs/heads/main", "head": "a" * 40, "before": "b" * 40}  # fmt: skip
        if kind == "release":
            extra = {"action": "published"}  # the only ReleaseEvent action
        events.append(api_event(kind, doc, n, **extra))
    return events


@pytest.mark.corpus
def test_github_events_api_every_type_maps() -> None:
    response = github_api_response()
    mapped = jsonapi("github").mapping.map(response, base_url=GITHUB_API)
    assert mapped.problems == []
    assert len(mapped.events) == len(response) == len(API_TYPES)
    wrong = []
    for item, event in zip(response, mapped.events, strict=True):
        kind = next(k for k, t in API_TYPES.items() if t == item["type"])
        wrong += [f"{item['type']}: {w} ({event.title!r})" for w in title_problems(event.title)]
        if event.external_id != item["id"]:
            wrong.append(f"{item['type']}: id {event.external_id!r}")
        login = item["actor"]["login"]
        if event.actor.name != login or login not in event.title:
            wrong.append(f"{item['type']}: actor {event.actor.name!r} ({event.title!r})")
        if not (event.url or "").startswith("https://github.com/"):
            wrong.append(f"{item['type']}: url {event.url!r}")
        if {kind, item["repo"]["name"]} - set(event.tags):
            wrong.append(f"{item['type']}: tags {event.tags}")
        if event.published is None or event.published.isoformat()[:19] != item["created_at"][:19]:
            wrong.append(f"{item['type']}: published {event.published}")
        if event.object_type == "Note":
            wrong.append(f"{item['type']}: no rule matched")
    assert not wrong, "\n".join(wrong)
    by_type = {item["type"]: e for item, e in zip(response, mapped.events, strict=True)}
    push = by_type["PushEvent"]
    assert push.title == "Codertocat pushed to main in Codertocat/Hello-World"
    assert push.url == f"https://github.com/Codertocat/Hello-World/compare/{'b' * 40}...{'a' * 40}"
    assert by_type["PullRequestEvent"].title == (
        "Codertocat assigned Codertocat to pull request #2: Update the README with new information."
    )
    assert by_type["PullRequestEvent"].url == "https://github.com/Codertocat/Hello-World/pull/2"
    assert by_type["IssueCommentEvent"].title == (
        "Codertocat commented on issue #1: Spelling error in the README file"
    )
    assert by_type["ReleaseEvent"].title == (
        "Codertocat published release 0.0.1 in Codertocat/Hello-World"
    )
    assert by_type["ReleaseEvent"].verb == "Announce"
    assert by_type["WatchEvent"].url == "https://github.com/Codertocat/Hello-World"
    assert by_type["CreateEvent"].url == "https://github.com/Codertocat/Hello-World/tree/simple-tag"
    assert push.actor.url == "https://github.com/Codertocat"


@pytest.mark.corpus
def test_github_events_api_variants() -> None:
    opts = jsonapi("github")
    pr = github_payload("pull_request/assigned.payload.json")
    hello = github_payload("watch/started.payload.json")
    # github.com's trimmed PullRequestEvent: no title, no html_url.
    api_pr = {"id": 279147437, "number": 2,
              "url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/2"}  # fmt: skip
    trimmed = api_event("pull_request", pr, 1, action="opened", pull_request=api_pr)
    event = one(opts, [trimmed], base=GITHUB_API)
    assert event.title == "Codertocat opened pull request #2 in Codertocat/Hello-World"
    assert event.url == "https://github.com/Codertocat/Hello-World/pull/2"
    assert event.verb == "Create"
    # GitHub Enterprise Server counts a push's commits and lives on its own host.
    commits = [{"message": "Fix login"}, {"message": "Docs"}]
    ghes = api_event("push", {k: hello[k] for k in ("sender", "repository")}, 2,
                     ref="refs/heads/master", head="a" * 40, before="b" * 40, size=2,
                     distinct_size=2, commits=commits)  # fmt: skip
    ghes["repo"]["url"] = "https://ghe.example.com/api/v3/repos/Codertocat/Hello-World"
    ghes["actor"]["url"] = "https://ghe.example.com/api/v3/users/Codertocat"
    ghe_api = "https://ghe.example.com/api/v3/repos/Codertocat/Hello-World/events"
    event = one(opts, [ghes], base=ghe_api)
    assert event.title == "Codertocat pushed 2 commits to master in Codertocat/Hello-World"
    compare = f"/Codertocat/Hello-World/compare/{'b' * 40}...{'a' * 40}"
    assert event.url == "https://ghe.example.com" + compare
    assert event.actor.url == "https://ghe.example.com/Codertocat"
    assert event.summary == "Fix login\nDocs"
    # A type without a rule still reads, and still links.
    odd = api_event("SponsorshipEvent", hello, 3, action="created")
    event = one(opts, [odd], base=GITHUB_API)
    assert event.title == "Codertocat: SponsorshipEvent in Codertocat/Hello-World"
    assert event.tags == ("SponsorshipEvent", "Codertocat/Hello-World")
    public = one(opts, [api_event("PublicEvent", hello, 4)], base=GITHUB_API)
    assert public.title == "Codertocat made Codertocat/Hello-World public"


# --- the GitLab events API: responses built from corpus payloads ---------------------------

GITLAB_API = "https://gitlab.example.com/api/v4/projects/15/events"


def gitlab_api_response() -> list[dict[str, Any]]:
    """Events as GET /projects/:id/events lists them, their values taken from the
    corpus webhooks of the same happenings."""
    push = load(corpus(GITLAB_HOOKS, "webhooks", "push.json"))
    issue = load(corpus(GITLAB_HOOKS, "webhooks", "issue.json"))
    mr = load(corpus(GITLAB_HOOKS, "webhooks", "merge_request.json"))
    note = load(corpus(GITLAB_HOOKS, "webhooks", "note_issue.json"))
    wiki = load(corpus(GITLAB_HOOKS, "webhooks", "wiki_page.json"))

    def event(n: int, user: dict[str, Any], action: str, **rest: Any) -> dict[str, Any]:
        author = {"id": n, "name": user["name"], "username": user["username"], "state": "active",
                  "web_url": f"https://gitlab.example.com/{user['username']}"}  # fmt: skip
        return {"id": 100 + n, "title": None, "project_id": 15, "action_name": action,
                "target_id": None, "target_iid": None, "target_type": None, "author_id": n,
                "target_title": None, "created_at": f"2024-02-09T10:{n:02d}:19.667Z",
                "author": author, "author_username": user["username"], "imported": False,
                "imported_from": "none", **rest}  # fmt: skip

    pusher = {"name": push["user_name"], "username": push["user_username"]}
    last = push["commits"][-1]
    push_data = {"commit_count": 1, "action": "pushed", "ref_type": "branch",
                 "commit_from": push["before"], "commit_to": push["after"], "ref": "master",
                 "commit_title": last["message"].strip(), "ref_count": None}  # fmt: skip
    attrs = issue["object_attributes"]
    return [
        event(1, pusher, "pushed to", push_data=push_data),
        event(2, pusher, "pushed to", push_data={**push_data, "commit_count": 4}),
        event(3, pusher, "pushed new", push_data={**push_data, "action": "created",
                                                   "ref": "fix-login", "commit_count": 0}),
        event(4, pusher, "deleted", push_data={**push_data, "action": "removed",
                                                "ref": "fix-login", "commit_count": 0}),
        event(5, issue["user"], "opened", target_id=attrs["id"], target_iid=attrs["iid"],
              target_type="Issue", target_title=attrs["title"]),
        event(6, mr["user"], "accepted", target_id=99, target_iid=1,
              target_type="MergeRequest", target_title=mr["object_attributes"]["title"]),
        event(7, note["user"], "commented on", target_id=1241, target_iid=1241,
              target_type="Note", target_title=note["issue"]["title"],
              note={"id": 1241, "body": note["object_attributes"]["note"],
                    "noteable_type": "Issue", "noteable_iid": note["issue"]["iid"]}),
        event(8, wiki["user"], "created", target_id=7, target_type="WikiPage::Meta",
              target_title=wiki["object_attributes"]["title"]),
        event(9, issue["user"], "joined"),
        event(10, issue["user"], "created", target_id=3, target_iid=3,
              target_type="Milestone", target_title="v1.0"),
    ]  # fmt: skip


GITLAB_API_TITLES = [
    "John Smith pushed 1 commit to master: fixed readme",
    "John Smith pushed 4 commits to master",
    "John Smith pushed new branch fix-login: fixed readme",
    "John Smith deleted branch fix-login",
    "Administrator opened issue #23: New API: create/update/delete file",
    "User1 merged merge request !1: MS-Viewport",
    "User1 commented on issue #17: test_issue",
    "User1 created wiki page Awesome",
    "Administrator joined the project",
    "Administrator created milestone v1.0",
]
GITLAB_API_TAGS = ["push", "push", "push", "push", "issue", "merge_request", "note",
                   "wiki_page", "project", "milestone"]  # fmt: skip


@pytest.mark.corpus
def test_gitlab_events_api() -> None:
    response = gitlab_api_response()
    mapped = jsonapi("gitlab").mapping.map(response, base_url=GITLAB_API)
    assert mapped.problems == []
    assert [e.title for e in mapped.events] == GITLAB_API_TITLES
    for item, event, tag in zip(response, mapped.events, GITLAB_API_TAGS, strict=True):
        assert not title_problems(event.title), event.title
        assert event.external_id == str(item["id"])
        assert event.actor.name == item["author"]["name"]
        assert item["author"]["name"] in event.title
        assert event.actor.url == item["author"]["web_url"]
        assert event.url == "https://gitlab.example.com/projects/15"
        assert tag in event.tags
        assert event.published is not None
        assert event.published.isoformat()[:19] == item["created_at"][:19]
        assert event.verb in VERBS
    issue, merged, comment = mapped.events[4], mapped.events[5], mapped.events[6]
    assert (issue.verb, issue.object_type, issue.thread_id) == ("Create", "Issue", "15#23")
    assert (merged.verb, merged.object_type, merged.thread_id) == ("Accept", "MergeRequest", "15!1")
    assert (comment.object_type, comment.thread_id) == ("Comment", "15#17")
    assert comment.summary == "Hello world"
    assert mapped.events[3].verb == "Delete"
