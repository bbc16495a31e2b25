"""The Sources admin: health at a glance (alerts, retries, redirects, sources
the poller stopped, with Resume), add/edit/disable/delete, "Test" (a dry-run
poll, which offers a web page's feeds when the URL is one), "Poll now", and
OPML import and export (aggregator/opml.py, shared with the CLI).

Test finds feeds but Save never fetches: saving must not depend on the
network, and a feed behind credentials is only reachable the way a poll is.

The config file bootstraps sources and this page edits the database: sources
from the file are shown, tested and polled here but never changed (the store
refuses, naming the file). Forms are generated from each connector's options
model, so a new kind gets its admin form for free: `str` becomes a text
input, numbers a number input, `bool` a checkbox, `list[str]` comma-separated
text, `dict[str, str]` "Name: value" lines and a `Literal` a select. Options
marked as secrets (`SecretRef`) take an `env:` reference, shown back as the
reference and never resolved for display; a value that is not a reference
(a pasted secret) is never sent back.

Sources made here must not read the server's disk nor name its secrets:
their polls get no local directories and only `env:TIDINGS_SECRET_*`
references (Poller.context, parse_source), and this form refuses `file:`
URLs and paths up front, with a message saying why.
"""

from __future__ import annotations

import asyncio
import json
import re
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from functools import partial
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlencode

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from aggregator.config import SourceCommon, SourceConfig, parse_source
from aggregator.connector import PollContext, Resources
from aggregator.cpu import PARSE_BUDGET, process_pool, run_within
from aggregator.decide import Prepared, event_time, prepare
from aggregator.exceptions import ConfigError, ConnectorError, FetchError, ParseError, TidingsError
from aggregator.humanize import relative_time
from aggregator.idle import WatchStatus
from aggregator.opml import (
    ImportResult,
    OpmlError,
    audience_problems,
    export_opml,
    http_host,
    import_feeds,
    parse_opml,
    slugify,
    unique_id,
)
from aggregator.preview import PREVIEW_TIMEOUT, preview_poll
from aggregator.registry import ConnectorClass, connector_class, connector_kinds
from aggregator.secrets import REF_MESSAGE, WEB_ENV_PREFIX, is_secret_field, is_secret_ref
from aggregator.store import SourceStatus
from connectors.discover import FoundFeed, discover
from connectors.http import fetcher
from connectors.mapping import (
    MappedOptions,
    MappingError,
    Preset,
    describe_problems,
    load_preset,
    preset_names,
)
from connectors.webhook import WebhookOptions, map_payload
from web.auth import guard, principal_of
from web.state import AppState, app_state
from web.templating import render

PREVIEW_LIMIT = 20
FORM_ERROR = "_form"  # errors[FORM_ERROR]: problems that belong to no single field

Widget = Literal[
    "text", "number", "checkbox", "list", "mapping", "fieldmap", "json", "select", "secret"
]

NOT_LOCAL = (
    "a source made in the web admin cannot read the server's files: "
    "file: URLs are only for sources in the config file"
)
NOT_HTTP = "give an http(s) URL, such as https://intranet.example/feed.xml"
NOT_A_REFERENCE = f"must be a reference such as env:{WEB_ENV_PREFIX}NAME, never the secret itself"
ID_RULE = "1-64 letters, digits and . _ - (starting with a letter or digit)"

# Fixed texts for the notice after a change: nothing from the URL but a known
# source id and whole numbers ever reaches the page.
NOTICES = {
    "created": "Source {source} created; its first poll is due now.",
    "saved": "Source {source} saved; it is polled again now.",
    "disabled": "Source {source} disabled: it is no longer polled, its events stay.",
    "enabled": "Source {source} enabled; it is polled now.",
    # Push sources (webhooks) are never polled: what changes is what they accept.
    "hook-created": "Source {source} created; senders post its events to /hooks/{source}.",
    "hook-saved": "Source {source} saved; the next delivery is mapped with it.",
    "hook-disabled": "Source {source} disabled: its deliveries are refused, its events stay.",
    "hook-enabled": "Source {source} enabled; it takes deliveries again.",
    "resumed": "Source {source} resumed; it is polled now.",
    "deleted": "Source deleted, with its {n} {events}.",
    "polled": "Polled {source}: {n} new {events}.",
    "poll-failed": "Polling {source} failed; the error is shown in its row.",
    "not-polled": "{source} could not be polled: the poller does not know it (yet).",
    "queued": "{source} is due now; a poller fetches it within a tick.",
    "imported": "OPML import: {created} created, {present} already present, {invalid} invalid.",
}


# --- forms generated from the options models ----------------------------------


@dataclass(frozen=True, slots=True)
class FormField:
    """One input of a source form; `name` is the key in the [[sources]] table."""

    name: str
    label: str
    widget: Widget
    required: bool = False
    help: str | None = None
    placeholder: str = ""
    choices: tuple[str, ...] = ()
    default: Any = None
    step: str = "1"  # for numbers: "1" or "any"
    is_option: bool = True  # the kind's option, not a key every source has

    @property
    def is_url(self) -> bool:
        return self.widget == "text" and (self.name == "url" or self.name.endswith("_url"))


