"""Loading and validating the TOML config.

Unknown keys are errors, and every error names the file, the key and the
reason, so `tidings check-config` can point at the exact line to fix.
Relative paths (the SQLite file, `files.allowed_dirs`) are resolved against
the directory of the config file, not the working directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from limits import parse as parse_rate
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from aggregator.accounts import EVERYONE, check_group_name
from aggregator.connector import ConnectorOptions, HttpSettings
from aggregator.durations import parse_duration
from aggregator.exceptions import AccountError, ConfigError, TidingsError
from aggregator.registry import connector_class
from aggregator.schedule import cron_trigger
from aggregator.secrets import WEB_REF_MESSAGE, SecretRef, is_secret_field, web_ref_allowed

SOURCE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# The admins-only source failing sources raise alerts in (migration 0006): no
# config file or admin may define a source of that id and see its events.
ALERTS_SOURCE = "tidings-alerts"
MIN_INTERVAL = 5.0
MIN_RETENTION = 86400.0  # a day: a typo such as "30m" for "30d" must not empty the store


_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    heartbeat: float = Field(default=20.0, gt=0, description="seconds between websocket pings")
    client_queue: int = Field(default=1000, ge=1, description="events buffered per websocket")
    send_timeout: float = Field(
        default=10.0, gt=0, description="seconds a websocket frame may wait for its client to read"
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names this server answers to, besides localhost"
    )
    max_request_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="largest request body accepted"
    )

    @property
    def trusted_hosts(self) -> list[str]:
        """Host headers to accept: refusing others defeats DNS rebinding."""
        local = ["localhost", "127.0.0.1", "::1", "[::1]"]
        wildcard = ("0.0.0.0", "::", "")  # noqa: S104 - naming it, not binding to it
        own = [] if self.host in wildcard else [self.host]
        return list(dict.fromkeys([*local, *own, *self.allowed_hosts]))


class StoreConfig(_Strict):
    url: str = "sqlite:///var/tidings.db"


class PollerConfig(_Strict):
    enabled: bool = True
    tick: float = Field(default=1.0, gt=0, description="seconds between looks at the due-list")
    concurrency: int = Field(default=16, ge=1, description="polls in flight at once")
    workers: int = Field(default=0, ge=0, description="parser processes; 0 = one per core")
    max_interval: str = Field(
        default="24h",
        description="the longest a source's own hints (TTL, max-age, Expires, Retry-After, "
        "sy:updatePeriod) may push its next poll",
    )
    max_backoff: str = Field(default="6h", description="the longest wait after failed polls")
    alert_after: int = Field(
        default=5, ge=1, description="consecutive failures that raise an alert to admins"
    )
    adopt_redirects: bool = Field(
        default=False,
        description="follow a permanent redirect (301/308) by changing the source's URL "
        "(web-made sources; audited) instead of only reporting it",
    )

    @field_validator("max_interval", "max_backoff")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def max_interval_seconds(self) -> float:
        return parse_duration(self.max_interval)

    @property
    def max_backoff_seconds(self) -> float:
        return parse_duration(self.max_backoff)


def _retention_period(value: str | None) -> str | None:
    """A retention setting: a duration of at least MIN_RETENTION."""
    if value is not None and parse_duration(value) < MIN_RETENTION:
        raise ValueError("must be at least 1d")
    return value


class RetentionConfig(_Strict):
    """The `[retention]` table (issue 13): how long events are kept."""

    events: str | None = Field(
        default=None,
        description="events stored longer ago than this are deleted (at least 1d), unless "
        "their source sets its own `retention`; default: kept forever",
    )

    @field_validator("events")
    @classmethod
    def _events(cls, value: str | None) -> str | None:
        return _retention_period(value)

    @property
    def events_seconds(self) -> float | None:
        return parse_duration(self.events) if self.events is not None else None


class HttpConfig(_Strict):
    """The `[http]` table; its defaults are HttpSettings' (one source of truth)."""

    connect_timeout: float = Field(default=HttpSettings.connect_timeout, gt=0)
    read_timeout: float = Field(default=HttpSettings.read_timeout, gt=0)
    total_timeout: float = Field(default=HttpSettings.total_timeout, gt=0)
    max_body_bytes: int = Field(default=HttpSettings.max_body_bytes, gt=0)
    per_host: int = Field(default=HttpSettings.per_host, ge=1)
    user_agent: str = HttpSettings.user_agent


