"""The field-mapping engine: JMESPath, templates and constants per field,
preset rules, and foreign data that does not fit (connectors/mapping.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.mapping import (
    FIELD_NAMES,
    MappedOptions,
    MappingError,
    compile_spec,
    describe_problems,
    load_preset,
    parse_time,
    preset_names,
)


class Opts(MappedOptions):
    preset_kind = "jsonapi"


def test_expressions_templates_and_constants_map_an_item() -> None:
    opts = Opts(
        items="data.items",
        fields={
            "id": "id",
            "title": {"template": "{user.name} opened #{number}: {title}"},
            "url": "links.html",
            "published": "created",
            "author": "user.name",
            "tags": "labels[].name",
            "object_type": {"value": "Issue"},
            "verb": "'Update'",
        },
    )
    doc = {
        "data": {
            "items": [
                {
                    "id": 7,
                    "number": 12,
                    "title": "Fix login",
                    "user": {"name": "alice"},
                    "links": {"html": "/issues/12"},
                    "created": "2026-11-30T10:00:00+0100",
                    "labels": [{"name": "bug"}, {"name": "auth"}],
                }
            ]
        }
    }
    mapped = opts.mapping.map(doc, base_url="https://git.example.com/api/v4/issues?page=2")
    assert mapped.problems == [] and mapped.items == 1
    [event] = mapped.events
    assert event.external_id == "7"
    assert event.title == "alice opened #12: Fix login"
    assert event.url == "https://git.example.com/issues/12"
    assert event.published == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert event.actor.name == "alice"
    assert event.tags == ("bug", "auth")
    assert (event.object_type, event.verb) == ("Issue", "Update")


def test_a_template_with_missing_parts_leaves_no_gaps_and_braces_can_be_written() -> None:
    spec = compile_spec({"template": "{a} did {{it}} to {b}"}, "title")
    assert spec({"a": "ann"}) == "ann did {it} to"
    assert spec({"a": "ann", "b": ["x", True, 2]}) == "ann did {it} to x, 2"


def test_a_field_of_the_wrong_type_is_dropped_and_reported_the_item_kept() -> None:
    opts = Opts(items="[*]", fields={"id": "id", "title": "t", "published": "when"})
    mapped = opts.mapping.map([{"id": 1, "t": {"nested": 1}, "when": "yesterday-ish"}])
    [event] = mapped.events
    assert event.title == "" and event.published is None
    assert mapped.unmapped == 0
    assert "field 'title' (t): expected text, got an object (item 1)" in mapped.problems
    assert any(p.startswith("field 'published' (when): expected a date") for p in mapped.problems)


def test_an_unreadable_id_skips_the_item_and_the_others_are_kept() -> None:
    opts = Opts(items="[*]", fields={"id": "id", "title": "t"})
    mapped = opts.mapping.map([{"id": [1], "t": "bad"}, {"id": "b", "t": "good"}])
    assert [e.title for e in mapped.events] == ["good"]
    assert mapped.unmapped == 1 and mapped.items == 2
    line = describe_problems("tickets", mapped)
    assert line.startswith("tickets: 1 of 2 items could not be mapped: field 'id' (id)")


def test_false_and_null_mean_absent_and_booleans_are_no_tags() -> None:
    opts = Opts(fields={"title": "t", "summary": "s && s.text", "tags": "tags"})
    [event] = opts.mapping.map({"t": "x", "s": None, "tags": [True, "a", False, 3]}).events
    assert event.summary == "" and event.tags == ("a", "3")


@pytest.mark.parametrize(
    ("items", "doc", "message"),
    [
        ("results", {"values": []}, "items: 'results' matched nothing in the response"),
        ("total", {"total": 3}, "items: 'total' selected a number, not a list of items"),
    ],
)
def test_items_that_select_nothing_or_the_wrong_type_name_the_option(
    items: str, doc: Any, message: str
) -> None:
    opts = Opts(items=items, fields={"title": "t"})
    with pytest.raises(MappingError, match=message):
        opts.mapping.map(doc)


def test_an_object_selected_by_items_is_one_item() -> None:
    opts = Opts(items="build", fields={"title": "name"})
    assert [e.title for e in opts.mapping.map({"build": {"name": "#4"}}).events] == ["#4"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"title": "a[", "id": "id"}, "fields.title: invalid JMESPath 'a['"),
        ({"titel": "a"}, "fields.titel: unknown field"),
        ({"title": {"template": "{a["}}, "fields.title: a lone brace in the template"),
        ({"title": {"template": "{a[}"}}, "fields.title: invalid JMESPath"),
        ({"title": {"format": "x"}}, "fields.title: expected a JMESPath expression"),
        ({"id": "id"}, "fields.title: required"),
    ],
)
def test_bad_mappings_are_config_errors_naming_the_field(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[")):
        Opts(fields=fields)


def test_an_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ValidationError, match=r"preset: no jsonapi preset 'nope' \(known: "):
        Opts(preset="nope")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-30T10:00:00Z", datetime(2026, 11, 30, 10, tzinfo=UTC)),
        ("2026-11-30T10:00:00.000+0000", datetime(2026, 11, 30, 10, tzinfo=UTC)),
        ("Mon, 30 Nov 2026 10:00:00 GMT", datetime(2026, 11, 30, 10, tzinfo=UTC)),
        (1796032800, datetime(2026, 11, 30, 10, tzinfo=UTC)),
        (1796032800000, datetime(2026, 11, 30, 10, tzinfo=UTC)),
        ("2026-11-30", datetime(2026, 11, 30, tzinfo=UTC)),
        ("2026-11-30 10:00:00 UTC", datetime(2026, 11, 30, 10, tzinfo=UTC)),
        ("2026-11-30 12:00:00 +0200", datetime(2026, 11, 30, 10, tzinfo=UTC)),
        ("soon", None),
        (True, None),
        (10**30, None),
    ],
)
def test_dates_from_foreign_json(value: Any, expected: datetime | None) -> None:
    assert parse_time(value) == expected


def test_every_shipped_preset_loads_and_compiles() -> None:
    found = {kind: preset_names(kind) for kind in ("jsonapi", "webhook")}
    assert found["jsonapi"] and found["webhook"]
    for kind, names in found.items():
        for name in names:
            preset = load_preset(kind, name)
            assert preset.title and preset.description, (kind, name)
            assert set(preset.fields) <= set(FIELD_NAMES), (kind, name)


def test_a_preset_rule_applies_by_event_and_condition_and_the_source_overrides_it() -> None:
    class Hooks(MappedOptions):
        preset_kind = "webhook"
        signature: str | None = None
        event_header: str | None = None
        delivery_header: str | None = None

    name = preset_names("webhook")[0]
    plain = Hooks(preset=name)
    overridden = Hooks(preset=name, fields={"title": {"value": "Something happened"}})
    assert plain.mapping.rules, "a webhook preset has rules"
    assert overridden.mapping.overrides["title"].value == "Something happened"
    specs = overridden.mapping.specs_for({}, "some-event-no-preset-knows")
    assert specs is not None and specs["title"].value == "Something happened"


def test_text_functions_and_the_event_type_are_there_for_titles() -> None:
    class Hooks(MappedOptions):
        preset_kind = "webhook"

    opts = Hooks(
        fields={
            "title": {
                "template": "{event()}: {left(sha, `7`)} on {strip_prefix(ref, 'refs/heads/')}"
            },
            "tags": "[event(), lower(kind), upper(kind), replace(kind, 'a', 'o')]",
            "summary": "join(' / ', split(path, '/'))",
        }
    )
    doc = {"sha": "0123456789abcdef", "ref": "refs/heads/dev", "kind": "Page", "path": "a/b"}
    [event] = opts.mapping.map(doc, event="push").events
    assert event.title == "push: 0123456 on dev"
    assert event.tags == ("push", "page", "PAGE", "Poge")
    assert event.summary == "a / b"


def test_a_false_condition_in_a_template_prints_nothing() -> None:
    spec = compile_spec({"template": "#{n}{draft && ' (draft)'}"}, "title")
    assert spec({"n": 4, "draft": False}) == "#4" and spec({"n": 4, "draft": True}) == "#4 (draft)"