def _unwrap(annotation: Any) -> Any:
    """`X | None` and `Annotated[X, ...]` -> X (a union of several stays a union)."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _widget(annotation: Any) -> tuple[Widget, tuple[str, ...], str]:
    """The input for a field's type: (widget, choices, number step)."""
    base = _unwrap(annotation)
    origin = get_origin(base)
    if base is bool:
        return "checkbox", (), "1"
    if base is int:
        return "number", (), "1"
    if base is float:
        return "number", (), "any"
    if origin is Literal:
        return "select", tuple(str(a) for a in get_args(base)), "1"
    if isinstance(base, type) and issubclass(base, Enum):
        return "select", tuple(str(m.value) for m in base), "1"
    if origin in (list, tuple, set, frozenset):
        return "list", (), "1"
    if origin is dict:
        # Values other than text (a field mapping's templates) get their own syntax.
        value = get_args(base)[1] if len(get_args(base)) == 2 else str
        return ("mapping" if value is str else "fieldmap"), (), "1"
    return "text", (), "1"


def _sentence(text: str | None) -> str | None:
    """A description as a hint: capitalised, unless it starts with a term like "http(s)"."""
    if not text or not text.split()[0].isalpha():
        return text
    return f"{text[:1].upper()}{text[1:]}"


def _label(name: str) -> str:
    words = name.replace("_", " ").capitalize()
    return re.sub(
        r"\b(?:url|id|tls|ssl|api|ca|imap)\b", lambda m: m.group(0).upper(), words, flags=re.I
    )


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return None if info.default is PydanticUndefined else info.default


def _model_field(model: type[BaseModel], name: str, info: FieldInfo) -> FormField:
    if is_secret_field(model, name):
        widget: Widget = "secret"
        choices: tuple[str, ...] = ()
        step = "1"
    else:
        widget, choices, step = _widget(info.annotation)
    return FormField(
        name=name,
        label=_label(name),
        widget=widget,
        required=info.is_required(),
        help=_sentence(info.description),
        placeholder=f"env:{WEB_ENV_PREFIX}NAME" if widget == "secret" else "",
        choices=choices,
        default=_default(info),
        step=step,
    )


def _common_fields(cls: ConnectorClass) -> dict[str, FormField]:
    audience = ", ".join(cls.default_audience) or ADMINS_ONLY
    return {
        "id": FormField(
            "id", "ID", "text",
            help=f"Used in queries as source:ID; {ID_RULE}. Made from the title when empty.",
            placeholder="eng-blog", is_option=False,
        ),
        "title": FormField(
            "title", "Title", "text", help="The name shown on the dashboard.", is_option=False
        ),
        "interval": FormField(
            "interval", "Interval", "text", placeholder="10m",
            help="How often to poll: 30s, 10m, 1h… (at least 5s; 10m when empty).",
            is_option=False,
        ),
        "cron": FormField(
            "cron", "Cron", "text", placeholder="*/5 8-18 * * mon-fri",
            help="Instead of an interval: poll on a schedule, e.g. business hours only.",
            is_option=False,
        ),
        "audience": FormField(
            "audience", "Audience", "list", placeholder=audience,
            help=f"Groups who see its events, comma-separated; everyone = every signed-in "
            f"user; {ADMINS_ONLY} = admins only; when empty: {audience}.",
            is_option=False,
        ),
        "tags": FormField(
            "tags", "Tags", "list", placeholder="engineering, urgent",
            help="Added to every event, comma-separated.", is_option=False,
        ),
        "track_updates": FormField(
            "track_updates", "Track updates", "checkbox", default=True,
            help="An item that changes upstream becomes an Update event.", is_option=False,
        ),
        "obey_hints": FormField(
            "obey_hints", "Follow the feed's pace", "checkbox", default=True,
            help="Its TTL, update period and caching headers may slow polling below the "
            "interval (Retry-After always does).", is_option=False,
        ),
        "retention": FormField(
            "retention", "Keep events for", "text", placeholder="365d",
            help="Events stored longer ago are deleted: 30d, 52w... (at least 1d); when "
            "empty, as the config file's [retention] says (by default, kept forever).",
            is_option=False,
        ),
        "enabled": FormField(
            "enabled", "Enabled", "checkbox", default=True, help="Polled on its schedule.",
            is_option=False,
        ),
    }  # fmt: skip


# Options only a config-file source may set (parse_source refuses them otherwise):
# the address rule's escape hatch, and paths on the server's disk.
FILE_ONLY_OPTIONS = frozenset(
    {
        "allow_link_local", "client_cert", "client_key", "client_key_password", "ca_bundle",
        "microsoft.authority",
    }
)  # fmt: skip


def _option_fields(cls: ConnectorClass) -> Iterator[FormField]:
    """A kind's options as inputs. A nested table (`[sources.pagination]`)
    becomes one input per key, named with a dot ("pagination.type"); a
    mapping kind's `preset` is a choice among the presets shipped for it."""
    for name, info in cls.Options.model_fields.items():
        if name in FILE_ONLY_OPTIONS:
            continue
        base = _unwrap(info.annotation)
        if isinstance(base, type) and issubclass(base, BaseModel):
            for sub, sub_info in base.model_fields.items():
                if f"{name}.{sub}" in FILE_ONLY_OPTIONS:
                    continue
                f = _model_field(base, sub, sub_info)
                yield replace(
                    f, name=f"{name}.{sub}", label=f"{_label(name)}: {f.label.lower()}",
                    required=False,
                )  # fmt: skip
        elif name == "preset" and issubclass(cls.Options, MappedOptions):
            choices = tuple(preset_names(cls.Options.preset_kind))
            yield replace(_model_field(cls.Options, name, info), widget="select", choices=choices)
        else:
            f = _model_field(cls.Options, name, info)
            # Only a mapping's `fields` has the "field: spec" syntax; another
            # table of values that are not all text (a POST body) is JSON.
            yield replace(f, widget="json") if f.widget == "fieldmap" and name != "fields" else f