class FilesConfig(_Strict):
    allowed_dirs: list[str] = Field(default_factory=list)


class AuthConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    secret_key: SecretRef | None = Field(
        default=None, description="session signing key; default: generated, kept in the store"
    )
    session_days: float = Field(default=14.0, gt=0, description="how long a sign-in lasts")
    login_limit: str = Field(
        default="5/minute", description="failed sign-ins allowed per user name and address"
    )
    proxy_header: str | None = Field(
        default=None, description="header naming the user, set by a trusted SSO reverse proxy"
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list, description="addresses allowed to set proxy_header"
    )
    proxy_creates_users: bool = Field(
        default=False, description="create a member on a proxy user's first visit"
    )

    @field_validator("login_limit")
    @classmethod
    def _limit(cls, value: str) -> str:
        try:
            parse_rate(value)
        except ValueError:
            raise ValueError("must look like '5/minute'") from None
        return value

    @model_validator(mode="after")
    def _proxies(self) -> AuthConfig:
        if self.proxy_header and not self.trusted_proxies:
            raise ValueError("proxy_header needs trusted_proxies")
        return self


class SourceCommon(BaseModel):
    """Keys every source has; the rest belong to its kind's options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(pattern=SOURCE_ID_PATTERN)
    kind: str
    title: str | None = None
    interval: str | None = None
    cron: str | None = None
    audience: list[str] | None = None  # None: the connector's default_audience
    tags: list[str] = Field(default_factory=list)
    enabled: bool = True
    track_updates: bool = True
    obey_hints: bool = True
    retention: str | None = None  # None: [retention] events

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str | None) -> str | None:
        return _retention_period(value)

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) < MIN_INTERVAL:
            raise ValueError(f"must be at least {MIN_INTERVAL:g}s")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            cron_trigger(value)
        return value

    @field_validator("audience")
    @classmethod
    def _audience(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if name != EVERYONE:
                try:
                    check_group_name(name)
                except AccountError as err:
                    raise ValueError(f"{name!r}: {err}") from None
        return value


@dataclass(frozen=True)
class SourceConfig:
    """One source, validated: common keys plus its kind's options."""

    id: str
    kind: str
    options: ConnectorOptions
    title: str | None = None
    interval: float = 600.0
    cron: str | None = None
    audience: tuple[str, ...] = ("everyone",)
    tags: tuple[str, ...] = ()
    enabled: bool = True
    track_updates: bool = True
    # The source's own pacing (TTL, sy:updatePeriod, max-age, Expires) slows
    # polling down; off for a system whose feed says "hourly" but changes
    # by the minute. Retry-After is obeyed either way.
    obey_hints: bool = True
    # Seconds its events are kept; None: as `[retention] events` says.
    retention: float | None = None
    origin: Literal["file", "db", "system"] = "file"

    @property
    def name(self) -> str:
        return self.title or self.id


@dataclass(frozen=True)
class Config:
    path: Path | None
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    poller: PollerConfig = field(default_factory=PollerConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    sources: tuple[SourceConfig, ...] = ()

    @property
    def source_file(self) -> str | None:
        """How the store tells this file's sources from another file's."""
        return str(self.path) if self.path else None

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    @property
    def allowed_dirs(self) -> tuple[Path, ...]:
        return tuple((self.base_dir / d).resolve() for d in self.files.allowed_dirs)

    @property
    def http_settings(self) -> HttpSettings:
        return HttpSettings(**self.http.model_dump())

    @property
    def store_url(self) -> str:
        """The store URL with a relative SQLite path made absolute."""
        url = self.store.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.base_dir / url[len(prefix) :])
        return url


_TABLES: dict[str, type[BaseModel]] = {
    "server": ServerConfig,
    "store": StoreConfig,
    "poller": PollerConfig,
    "http": HttpConfig,
    "files": FilesConfig,
    "auth": AuthConfig,
    "retention": RetentionConfig,
}


def _problem(item: ErrorDetails, prefix: str) -> str:
    key = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"])
    msg = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
    msg = msg.removeprefix("Value error, ")  # pydantic's wording, not ours
    return f"{key.lstrip('.')}: {msg}"


def _describe(err: ValidationError, prefix: str) -> list[str]:
    return [_problem(item, prefix) for item in err.errors()]


