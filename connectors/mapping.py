"""Field mappings: foreign JSON to events, by configuration, not code.

A mapping is a JMESPath expression selecting the items of a document
(`items`) and one spec per event field, relative to one item. A spec is a
JMESPath expression (a string), a template (`{template = "{user.name}
opened #{number}"}`, each `{...}` a JMESPath expression, `{{`/`}}` literal
braces), or a constant (`{value = "Issue"}`).

A preset (connectors/presets/KIND/NAME.toml, data shipped in the package)
gives defaults for a kind's options, default fields, and rules: per event
type (a webhook's event header) and/or a JMESPath condition (`when`), fields
that apply to the items they match, or `skip = true` to drop them. The
source's own `fields` override the preset's, rules included, field by field.

Foreign data is never trusted: a field of the wrong type is dropped with a
problem naming the field and the item, and the item is kept; an item whose id
cannot be read is skipped (a guessed identity would duplicate it later). The
connector decides what problems mean: some is a warning, all is an error.
"""

from __future__ import annotations

import email.utils
import re
import tomllib
from collections.abc import Mapping as AbstractMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, ClassVar
from urllib.parse import urljoin

import jmespath
from jmespath import functions, visitor
from jmespath.exceptions import JMESPathError
from pydantic import Field, PrivateAttr, model_validator
from pydantic_core import PydanticCustomError

from aggregator.connector import ConnectorOptions
from aggregator.types import Actor, EventData, JSONObject

FIELD_NAMES = (
    "id", "title", "url", "published", "updated", "author", "author_email",
    "author_url", "summary", "content_html", "tags", "verb", "object_type", "thread_id",
)  # fmt: skip
_TEXT_FIELDS = frozenset(FIELD_NAMES) - {"id", "published", "updated", "tags"}
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
MAX_PROBLEMS = 20  # problems reported per document; the rest are counted
_EPOCH_MS = 100_000_000_000  # a larger epoch number is milliseconds (Jenkins), not seconds

FieldSpecInput = str | dict[str, Any]
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_ABSOLUTE = re.compile(
    r"https?://", re.IGNORECASE
)  # nothing for urljoin to do (a third of mapping)
_EVENT: ContextVar[str | None] = ContextVar("tidings_mapping_event", default=None)
_RUBY_TIME = re.compile(
    r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d(?::\d\d(?:\.\d+)?)?)\s+(UTC|[+-]\d\d:?\d\d)"
)


