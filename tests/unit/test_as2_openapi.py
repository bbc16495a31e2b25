"""Events as Activity Streams 2.0, and the OpenAPI description of the REST API."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.routing import Route

from aggregator import metrics
from aggregator.config import parse_config
from aggregator.store import FailureRecord
from aggregator.store.schema import ALERTS_SOURCE
from aggregator.types import Actor, EventData
from tests.stores import store_url
from tests.unit.test_streams import BASE, NOW, World, make_world, world
from web.app import create_app
from web.openapi import DOCUMENT

__all__ = ["make_world", "world"]  # fixtures, used by name

AS2 = "https://www.w3.org/ns/activitystreams"
ARTICLE = EventData(
    external_id="a-1",
    title="Merger <approved>",
    summary="the board said yes & more",
    content_html="<p>Yes.<script>alert(1)</script></p>",
    url="https://wiki.e.org/merger",
    actor=Actor(name="Jane Doe", email="jane@e.org", url="https://e.org/~jane"),
    published=datetime(2026, 11, 20, 8, 0, tzinfo=UTC),
    tags=("merger", "legal"),
    extra={"attachments": [{"url": "https://e.org/deck.pdf", "type": "application/pdf"}]},
)


def test_an_event_as_activity_streams(world: World) -> None:
    [event_id] = world.add("pub", ARTICLE)
    res = world.get(f"/api/events/{event_id}.as2", "zoe")
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/activity+json"
    doc = res.json()
    assert doc["@context"] == AS2
    assert doc["type"] == "Create"
    assert doc["id"] == f"{BASE}/api/events/{event_id}.as2"
    assert doc["actor"] == {"type": "Person", "name": "Jane Doe", "url": "https://e.org/~jane"}
    assert "email" not in str(doc["actor"])
    obj = doc["object"]
    assert obj["type"] == "Article"
    assert obj["id"] == obj["url"] == "https://wiki.e.org/merger"
    assert obj["name"] == "Merger <approved>"  # name is plain text
    assert obj["summary"] == "the board said yes &amp; more"  # summary is HTML
    assert obj["content"] == "<p>Yes.</p>" and obj["mediaType"] == "text/html"
    assert obj["published"] == doc["published"] == "2026-11-20T08:00:00+00:00"
    assert obj["tag"] == [{"type": "Object", "name": "merger"}, {"type": "Object", "name": "legal"}]
    assert obj["attachment"] == [
        {"type": "Link", "href": "https://e.org/deck.pdf", "mediaType": "application/pdf"}
    ]
    # The plain event route still answers for the same id.
    plain = world.get(f"/api/events/{event_id}", "zoe")
    assert plain.headers["content-type"] == "application/json" and plain.json()["id"] == event_id


def test_an_update_is_an_update_activity(world: World) -> None:
    world.add("pub", ARTICLE)
    later = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    changed = EventData(
        external_id="a-1", title="Merger approved, signed", url=ARTICLE.url, updated=later
    )
    [update_id] = world.add("pub", changed)
    doc = world.get(f"/api/events/{update_id}.as2", "zoe").json()
    assert doc["type"] == "Update" and doc["published"] == later.isoformat()
    assert doc["object"]["id"] == ARTICLE.url  # the same object, a new activity


def test_an_event_without_an_author_was_done_by_its_source(world: World) -> None:
    [event_id] = world.add("pub", "anonymous")
    doc = world.get(f"/api/events/{event_id}.as2", "zoe").json()
    assert doc["actor"] == {"type": "Service", "name": "pub"}
    assert "id" not in doc["object"] and "content" not in doc["object"]


def test_as2_is_filtered_by_what_the_viewer_may_see(world: World) -> None:
    [secret] = world.add("sec", "legal memo")
    assert world.get(f"/api/events/{secret}.as2", "max").status_code == 200
    assert world.get(f"/api/events/{secret}.as2", "ada").status_code == 200
    for user in ("eve", "zoe"):
        res = world.get(f"/api/events/{secret}.as2", user)
        assert res.status_code == 404 and res.json() == {"error": "no such event"}
    assert world.get("/api/events/999.as2", "ada").status_code == 404
    assert world.get("/api/events/abc.as2", "ada").status_code == 404
    assert world.get(f"/api/events/{'9' * 50}.as2", "ada").status_code == 404
    assert world.client.get(f"/api/events/{secret}.as2").status_code == 401


# --- OpenAPI ---------------------------------------------------------------------------


def test_the_description_is_valid_openapi() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1")


def _template(path: str) -> str:
    """A Starlette path as an OpenAPI template: `{id:int}` is `{id}`."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def test_every_api_and_feed_route_is_described(tmp_path: Path) -> None:
    config = parse_config({"store": {"url": store_url(tmp_path, "o")}})
    described = DOCUMENT["paths"]
    checked = 0
    for route in create_app(config).routes:
        if not isinstance(route, Route):
            continue
        if not route.path.startswith(("/api/", "/feeds/", "/healthz", "/readyz", "/metrics")):
            continue
        path = _template(route.path)
        assert path in described, f"{path} is not in the OpenAPI description"
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in described[path], f"{method} {path} is not described"
        checked += 1
    assert checked >= 15