def _validate(model: type[_M], data: Any, where: str) -> _M:
    """`model.model_validate`, raising ConfigError with every problem. Pydantic
    skips a model's cross-field checks while any field is wrong, so they run
    again without the wrong fields; what they find is added unless it is
    about one of those fields (already reported)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = _describe(err, where)
        wrong = {str(item["loc"][0]) for item in err.errors() if item["loc"]}
        if isinstance(data, Mapping) and wrong & set(data):
            try:
                model.model_validate({k: v for k, v in data.items() if k not in wrong})
            except ValidationError as again:
                for item in again.errors():
                    problem = _problem(item, where)
                    if problem not in problems and not _mentions(item, wrong):
                        problems.append(problem)
        raise ConfigError(problems) from None


def _mentions(item: ErrorDetails, keys: set[str]) -> bool:
    return (bool(item["loc"]) and str(item["loc"][0]) in keys) or any(
        re.search(rf"\b{re.escape(key)}\b", item["msg"]) for key in keys
    )


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, str)]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else []


def _pasted_secrets(options: BaseModel, where: str) -> list[str]:
    """A web-made source's secrets must be references it may use; a nested
    table's (`[sources.microsoft]`) are checked too."""
    found = []
    for name in type(options).model_fields:
        value = getattr(options, name)
        if isinstance(value, BaseModel):
            found += _pasted_secrets(value, f"{where}.{name}")
        elif (
            is_secret_field(type(options), name)
            and value is not None
            and not all(web_ref_allowed(v) for v in _strings(value))
        ):
            found.append(f"{where}.{name}: {WEB_REF_MESSAGE}")
    return found


def parse_source(raw: Mapping[str, Any], where: str, origin: Literal["file", "db"]) -> SourceConfig:
    """Validate one source table; raise ConfigError listing every problem:
    the common keys' and the kind's options' are all reported in one go."""
    problems: list[str] = []
    common = options = None
    try:
        common = _validate(SourceCommon, raw, where)
    except ConfigError as err:
        problems += err.problems
    if not isinstance(raw, Mapping):
        raise ConfigError(problems)
    if raw.get("id") == ALERTS_SOURCE:
        problems.append(f"{where}.id: {ALERTS_SOURCE!r} is reserved for Tidings' own alerts")
    if raw.get("interval") is not None and raw.get("cron") is not None:
        problems.append(f"{where}: give either interval or cron, not both")
    cls = None
    if isinstance(kind := raw.get("kind"), str):
        try:
            cls = connector_class(kind)
        except TidingsError as err:
            problems.append(f"{where}.kind: {err}")
    if cls is not None:
        extra = {k: v for k, v in raw.items() if k not in SourceCommon.model_fields}
        try:
            options = _validate(cls.Options, extra, where)
        except ConfigError as err:
            problems += err.problems
    if options is not None and origin == "db":
        problems += _web_refusals(options, raw.get("kind"), where)
    if problems or common is None or options is None or cls is None:
        raise ConfigError(problems)
    return SourceConfig(
        id=common.id,
        kind=common.kind,
        options=options,
        title=common.title,
        interval=parse_duration(common.interval) if common.interval else 600.0,
        cron=common.cron,
        audience=(tuple(common.audience) if common.audience is not None else cls.default_audience),
        tags=tuple(common.tags),
        enabled=common.enabled,
        track_updates=common.track_updates,
        obey_hints=common.obey_hints,
        retention=parse_duration(common.retention) if common.retention else None,
        origin=origin,
    )


def _web_refusals(options: ConnectorOptions, kind: Any, where: str) -> list[str]:
    """What a source made in the web admin may not do, though a config
    file's may."""
    refused = _pasted_secrets(options, where)
    url = getattr(options, "url", None)
    if isinstance(url, str) and urlsplit(url).scheme.lower() not in ("http", "https"):
        # Defence in depth: their polls get no local directories either.
        refused.append(f"{where}.url: sources made in the web admin fetch http(s) URLs only")
    if getattr(options, "allow_link_local", False):
        refused.append(f"{where}.allow_link_local: only sources in the config file may set it")
    for name in ("ca_bundle", "client_cert", "client_key"):  # files on the server's disk
        if getattr(options, name, None) is not None:
            refused.append(f"{where}.{name}: only sources in the config file may name files")
    if getattr(options, "auth", None) == "negotiate" and not getattr(options, "username", ""):
        refused.append(
            f"{where}.auth: negotiate without username and password uses the server's own "
            "Kerberos credentials; only sources in the config file may do that"
        )
    if getattr(getattr(options, "microsoft", None), "authority", None) is not None:
        refused.append(
            f"{where}.microsoft.authority: the server would send the client secret there; "
            "only sources in the config file may set it"
        )
    if getattr(options, "token_command", None) is not None:
        refused.append(
            f"{where}.token_command: runs a command on the server; "
            "only sources in the config file may do that"
        )
    if kind == "webhook" and getattr(options, "signature", None) == "none":
        refused.append(
            f"{where}.signature: an unsigned webhook takes events from anyone; "
            "only sources in the config file may accept that"
        )
    return refused