class _Functions(functions.Functions):
    """JMESPath's functions, plus the text ones titles need (JMESPath has no
    way to shorten a ref or a hash) and `event()`, the delivery's event type."""

    @functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_strip_prefix(self, text: str, prefix: str) -> str:
        return text[len(prefix) :] if text.startswith(prefix) else text

    @functions.signature({"types": ["string"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_replace(self, text: str, old: str, new: str) -> str:
        return text.replace(old, new) if old else text

    @functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_split(self, text: str, sep: str) -> list[str]:
        return text.split(sep) if sep else [text]

    @functions.signature({"types": ["string"]}, {"types": ["number"]})
    def _func_left(self, text: str, count: float) -> str:
        return text[: max(0, int(count))]

    @functions.signature({"types": ["string"]})
    def _func_lower(self, text: str) -> str:
        return text.lower()

    @functions.signature({"types": ["string"]})
    def _func_upper(self, text: str) -> str:
        return text.upper()

    @functions.signature()
    def _func_event(self) -> str | None:
        return _EVENT.get()


# One interpreter for every search: jmespath's own `search` builds a new one
# each call, which was most of the cost of mapping an item.
_INTERPRETER = visitor.TreeInterpreter(jmespath.Options(custom_functions=_Functions()))


@dataclass(frozen=True, slots=True)
class Expr:
    """A compiled JMESPath expression. A plain dotted path (most fields) is
    looked up directly, with JMESPath's meaning: null where a key is missing
    or a step is not an object."""

    text: str
    ast: Any  # jmespath's parse tree
    path: tuple[str, ...] | None

    def search(self, value: Any) -> Any:
        if self.path is None:
            return _INTERPRETER.visit(self.ast, value)
        for key in self.path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value


class MappingError(ValueError):
    """A mapping that cannot be compiled; the message names the field."""


@dataclass(frozen=True, slots=True)
class Spec:
    """One compiled field spec."""

    source: str  # as written, for messages
    expression: Expr | None = None
    template: tuple[str | Expr, ...] | None = None
    value: Any = None

    def __call__(self, item: Any) -> Any:
        if self.expression is not None:
            return self.expression.search(item)
        if self.template is not None:
            return _render(self.template, item)
        return self.value


def _render(parts: tuple[str | Expr, ...], item: Any) -> str:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        value = part.search(item)
        if isinstance(value, list):
            value = ", ".join(_scalar_text(v) for v in value if _is_scalar(v))
        elif value is None or isinstance(value, bool | dict):  # `a && 'x'` is false: absent
            value = ""
        out.append(str(value))
    return " ".join("".join(out).split())  # a missing part leaves no double space


def _expression(text: str, where: str) -> Expr:
    if not isinstance(text, str) or not text.strip():
        raise MappingError(f"{where}: expected a JMESPath expression")
    try:
        parsed = jmespath.compile(text)
    except JMESPathError as err:
        reason = str(err).splitlines()[0]
        raise MappingError(f"{where}: invalid JMESPath {text!r}: {reason}") from None
    path = tuple(text.strip().split(".")) if _PATH.fullmatch(text.strip()) else None
    return Expr(text, parsed.parsed, path)


def _literal(text: str, where: str) -> str:
    if "{" in text or "}" in text:
        raise MappingError(f"{where}: a lone brace in the template; write {{{{ or }}}} for one")
    return text


def compile_spec(spec: FieldSpecInput, where: str) -> Spec:
    if isinstance(spec, str):
        return Spec(spec, expression=_expression(spec, where))
    if isinstance(spec, dict) and set(spec) == {"template"} and isinstance(spec["template"], str):
        text = spec["template"]
        parts: list[str | Expr] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            parts.append(_literal(text[pos : m.start()], where))
            token = m.group(0)
            parts.append(token[0] if token in ("{{", "}}") else _expression(m.group(1), where))
            pos = m.end()
        parts.append(_literal(text[pos:], where))
        return Spec(text, template=tuple(p for p in parts if p != ""))
    if isinstance(spec, dict) and set(spec) == {"value"}:
        return Spec(repr(spec["value"]), value=spec["value"])
    raise MappingError(
        f'{where}: expected a JMESPath expression, {{template = "..."}} or {{value = ...}}'
    )


@dataclass(frozen=True, slots=True)
class Rule:
    events: frozenset[str] | None  # event types it applies to; None: any
    when: Expr | None
    fields: dict[str, Spec]
    skip: bool = False

    def matches(self, item: Any, event: str | None) -> bool:
        if self.events is not None and event not in self.events:
            return False
        return self.when is None or bool(self.when.search(item))


def compile_fields(fields: AbstractMapping[str, Any], where: str) -> dict[str, Spec]:
    out = {}
    for name, spec in fields.items():
        if name not in FIELD_NAMES:
            raise MappingError(f"{where}.{name}: unknown field (known: {', '.join(FIELD_NAMES)})")
        out[name] = compile_spec(spec, f"{where}.{name}")
    return out


def compile_rule(raw: AbstractMapping[str, Any], where: str) -> Rule:
    unknown = set(raw) - {"event", "when", "fields", "skip"}
    if unknown:
        raise MappingError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    event = raw.get("event")
    events = frozenset([event] if isinstance(event, str) else event) if event else None
    when = _expression(raw["when"], f"{where}.when") if "when" in raw else None
    return Rule(
        events=events,
        when=when,
        fields=compile_fields(raw.get("fields", {}), f"{where}.fields"),
        skip=bool(raw.get("skip", False)),
    )


@dataclass(frozen=True)
class Mapped:
    """What a document mapped to: its events, and what went wrong on the way."""

    events: list[EventData]
    problems: list[str] = field(default_factory=list)
    unmapped: int = 0  # items skipped for a problem (not those a rule skips)
    items: int = 0  # items the document held


@dataclass(frozen=True)
class FieldMapping:
    items: Expr | None  # None: the document is the one item
    items_source: str
    fields: dict[str, Spec]
    rules: tuple[Rule, ...] = ()
    overrides: dict[str, Spec] = field(default_factory=dict)  # the source's own fields

    def items_of(self, doc: Any) -> list[Any]:
        """The items of `doc`; raises MappingError when `items` selects
        nothing or something that is not a list or an object."""
        found = doc if self.items is None else self.items.search(doc)
        if isinstance(found, list):
            return found
        if isinstance(found, dict):
            return [found]
        if found is None:
            raise MappingError(f"items: {self.items_source!r} matched nothing in the response")
        raise MappingError(
            f"items: {self.items_source!r} selected {_type(found)}, not a list of items"
        )

    def map(self, doc: Any, *, event: str | None = None, base_url: str | None = None) -> Mapped:
        items = self.items_of(doc)
        events: list[EventData] = []
        problems: list[str] = []
        unmapped = 0
        for index, item in enumerate(items):
            found: list[str] = []
            mapped = self.map_item(item, event=event, base_url=base_url, problems=found)
            problems.extend(f"{p} (item {index + 1})" for p in found)
            if mapped is None:
                unmapped += bool(found)
            else:
                events.append(mapped)
        if len(problems) > MAX_PROBLEMS:
            problems = [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]
        return Mapped(events, problems, unmapped, len(items))

    def specs_for(self, item: Any, event: str | None) -> dict[str, Spec] | None:
        """The fields that apply to `item`: defaults, the first matching
        rule's, then the source's own overrides; None when a rule skips it."""
        for rule in self.rules:
            if rule.matches(item, event):
                return None if rule.skip else {**self.fields, **rule.fields, **self.overrides}
        return {**self.fields, **self.overrides}

    def map_item(
        self, item: Any, *, event: str | None, base_url: str | None, problems: list[str]
    ) -> EventData | None:
        token = _EVENT.set(event)
        try:
            return self._map_item(item, event, base_url, problems)
        finally:
            _EVENT.reset(token)

    def _map_item(
        self, item: Any, event: str | None, base_url: str | None, problems: list[str]
    ) -> EventData | None:
        try:
            specs = self.specs_for(item, event)
        except JMESPathError as err:
            problems.append(f"rules: {err}")
            return None
        if specs is None:
            return None
        values: dict[str, Any] = {}
        for name, spec in specs.items():
            try:
                raw = spec(item)
            except JMESPathError as err:  # a function given the wrong type, say
                problems.append(f"field {name!r} ({spec.source}): {err}")
                if name == "id":
                    return None
                continue
            if raw is None or raw is False:  # `a && b` gives false for "not there"
                continue
            try:
                values[name] = _coerce(name, raw, base_url)
            except ValueError as err:
                problems.append(f"field {name!r} ({spec.source}): {err}")
                if name == "id":
                    return None  # a guessed identity would make a duplicate later
        return EventData(
            external_id=values.get("id"),
            title=values.get("title", ""),
            verb=values.get("verb") or "Create",
            object_type=values.get("object_type") or "Note",
            summary=values.get("summary", ""),
            content_html=values.get("content_html", ""),
            url=values.get("url"),
            actor=Actor(values.get("author"), values.get("author_email"), values.get("author_url")),
            published=values.get("published"),
            updated=values.get("updated"),
            tags=values.get("tags", ()),
            thread_id=values.get("thread_id"),
        )


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "text" if isinstance(value, str) else type(value).__name__


def _coerce(name: str, value: Any, base_url: str | None) -> Any:
    """`value` as field `name` wants it; ValueError saying why not."""
    if name in ("published", "updated"):
        when = parse_time(value)
        if when is None:
            raise ValueError(f"expected a date, got {_type(value)} {str(value)[:40]!r}")
        return when
    if name == "tags":
        values = value if isinstance(value, list) else [value]
        tags = [_scalar_text(v) for v in values if _is_scalar(v)]
        if not tags and values:
            raise ValueError(f"expected text or a list of text, got a list of {_type(values[0])}")
        return tuple(t.strip() for t in tags if t and t.strip())
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected text, got {_type(value)}")
    text = _scalar_text(value).strip() if name != "content_html" else _scalar_text(value)
    if name in ("url", "author_url") and text and base_url and not _ABSOLUTE.match(text):
        try:
            text = urljoin(base_url, text)
        except ValueError:
            raise ValueError(f"not a URL: {text[:80]!r}") from None
    if name == "id" and not text:
        raise ValueError("empty id")
    return text or None if name in _TEXT_FIELDS - {"title", "summary", "content_html"} else text


def _is_scalar(value: Any) -> bool:
    """Text or a number; not a boolean, which is no tag or word."""
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _scalar_text(value: str | int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_time(value: Any) -> datetime | None:
    """A date from foreign JSON: ISO 8601 / RFC 3339 (Jira's "+0000" too),
    RFC 2822, or epoch seconds / milliseconds; None when it is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) >= _EPOCH_MS else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    ruby = _RUBY_TIME.fullmatch(text)  # GitLab's "2015-05-17 18:08:09 UTC" / "... +0200"
    if ruby:
        zone = ruby.group(2)
        text = f"{ruby.group(1)}{'+00:00' if zone == 'UTC' else zone}"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    try:
        return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    except OverflowError:
        return None


# --- presets -----------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    kind: str
    name: str
    title: str
    description: str
    options: JSONObject  # defaults for the kind's options
    fields: JSONObject
    rules: tuple[JSONObject, ...]
    setup: str = ""  # how to set the source up upstream (webhooks), shown to admins


def preset_names(kind: str) -> list[str]:
    folder = resources.files("connectors") / "presets" / kind
    if not folder.is_dir():
        return []
    names = (p.name for p in folder.iterdir())
    return sorted(n.removesuffix(".toml") for n in names if n.endswith(".toml"))


@cache
def load_preset(kind: str, name: str) -> Preset:
    """The preset NAME of KIND; MappingError when there is none."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or name not in preset_names(kind):
        known = ", ".join(preset_names(kind)) or "none"
        raise MappingError(f"preset: no {kind} preset {name!r} (known: {known})")
    path = resources.files("connectors") / "presets" / kind / f"{name}.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return Preset(
        kind=kind,
        name=name,
        title=str(data.get("title", name)),
        description=str(data.get("description", "")),
        options=dict(data.get("options", {})),
        fields=dict(data.get("fields", {})),
        rules=tuple(data.get("rules", ())),
        setup=str(data.get("setup", "")),
    )


def _option_error(message: str) -> PydanticCustomError:
    return PydanticCustomError("mapping", message)


class MappedOptions(ConnectorOptions):
    """Options of a kind that maps foreign JSON through `items` and `fields`,
    optionally starting from a preset (whose options are defaults the source
    overrides). Validation compiles every expression, so a typo is a config
    error naming the field, not a failed poll."""

    preset_kind: ClassVar[str]
    default_items: ClassVar[str | None] = None  # None: the document is the item

    preset: str | None = Field(default=None, description="a shipped mapping to start from")
    items: str | None = Field(
        default=None, description="JMESPath to the list of items in a response"
    )
    fields: dict[str, FieldSpecInput] = Field(
        default_factory=dict,
        description="JMESPath (or {template = ...}) per event field, relative to one item",
    )
    _mapping: FieldMapping = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("preset"):
            return data
        try:
            preset = load_preset(cls.preset_kind, str(data["preset"]))
        except MappingError as err:
            raise _option_error(str(err)) from None
        return _merged(preset.options, data)

    @model_validator(mode="after")
    def _compile(self) -> MappedOptions:
        try:
            self._mapping = build_mapping(self.preset_kind, self, self.default_items)
        except MappingError as err:
            raise _option_error(str(err)) from None
        return self

    @property
    def mapping(self) -> FieldMapping:
        return self._mapping


def _merged(defaults: JSONObject, given: JSONObject) -> JSONObject:
    """`given` over `defaults`, table by table: a source that sets one key of
    the preset's [pagination] keeps the preset's other keys."""
    out = dict(defaults)
    for key, value in given.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and key != "fields":
            value = _merged(old, value)
        out[key] = value
    return out


def build_mapping(kind: str, opts: MappedOptions, default_items: str | None) -> FieldMapping:
    preset = load_preset(kind, opts.preset) if opts.preset else None
    items = opts.items if opts.items is not None else default_items
    base = compile_fields(preset.fields, "preset fields") if preset else {}
    rules = (
        tuple(compile_rule(r, f"preset rules[{i}]") for i, r in enumerate(preset.rules))
        if preset
        else ()
    )
    overrides = compile_fields(opts.fields, "fields")
    if preset is None and "title" not in overrides:
        raise MappingError("fields.title: required (a JMESPath expression or a template)")
    return FieldMapping(
        items=_expression(items, "items") if items is not None else None,
        items_source=items or "@",
        fields=base,
        rules=rules,
        overrides=overrides,
    )


def describe_problems(source_id: str, mapped: Mapped) -> str:
    """One line for admins: how many items failed, and the first problems."""
    head = f"{source_id}: {mapped.unmapped} of {mapped.items} items could not be mapped"
    if not mapped.unmapped:
        head = f"{source_id}: some fields could not be mapped"
    return head + ": " + "; ".join(mapped.problems[:3])