def test_every_described_operation_declares_its_responses_and_parameters() -> None:
    for path, item in DOCUMENT["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        shared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        for method, op in item.items():
            if method == "parameters":
                continue
            assert op["responses"] and op["summary"], (method, path)
            own = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert own | shared == names, (method, path)
            if path.startswith("/api/"):
                assert "401" in op["responses"], (method, path)


def test_the_description_is_served_to_signed_in_users(world: World) -> None:
    res = world.get("/api/openapi.json", "zoe")
    assert res.status_code == 200 and res.json() == DOCUMENT
    # Like all of /api: 401 without credentials (the public contract).
    assert world.client.get("/api/openapi.json").status_code == 401


def test_sources_answer_as_described_with_health_for_admins_only(world: World) -> None:
    world.add("pub", "one")
    later = NOW + timedelta(hours=1)
    world.store.record(
        [
            FailureRecord("sec", "HTTP 503 from https://e.org/s", NOW, later),
            FailureRecord("ops", "HTTP 410 Gone from https://e.org/o", NOW, later, gone=True),
        ]
    )
    schema = Draft202012Validator(DOCUMENT["components"]["schemas"]["Source"])

    admin = {s["id"]: s for s in world.get("/api/sources", "ada").json()["sources"]}
    assert set(admin) == {"pub", "sec", "ops"}  # not Tidings' own alerts source
    for source in admin.values():
        schema.validate(source)  # no field the description does not name
    assert admin["pub"]["disabled_reason"] is None
    assert admin["sec"]["disabled_reason"] is None
    assert admin["sec"]["last_error"] == "HTTP 503 from https://e.org/s"
    assert admin["sec"]["consecutive_failures"] == 1
    assert admin["sec"]["next_poll_at"] == later.isoformat()
    assert admin["ops"]["disabled_reason"] == "HTTP 410 Gone from https://e.org/o"
    health = {"disabled_reason", "consecutive_failures", "next_poll_at", "last_error"}
    assert health <= set(schema.schema["properties"])

    # Members see the sources their groups admit, and no health: errors and
    # stop reasons quote the source's address, which members are not shown.
    member = world.get("/api/sources", "max").json()["sources"]
    assert [s["id"] for s in member] == ["pub", "sec"]
    for source in member:
        schema.validate(source)
        assert set(source) == {"id", "kind", "title"}


# --- /metrics and alerts, as docs/operations.md describes them ---------------------------


def test_every_metric_and_the_alerts_source_are_in_operations_md() -> None:
    # Here beside the description of /metrics; tests/unit/test_docs.py is the
    # natural home for checks of the docs.
    text = (Path(__file__).resolve().parents[2] / "docs/operations.md").read_text()
    for family in metrics.REGISTRY.collect():
        suffix = "_total" if family.type == "counter" else ""
        row = f"| `{family.name}{suffix}` | {family.type} |"
        assert row in text, f"{family.name} is not in the metrics table of docs/operations.md"
    assert f"`source:{ALERTS_SOURCE}`" in text