def parse_config(data: Mapping[str, Any], path: Path | None = None) -> Config:
    """The config in `data`, or ConfigError with every problem it has."""
    problems: list[str] = []
    tables: dict[str, Any] = {}
    for key, value in data.items():
        if key == "sources":
            continue
        model = _TABLES.get(key)
        if model is None:
            problems.append(f"{key}: unknown key")
            continue
        try:
            tables[key] = _validate(model, value, key)
        except ConfigError as err:
            problems += err.problems
    parsed: list[SourceConfig] = []
    # Each source's url or path, checked below even when the source has
    # other problems; the key is None where a problem already names it.
    locations: list[tuple[str, str]] = []
    raw_sources = data.get("sources", [])
    if not isinstance(raw_sources, list):
        problems.append("sources: must be an array of tables ([[sources]])")
        raw_sources = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_sources):
        where = f"sources[{index}]"
        try:
            source = parse_source(raw, where, "file")
        except ConfigError as err:
            problems += err.problems
            given = raw if isinstance(raw, Mapping) else {}
            locations += [
                (f"{where}.{key}", value)
                for key in LOCATION_KEYS
                if isinstance(value := given.get(key), str)
                and not any(p.startswith(f"{where}.{key}:") for p in err.problems)
            ]
        else:
            parsed.append(source)
            locations += [
                (f"{where}.{key}", value)
                for key in LOCATION_KEYS
                if isinstance(value := getattr(source.options, key, None), str)
            ]
        source_id = raw.get("id") if isinstance(raw, Mapping) else None
        if isinstance(source_id, str) and source_id in seen:
            problems.append(f"{where}.id: duplicate source id {source_id!r}")
        seen.add(str(source_id))
    config = Config(path=path, sources=tuple(parsed), **tables)
    if "files" in tables or "files" not in data:  # else its own problem is reported
        problems += _location_problems(config, locations)
    if problems:
        raise ConfigError(problems, str(path) if path else None)
    return config


WEB_SCHEMES = ("http", "https")
LOCATION_KEYS = ("url", "path")  # the options that say where a source reads


def _location_problems(config: Config, locations: list[tuple[str, str]]) -> list[str]:
    """What a poll would refuse from the config alone, refused here instead
    (check-config, start-up): a protocol no connector speaks, and a local
    file outside `[files] allowed_dirs`. `locations` holds each source's
    `url` or `path` with its key; an http(s) URL is left to the fetcher."""
    problems: list[str] = []
    for where, location in locations:
        scheme = urlsplit(location).scheme.lower()
        if scheme in WEB_SCHEMES:
            continue
        if scheme not in ("file", "") or (where.endswith(".path") and scheme):
            problems.append(
                f"{where}: unsupported protocol {scheme!r}: http, https, or a file "
                "under [files] allowed_dirs"
            )
        elif problem := _outside_allowed(config, location):
            problems.append(f"{where}: {problem}")
    return problems


def _outside_allowed(config: Config, location: str) -> str | None:
    from connectors.files import local_path, refusal  # connectors import this module

    path = local_path(location) or Path(location)
    _, reason = refusal(path, config.base_dir, config.allowed_dirs)
    return f"{location}: {reason}" if reason else None


def load_config(path: str | os.PathLike[str]) -> Config:
    file = Path(path).resolve()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(["file not found"], str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([f"cannot read: {err}"], str(path)) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"not valid TOML: {err}"], str(path)) from None
    return parse_config(data, file)


def default_config_path() -> str:
    return os.environ.get("TIDINGS_CONFIG") or "config.toml"
