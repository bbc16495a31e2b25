"""Finds connector kinds: the entry-point group `tidings.connectors`.

Built-ins register there too, so a third-party kind is one `pip install` away.
Set TIDINGS_DISABLE_PLUGINS=1 (the test suite does) to load only the built-ins,
so an unrelated installed plugin cannot change results.
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from aggregator.connector import Connector
from aggregator.exceptions import TidingsError

GROUP = "tidings.connectors"
BUILTIN_MODULE_PREFIX = "connectors."

ConnectorClass = type[Connector[Any]]


@cache
def connector_kinds() -> dict[str, ConnectorClass]:
    only_builtins = os.environ.get("TIDINGS_DISABLE_PLUGINS") == "1"
    kinds: dict[str, ConnectorClass] = {}
    for ep in entry_points(group=GROUP):
        if only_builtins and not ep.value.startswith(BUILTIN_MODULE_PREFIX):
            continue
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise TidingsError(f"entry point {ep.name!r} in {GROUP} is not a Connector class")
        kinds[ep.name] = cls
    return kinds


def connector_class(kind: str) -> ConnectorClass:
    try:
        return connector_kinds()[kind]
    except KeyError:
        known = ", ".join(sorted(connector_kinds())) or "none installed"
        raise TidingsError(f"unknown source kind {kind!r} (known: {known})") from None


def is_push(kind: str) -> bool:
    """Whether `kind` receives its events and is never polled (False for a
    kind not installed here, which the poller hands back)."""
    cls = connector_kinds().get(kind)
    return cls is not None and cls.push


def first_poll(kind: str, now: datetime) -> datetime | None:
    """When a new or changed source of `kind` is due: now, or never for a push kind."""
    return None if is_push(kind) else now