# What only a polled source has: a push kind (webhook) is never polled.
POLL_ONLY = ("interval", "cron", "obey_hints")


def form_fields(cls: ConnectorClass) -> list[FormField]:
    """The inputs of a source form for kind `cls`, in display order."""
    common = _common_fields(cls)
    head = [common.pop("id"), common.pop("title")]
    if cls.push:
        for name in POLL_ONLY:
            del common[name]
    return [*head, *_option_fields(cls), *common.values()]


ADMINS_ONLY = "admins only"  # what the audience field says for [] (admins see every source)


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,\n]", text) if part.strip()]


def _parse_mapping(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon or not key.strip():
            raise ValueError(f"line {number}: write one “Name: value” per line")
        found[key.strip()] = value.strip()
    return found


_SPEC_PREFIXES = ("template", "value")  # "title: template: {user} did {what}"


def _parse_fieldmap(text: str) -> dict[str, Any]:
    """A field mapping, one "field: spec" per line: a JMESPath expression,
    or "template: ..." / "value: ..." (which no JMESPath expression starts with)."""
    found: dict[str, Any] = {}
    for name, spec in _parse_mapping(text).items():
        prefix, colon, rest = spec.partition(":")
        found[name] = {prefix: rest.strip()} if colon and prefix in _SPEC_PREFIXES else spec
    return found


def _fieldmap_text(value: Mapping[str, Any]) -> str:
    lines = []
    for name, spec in value.items():
        if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in _SPEC_PREFIXES:
            [(prefix, text)] = spec.items()
            spec = f"{prefix}: {text}"
        lines.append(f"{name}: {spec}")
    return "\n".join(lines)


def _put(raw: dict[str, Any], name: str, value: Any) -> None:
    """raw[name] = value, a dotted name going into a nested table."""
    *tables, key = name.split(".")
    for table in tables:
        raw = raw.setdefault(table, {})
    raw[key] = value


def _get(raw: Mapping[str, Any], name: str) -> Any:
    value: Any = raw
    for part in name.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _number(text: str, step: str) -> int | float | str:
    try:
        return int(text) if step == "1" else float(text)
    except ValueError:
        return text  # the model's own message says what is wrong with it


def _local(url: str) -> bool:
    return url.lower().startswith("file:")


@dataclass
class Submitted:
    """A posted source form: the table it makes, what to show back, what is wrong."""

    raw: dict[str, Any]
    values: dict[str, Any]
    errors: dict[str, str]


def read_form(fields: Iterable[FormField], form: FormData) -> Submitted:
    """Turn a posted form into a [[sources]] table. Empty inputs are left out
    (the model's defaults apply); so are values equal to the default, so the
    stored table stays as short as one written by hand."""
    raw: dict[str, Any] = {}
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in fields:
        if f.widget == "checkbox":
            checked = form.get(f.name) is not None
            values[f.name] = checked
            if checked != f.default:
                _put(raw, f.name, checked)
            continue
        given = form.get(f.name)
        text = given.strip() if isinstance(given, str) else ""
        values[f.name] = text
        if not text:
            continue
        if f.name == "audience" and text.lower() == ADMINS_ONLY:
            raw[f.name] = []
        elif f.widget == "list":
            _put(raw, f.name, _split_list(text))
        elif f.widget in ("mapping", "fieldmap"):
            try:
                parse = _parse_mapping if f.widget == "mapping" else _parse_fieldmap
                _put(raw, f.name, parse(text))
            except ValueError as err:
                errors[f.name] = str(err)
        elif f.widget == "json":
            try:
                value = json.loads(text)
            except ValueError as err:
                errors[f.name] = f"not JSON: {err}"
            else:
                if isinstance(value, dict):
                    _put(raw, f.name, value)
                else:
                    errors[f.name] = 'give a JSON object, such as {"query": "..."}'
        elif f.widget == "number":
            _put(raw, f.name, _number(text, f.step))
        else:
            _put(raw, f.name, text)
        if f.widget == "secret":
            if not is_secret_ref(text):
                values[f.name] = ""  # maybe a pasted secret: never sent back
        elif f.is_url and http_host(text) is None:
            errors[f.name] = NOT_LOCAL if _local(text) else NOT_HTTP
        elif f.is_option and f.widget == "text" and _local(text):
            errors[f.name] = NOT_LOCAL
    return Submitted(raw, values, errors)


def _tidy(message: str) -> str:
    return "required" if message == "Field required" else message


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def _problem_field(problem: str) -> tuple[str, str]:
    """`source.url: reason` -> ("url", "reason"); a problem naming no key -> FORM_ERROR.
    Keys below a field (`tags[0]`, `headers.X`) are kept in the message."""
    key, sep, reason = problem.partition(": ")
    if not sep:
        return FORM_ERROR, problem
    key = key.removeprefix("source").lstrip(".")
    if not key and "interval or cron" in reason:
        return "cron", reason
    match = _KEY.match(key)
    if match is None:
        return FORM_ERROR, _tidy(reason)
    rest = key[match.end() :]
    return match.group(0), (f"{rest.lstrip('.')}: " if rest else "") + _tidy(reason)


def _named_inside(name: str, message: str, known: set[str]) -> tuple[str, str]:
    """A check of a whole model names the key in its message ("fields.title:
    invalid JMESPath", [pagination]'s "param: not used by 'link' pagination"):
    the input of that key, when there is one."""
    head, sep, rest = message.partition(": ")
    if not sep or not _KEY.fullmatch(head):
        return name, message
    inner = head if name == FORM_ERROR else f"{name}.{head}"
    if inner in known or any(inner.startswith(f"{k}.") for k in known):
        return inner, rest
    return name, message


def _add_error(errors: dict[str, str], name: str, message: str, known: set[str]) -> None:
    if name == "id" and "should match pattern" in message:
        message = ID_RULE
    if name not in known:
        name, message = _named_inside(name, message, known)
    while name not in known and "." in name:  # "headers.X-Team": the headers input
        name, _, below = name.rpartition(".")
        message = f"{below}: {message}"
    if name not in known and name != FORM_ERROR:
        name, message = FORM_ERROR, f"{name}: {message}"
    if message not in errors.get(name, ""):
        errors[name] = f"{errors[name]}; {message}" if name in errors else message


def validate(
    cls: ConnectorClass, fields: list[FormField], submitted: Submitted
) -> SourceConfig | None:
    """The source the form describes, or None with every problem in
    `submitted.errors`, each under its field. The options are checked on
    their own too, so a bad id does not hide a bad URL."""
    known = {f.name for f in fields}
    errors = submitted.errors
    source = None
    try:
        source = parse_source(submitted.raw, "source", "db")
    except ConfigError as err:
        for problem in err.problems:
            _add_error(errors, *_problem_field(problem), known)
    options = {k: v for k, v in submitted.raw.items() if k not in SourceCommon.model_fields}
    try:
        cls.Options.model_validate(options)
    except ValidationError as err:
        for item in err.errors():
            where = ".".join(str(p) for p in item["loc"])
            _add_error(errors, *_problem_field(f"{where}: {item['msg']}"), known)
    for f in fields:  # the generic message names file:, which web sources may not use
        if f.widget == "secret" and f.name in errors:
            errors[f.name] = errors[f.name].replace(REF_MESSAGE, NOT_A_REFERENCE)
    return None if errors else source


def form_values(fields: Iterable[FormField], raw: Mapping[str, Any]) -> dict[str, Any]:
    """What a stored table looks like in the form (secrets stay references)."""
    values: dict[str, Any] = {}
    for f in fields:
        value = _get(raw, f.name)
        if value is None and f.widget == "checkbox":
            value = f.default
        if f.widget == "checkbox":
            values[f.name] = bool(value)
        elif value is None:
            values[f.name] = ""
        elif f.name == "audience" and value == []:
            values[f.name] = ADMINS_ONLY
        elif f.widget == "list" and isinstance(value, list | tuple):
            values[f.name] = ", ".join(str(v) for v in value)
        elif f.widget == "mapping" and isinstance(value, dict):
            values[f.name] = "\n".join(f"{k}: {v}" for k, v in value.items())
        elif f.widget == "fieldmap" and isinstance(value, dict):
            values[f.name] = _fieldmap_text(value)
        elif f.widget == "json" and isinstance(value, dict):
            values[f.name] = json.dumps(value, indent=2, ensure_ascii=False)
        elif f.widget == "secret":
            values[f.name] = value if isinstance(value, str) and is_secret_ref(value) else ""
        else:
            values[f.name] = str(value)
    return values


# --- ids --------------------------------------------------------------------------


def _suggested_id(raw: Mapping[str, Any], taken: set[str]) -> str:
    title = raw.get("title")
    url = raw.get("url")
    host = (http_host(url) or "") if isinstance(url, str) else ""
    base = slugify(title if isinstance(title, str) else "") or slugify(host)
    return unique_id(base, taken) if base else ""


# --- shared pieces of the endpoints ------------------------------------------------


def _actor(request: Request) -> str:
    principal = principal_of(request)
    assert principal is not None  # the guard let only admins in
    return principal.name


async def _statuses(state: AppState) -> list[SourceStatus]:
    return await asyncio.to_thread(
        partial(state.store.source_statuses, viewer=None, now=datetime.now(UTC))
    )


async def _status(state: AppState, source_id: str) -> SourceStatus | None:
    return next((s for s in await _statuses(state) if s.id == source_id), None)


def _notice_for(cls: ConnectorClass | None, notice: str) -> str:
    """The notice after a change, in the words of a push kind when it is one."""
    return f"hook-{notice}" if cls is not None and cls.push else notice


def _done(notice: str, **params: str | int) -> Response:
    query = urlencode({"notice": notice, **params})
    return RedirectResponse(f"/admin/sources?{query}", status_code=303)


def _message(request: Request, title: str, message: str, status_code: int) -> Response:
    return render(
        request,
        "admin/sources_message.html",
        {"title": title, "message": message},
        status_code=status_code,
    )


def _not_found(request: Request, source_id: str) -> Response:
    return _message(request, "No such source", f"There is no source {source_id!r}.", 404)


def _read_only(request: Request, source_id: str, err: TidingsError | None = None) -> Response:
    """The refusal to change a file source, naming the file (the store's words when it refused)."""
    config = app_state(request).config
    ours = any(s.id == source_id for s in config.sources) and config.path is not None
    where = str(config.path) if ours else "a config file"
    detail = str(err) if err else f"source {source_id!r} is defined in {where}; edit it there"
    return _message(request, "Defined in the config file", detail[:1].upper() + detail[1:], 409)


def _kind_class(kind: str) -> ConnectorClass | None:
    try:
        return connector_class(kind)
    except TidingsError:
        return None


def _presets(cls: ConnectorClass) -> list[Preset]:
    """The presets shipped for a mapping kind, for the kinds page and forms."""
    if not issubclass(cls.Options, MappedOptions):
        return []
    kind = cls.Options.preset_kind
    return [load_preset(kind, name) for name in preset_names(kind)]


def _chosen_preset(cls: ConnectorClass, values: Mapping[str, Any]) -> Preset | None:
    name = values.get("preset")
    return next((p for p in _presets(cls) if p.name == name), None)


def _inherited(fields: Iterable[FormField], preset: Preset | None) -> dict[str, str]:
    """The preset's value of each input, shown as what an empty one means
    (the form's own defaults would be wrong: the preset's apply)."""
    if preset is None:
        return {}
    shown = [f for f in fields if f.widget not in ("checkbox", "secret")]
    return {k: v for k, v in form_values(shown, preset.options).items() if v}


def _payload_preview(source: SourceConfig, doc: Any, event: str | None, now: datetime) -> Preview:
    """What a push source would store from one payload, storing nothing."""
    options = source.options
    if not isinstance(options, WebhookOptions):
        return Preview([], "this kind does not map payloads", now)
    try:
        mapped = map_payload(options, doc, event=event, delivery="test")
    except MappingError as err:
        return Preview([], f"{source.id}: {err}", now)
    if not mapped.events:
        why = describe_problems(source.id, mapped) if mapped.problems else None
        return Preview(
            [], why or "the mapping makes no event of this payload (a rule skips it)", now
        )
    warning = describe_problems(source.id, mapped) if mapped.problems else None
    return Preview(prepare(mapped.events, source.tags), None, now, warning=warning)


async def _sample_preview(
    state: AppState, source: SourceConfig, given: Mapping[str, str], source_id: str | None
) -> Preview:
    """A push source's Test: the pasted sample (`given`, from _sample_values),
    else the last payload received."""
    now = datetime.now(UTC)
    sample = given.get("sample", "")
    event = given.get("sample_event", "").strip() or None
    if sample.strip():
        try:
            doc = json.loads(sample)
        except ValueError as err:
            return Preview([], f"the sample is not JSON: {err}", now)
        return await asyncio.to_thread(_payload_preview, source, doc, event, now)
    last = await asyncio.to_thread(_last_payload, state, source_id) if source_id else None
    if last is None:
        return Preview([], "nothing was received yet: paste a sample payload to test with", now)
    doc, last_event = last
    return await asyncio.to_thread(_payload_preview, source, doc, event or last_event, now)


def _last_payload(state: AppState, source_id: str) -> tuple[Any, str | None] | None:
    stored, _ = state.store.source_state(source_id)
    last = (stored or {}).get("last_payload")
    if not isinstance(last, dict) or "body" not in last:
        return None
    event = last.get("event")
    return last["body"], event if isinstance(event, str) else None


def _sample_values(form: FormData) -> dict[str, str]:
    """A push source's pasted sample, shown back after a Test (never stored)."""
    return {k: v for k in ("sample", "sample_event") if isinstance(v := form.get(k), str)}


async def _test(
    state: AppState,
    cls: ConnectorClass,
    source: SourceConfig,
    form: FormData,
    source_id: str | None = None,
) -> Preview:
    if cls.push:
        return await _sample_preview(state, source, _sample_values(form), source_id)
    return await run_preview(state, source, find_feeds=True)


def _preview_cpu(state: AppState) -> Callable[..., Awaitable[Any]]:
    """run_cpu for a test poll in a process without a poller: a pool of one
    parser process of the app's own, with the poller's time budget."""

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        if state.preview_pool is None:
            state.preview_pool = process_pool(1)
        return await run_within(state.preview_pool, PARSE_BUDGET, fn, *args)

    return run


@asynccontextmanager
async def poll_context(state: AppState, source: SourceConfig) -> AsyncIterator[PollContext]:
    """The poller's context when this process polls; otherwise one of our own
    (its HTTP pool closed afterwards), with the same rule for local files."""
    now = datetime.now(UTC)
    if state.poller is not None:
        yield state.poller.context(source, now)
        return
    resources = Resources()
    config = state.config
    try:
        yield PollContext(
            source_id=source.id,
            now=now,
            resources=resources,
            run_cpu=_preview_cpu(state),
            http=config.http_settings,
            local_dirs=config.allowed_dirs if source.origin == "file" else (),
            base_dir=config.base_dir,
            web_made=source.origin != "file",
        )
    finally:
        await resources.aclose()


@dataclass(frozen=True, slots=True)
class Preview:
    items: list[Prepared]
    error: str | None
    now: datetime
    # When a feed source's URL answered with something else (a web page):
    # whether its feeds were looked for, and those found.
    looked: bool = False
    offers: tuple[FoundFeed, ...] = ()
    warning: str | None = None  # what of it could not be read, the events made anyway
    notes: tuple[str, ...] = ()  # what the test found about the source (IMAP: folders)

    def when(self, item: Prepared) -> datetime:
        return event_time(item.data, self.now)


async def _find_feeds(ctx: PollContext, source: SourceConfig) -> tuple[FoundFeed, ...] | None:
    """The feeds the page at a feed source's URL offers; None when that is
    not an http(s) feed source or the page cannot be read again."""
    url = getattr(source.options, "url", None)
    if source.kind != "feed" or not isinstance(url, str) or http_host(url) is None:
        return None
    try:
        async with asyncio.timeout(PREVIEW_TIMEOUT):
            found = await discover(
                await fetcher(ctx),
                url,
                headers=getattr(source.options, "headers", None),
                run_cpu=ctx.run_cpu,
            )
    except (FetchError, TimeoutError):
        return None  # the test's own error already says what is wrong
    return tuple(found)


async def run_preview(
    state: AppState, source: SourceConfig, *, find_feeds: bool = False
) -> Preview:
    """A test poll. `find_feeds`: when a feed source's URL is not a feed,
    offer the feeds that page declares or that answer at common paths."""
    async with poll_context(state, source) as ctx:
        try:
            dry = await preview_poll(source, ctx, PREVIEW_LIMIT)
        except ParseError as err:
            offers = await _find_feeds(ctx, source) if find_feeds else None
            if offers is None:
                return Preview([], str(err), ctx.now)
            return Preview([], str(err), ctx.now, looked=True, offers=offers)
        except ConnectorError as err:
            return Preview([], str(err), ctx.now)
        return Preview(dry.items, None, ctx.now, warning=dry.warning, notes=dry.notes)


async def _saved_source(state: AppState, source_id: str) -> SourceConfig | str | None:
    """A stored source, ready to poll; a message when it cannot be loaded; None
    when there is no such source."""
    for source in state.config.sources:
        if source.id == source_id:
            return source
    table = await asyncio.to_thread(state.store.source_table, source_id)
    if table is None:
        return None
    origin, raw = table
    if origin == "file":
        return "it is not in this server's config file (any more); test it with `tidings poll`"
    try:
        return parse_source(raw, f"source {source_id}", "db")
    except ConfigError as err:
        return f"its stored settings no longer validate: {err}"


# --- the list ------------------------------------------------------------------


def _notice(request: Request, statuses: list[SourceStatus]) -> str | None:
    params = request.query_params
    template = NOTICES.get(params.get("notice", ""))
    if template is None:
        return None
    ids = {s.id for s in statuses}
    given = params.get("source", "")
    numbers = {
        key: int(value) if (value := params.get(key, "0")).isdigit() else 0
        for key in ("n", "created", "present", "invalid")
    }
    events = "event" if numbers["n"] == 1 else "events"
    text = template.format(source=given if given in ids else "the source", events=events, **numbers)
    return text[:1].upper() + text[1:]


@dataclass(frozen=True, slots=True)
class MailboxView:
    """A mailbox source's sync, for its row: per folder (name, UIDVALIDITY,
    last UID synced), and its push watch when this process runs the poller."""

    folders: list[tuple[str, Any, Any]]
    watch: WatchStatus | None
    polled_here: bool


def _mailboxes(state: AppState, statuses: list[SourceStatus]) -> dict[str, MailboxView]:
    views = {}
    for s in statuses:
        cls = _kind_class(s.kind)
        if cls is None or not callable(getattr(cls, "watch", None)):
            continue
        stored, _ = state.store.source_state(s.id)
        folders = (stored or {}).get("folders")
        rows = [
            (name, f.get("uidvalidity"), f.get("last_uid"))
            for name, f in (folders.items() if isinstance(folders, dict) else ())
            if isinstance(f, dict)
        ]
        poller = state.poller
        views[s.id] = MailboxView(
            sorted(rows), poller.watch_status(s.id) if poller else None, poller is not None
        )
    return views


@guard("admin")
async def list_sources(request: Request) -> Response:
    state = app_state(request)
    statuses = await _statuses(state)
    mailboxes = await asyncio.to_thread(_mailboxes, state, statuses)
    now = datetime.now(UTC)
    return render(
        request,
        "admin/sources.html",
        {
            "sources": statuses,
            "kinds": sorted(connector_kinds()),
            "now": now,
            "until": partial(relative_time, now=now),
            "notice": _notice(request, statuses),
            "alert_after": state.config.poller.alert_after,
            "mailboxes": mailboxes,
            "push_kinds": {k for k, c in connector_kinds().items() if c.push},
        },
    )


# --- add and edit --------------------------------------------------------------


def _form_page(
    request: Request,
    *,
    cls: ConnectorClass,
    kind: str,
    fields: list[FormField],
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    source_id: str | None = None,
    preview: Preview | None = None,
    status_code: int = 200,
    sample: Mapping[str, str] | None = None,
) -> Response:
    base = str(request.base_url).rstrip("/")
    preset = _chosen_preset(cls, values)
    return render(
        request,
        "admin/sources_form.html",
        {
            "kind": kind,
            "preset": preset,
            "inherited": _inherited(fields, preset),
            "push": cls.push,
            "hook_url": f"{base}/hooks/{source_id}" if source_id else f"{base}/hooks/ID",
            "sample": sample or {},
            "fields": fields,
            "values": values,
            "errors": errors or {},
            "source_id": source_id,
            "preview": preview,
            "preview_limit": PREVIEW_LIMIT,
            "default_audience": ", ".join(cls.default_audience) or ADMINS_ONLY,
        },
        status_code=status_code,
    )


@guard("admin")
async def new_source(request: Request) -> Response:
    state = app_state(request)
    kinds = sorted(connector_kinds())
    kind = request.query_params.get("kind", "")
    if not kind and len(kinds) == 1 and request.method == "GET":
        return RedirectResponse(f"/admin/sources/new?kind={kinds[0]}", status_code=303)
    cls = _kind_class(kind)
    if cls is None:
        return render(
            request,
            "admin/sources_kinds.html",
            {
                "kinds": [(k, _presets(c)) for k in kinds if (c := _kind_class(k)) is not None],
                "unknown": kind or None,
            },
            status_code=404 if kind else 200,
        )
    fields = form_fields(cls)
    if request.method == "GET":
        # ?preset=NAME (from the kinds page) starts the form from that preset.
        preset = request.query_params.get("preset", "")
        start = {"preset": preset} if preset in {p.name for p in _presets(cls)} else {}
        return _form_page(
            request, cls=cls, kind=kind, fields=fields, values=form_values(fields, start)
        )
    form = await request.form()
    submitted = read_form(fields, form)
    submitted.raw["kind"] = kind
    if "id" not in submitted.raw:
        taken = {s.id.lower() for s in await _statuses(state)}
        suggested = _suggested_id(submitted.raw, taken)
        if suggested:
            submitted.raw["id"] = suggested
        else:
            submitted.errors["id"] = "give an id, or a title to make one from"
    source = validate(cls, fields, submitted)
    page = partial(
        _form_page,
        request,
        cls=cls,
        kind=kind,
        fields=fields,
        values=submitted.values,
        sample=_sample_values(form),
    )
    if source is None:
        return page(errors=submitted.errors, status_code=400)
    if form.get("action") == "test":
        return page(preview=await _test(state, cls, source, form))
    try:
        await asyncio.to_thread(
            partial(
                state.store.create_source,
                submitted.raw,
                actor=_actor(request),
                now=datetime.now(UTC),
            )
        )
    except ConfigError as err:  # the id was taken meanwhile
        errors: dict[str, str] = {}
        for problem in err.problems:
            _add_error(errors, *_problem_field(problem), {f.name for f in fields})
        return page(errors=errors, status_code=400)
    await state.access.reload()
    return _done(_notice_for(cls, "created"), source=source.id)


@guard("admin")
async def edit_source(request: Request) -> Response:
    state = app_state(request)
    source_id = request.path_params["source_id"]
    table = await asyncio.to_thread(state.store.source_table, source_id)
    if table is None:
        return _not_found(request, source_id)
    origin, stored = table
    if origin == "file":
        return _read_only(request, source_id)
    kind = str(stored.get("kind", ""))
    cls = _kind_class(kind)
    if cls is None:
        return _message(
            request,
            "Unknown kind",
            f"Source {source_id!r} is of kind {kind!r}, which is not installed.",
            409,
        )
    fields = [f for f in form_fields(cls) if f.name != "id"]
    if request.method == "GET":
        return _form_page(
            request,
            cls=cls,
            kind=kind,
            fields=fields,
            values=form_values(fields, stored),
            source_id=source_id,
        )
    form = await request.form()
    submitted = read_form(fields, form)
    submitted.raw.update(id=source_id, kind=kind)
    source = validate(cls, fields, submitted)
    page = partial(
        _form_page,
        request,
        cls=cls,
        kind=kind,
        fields=fields,
        values=submitted.values,
        source_id=source_id,
        sample=_sample_values(form),
    )
    if source is None:
        return page(errors=submitted.errors, status_code=400)
    if form.get("action") == "test":
        return page(preview=await _test(state, cls, source, form, source_id))
    try:
        await asyncio.to_thread(
            partial(
                state.store.update_source,
                source_id,
                submitted.raw,
                actor=_actor(request),
                now=datetime.now(UTC),
            )
        )
    except TidingsError as err:  # taken over by the config file meanwhile
        return _read_only(request, source_id, err)
    await state.access.reload()
    return _done(_notice_for(cls, "saved"), source=source_id)


# --- disable, enable, delete -----------------------------------------------------


async def _set_enabled(request: Request, enabled: bool) -> Response:
    state = app_state(request)
    source_id = request.path_params["source_id"]
    status = await _status(state, source_id)
    if status is None:
        return _not_found(request, source_id)
    try:
        await asyncio.to_thread(
            partial(
                state.store.set_source_enabled,
                source_id,
                enabled,
                actor=_actor(request),
                now=datetime.now(UTC),
            )
        )
    except TidingsError as err:
        return _read_only(request, source_id, err)
    await state.access.reload()
    notice = _notice_for(_kind_class(status.kind), "enabled" if enabled else "disabled")
    return _done(notice, source=source_id)


@guard("admin")
async def enable_source(request: Request) -> Response:
    return await _set_enabled(request, True)


@guard("admin")
async def disable_source(request: Request) -> Response:
    return await _set_enabled(request, False)


@guard("admin")
async def resume_source(request: Request) -> Response:
    """Poll again a source the poller stopped (410 Gone). File sources too:
    the file did not stop it, so the file is not where it is resumed."""
    state = app_state(request)
    source_id = request.path_params["source_id"]
    status = await _status(state, source_id)
    if status is None or status.origin == "system":
        return _not_found(request, source_id)
    await asyncio.to_thread(
        partial(state.store.resume_source, source_id, actor=_actor(request), now=datetime.now(UTC))
    )
    return _done("resumed", source=source_id)


@guard("admin")
async def delete_source(request: Request) -> Response:
    state = app_state(request)
    source_id = request.path_params["source_id"]
    status = await _status(state, source_id)
    if status is None:
        return _not_found(request, source_id)
    if status.origin == "file":
        return _read_only(request, source_id)
    if request.method == "GET":
        return render(request, "admin/sources_delete.html", {"source": status})
    try:
        gone = await asyncio.to_thread(
            partial(
                state.store.delete_source, source_id, actor=_actor(request), now=datetime.now(UTC)
            )
        )
    except TidingsError as err:
        return _read_only(request, source_id, err)
    await state.access.reload()
    return _done("deleted", n=gone)


# --- poll now, test ----------------------------------------------------------------


@guard("admin")
async def poll_source_now(request: Request) -> Response:
    state = app_state(request)
    source_id = request.path_params["source_id"]
    status = await _status(state, source_id)
    if status is None:
        return _not_found(request, source_id)
    if not status.enabled:
        return _message(
            request, "Source disabled", f"Source {source_id!r} is disabled; enable it first.", 409
        )
    cls = _kind_class(status.kind)
    if cls is not None and cls.push:  # due, it would be "polled" by a poller elsewhere
        return _message(
            request,
            "Not polled",
            f"Source {source_id!r} is not polled: its events arrive at /hooks/{source_id}.",
            409,
        )
    if state.poller is None:  # serve --no-poller: a `tidings poller` elsewhere takes it
        await asyncio.to_thread(state.store.set_next_poll, [source_id], datetime.now(UTC))
        return _done("queued", source=source_id)
    outcomes = await state.poller.poll_now([source_id])
    if not outcomes:
        return _done("not-polled", source=source_id)
    if outcomes[0].error is not None:
        return _done("poll-failed", source=source_id)
    return _done("polled", source=source_id, n=len(outcomes[0].new_event_ids))


@guard("admin")
async def test_source(request: Request) -> Response:
    state = app_state(request)
    source_id = request.path_params["source_id"]
    found = await _saved_source(state, source_id)
    if found is None:
        return _not_found(request, source_id)
    if isinstance(found, str):
        return _message(request, "Cannot test this source", f"{source_id}: {found}", 409)
    cls = _kind_class(found.kind)
    push = cls is not None and cls.push  # nothing to poll: the last payload received
    return render(
        request,
        "admin/sources_preview.html",
        {
            "source": found,
            "preview": await (
                _sample_preview(state, found, {}, source_id) if push else run_preview(state, found)
            ),
            "preview_limit": PREVIEW_LIMIT,
            "push": push,
        },
    )


# --- OPML import and export ----------------------------------------------------------


async def _opml_bytes(form: FormData) -> bytes:
    upload = form.get("file")
    if isinstance(upload, UploadFile) and upload.filename:
        return await upload.read()
    pasted = form.get("opml")
    return pasted.strip().encode() if isinstance(pasted, str) else b""


@guard("admin")
async def import_opml(request: Request) -> Response:
    state = app_state(request)
    if request.method == "GET":
        return render(request, "admin/sources_import.html", {"audience": "everyone"})
    form = await request.form()
    try:
        return await _import(request, state, form)
    finally:
        await form.close()  # an uploaded file is spooled to disk


async def _import(request: Request, state: AppState, form: FormData) -> Response:
    audience_text = form.get("audience")
    audience_text = audience_text.strip() if isinstance(audience_text, str) else ""
    audience = _split_list(audience_text)
    errors: dict[str, str] = {}
    data = await _opml_bytes(form)
    subscriptions = None
    if not data:
        errors["opml"] = "choose an OPML file or paste one"
    else:
        try:
            subscriptions = await asyncio.to_thread(parse_opml, data)
        except OpmlError as err:
            errors["opml"] = str(err)
    if not audience:
        errors["audience"] = "name at least one group, or everyone"
    for problem in audience_problems(audience) if audience else ():
        _add_error(errors, *_problem_field(problem), {"audience"})
    if errors or subscriptions is None:
        return render(
            request,
            "admin/sources_import.html",
            {"audience": audience_text, "errors": errors},
            status_code=400,
        )
    result: ImportResult = await asyncio.to_thread(
        partial(
            import_feeds,
            state.store,
            subscriptions,
            audience=audience,
            actor=_actor(request),
            now=datetime.now(UTC),
        )
    )
    if result.created:
        await state.access.reload()
    if result.problems:  # the outlines to fix, by line, with what was made of the rest
        return render(
            request,
            "admin/sources_import.html",
            {"audience": audience_text, "result": result},
        )
    return _done(
        "imported", created=len(result.created), present=result.present, invalid=result.invalid
    )


@guard("admin")
async def export_sources_opml(request: Request) -> Response:
    """Every feed source as OPML 2.0, the same document as `tidings export-opml`."""
    state = app_state(request)
    export = await asyncio.to_thread(partial(export_opml, state.store, now=datetime.now(UTC)))
    return Response(
        export.document,
        media_type="text/x-opml",
        headers={
            "Content-Disposition": 'attachment; filename="tidings-sources.opml"',
            "Cache-Control": "private, no-store",
        },
    )


routes: list[BaseRoute] = [
    Route("/admin/sources", list_sources),
    Route("/admin/sources/new", new_source, methods=["GET", "POST"]),
    Route("/admin/sources/import", import_opml, methods=["GET", "POST"]),
    Route("/admin/sources/export.opml", export_sources_opml),
    Route("/admin/sources/{source_id}/edit", edit_source, methods=["GET", "POST"]),
    Route("/admin/sources/{source_id}/disable", disable_source, methods=["POST"]),
    Route("/admin/sources/{source_id}/enable", enable_source, methods=["POST"]),
    Route("/admin/sources/{source_id}/resume", resume_source, methods=["POST"]),
    Route("/admin/sources/{source_id}/delete", delete_source, methods=["GET", "POST"]),
    Route("/admin/sources/{source_id}/poll", poll_source_now, methods=["POST"]),
    Route("/admin/sources/{source_id}/test", test_source, methods=["POST"]),
]
