"""The connector contract: how a source kind plugs into Tidings.

A connector kind is a class registered under a name in the entry-point group
`tidings.connectors` (the built-ins register there too). It declares its
options as a pydantic model, validated when the config loads, and implements
`poll`. `poll` does I/O and parsing only: it never touches the store. The
state it returns is stored in the same transaction as the events it found.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from aggregator import PROJECT_URL, __version__
from aggregator.secrets import resolve_secret
from aggregator.types import JSONObject, PollResult

T = TypeVar("T")


class ConnectorOptions(BaseModel):
    """Base for every connector's options: unknown keys are errors."""

    # hide_input_in_errors: a mistyped option may be a pasted secret.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


OptionsT = TypeVar("OptionsT", bound=ConnectorOptions)


class Resources:
    """Long-lived objects connectors share (an HTTP pool), opened on first use
    and closed when the poller stops."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._stack = AsyncExitStack()
        self._lock = asyncio.Lock()

    async def get(self, key: str, factory: Callable[[], AbstractAsyncContextManager[T]]) -> T:
        async with self._lock:
            if key not in self._items:
                self._items[key] = await self._stack.enter_async_context(factory())
            item: T = self._items[key]
            return item

    async def aclose(self) -> None:
        self._items.clear()
        await self._stack.aclose()


@dataclass(frozen=True)
class HttpSettings:
    """Global limits of the shared HTTP fetcher (the `[http]` config table)."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 60.0  # the whole fetch, redirects and a dripped body included
    max_body_bytes: int = 16 * 1024 * 1024
    per_host: int = 4
    user_agent: str = f"Tidings/{__version__} (+{PROJECT_URL})"


@dataclass(frozen=True)
class PollContext:
    """Everything a poll may use besides its own options and state.

    `run_cpu(fn, *args)` runs a picklable CPU-heavy function off the event loop
    (a process pool when one is configured). `local_dirs` lists the directories
    this source may read local files from: empty for sources created in the web
    admin, so they can never read the server's disk.
    """

    source_id: str
    now: datetime
    resources: Resources
    run_cpu: Callable[..., Awaitable[Any]]
    http: HttpSettings = field(default_factory=HttpSettings)
    local_dirs: tuple[Path, ...] = ()
    base_dir: Path = field(default_factory=Path.cwd)  # relative file paths start here
    web_made: bool = False  # made in the web admin: narrower secret and file rules

    async def secret(self, ref: str) -> str:
        """Resolve a secret reference under this source's rules (see aggregator.secrets)."""
        return await asyncio.to_thread(resolve_secret, ref, self.base_dir, web_made=self.web_made)


class Connector(ABC, Generic[OptionsT]):
    """One source kind. Instances are built per source with validated options."""

    kind: ClassVar[str]
    Options: ClassVar[type[ConnectorOptions]]
    # Who sees a source's events when its config names no audience; mailbox
    # kinds override it with () (admins only).
    default_audience: ClassVar[tuple[str, ...]] = ("everyone",)
    # Push kinds (webhooks) receive their events; the poller never claims them.
    push: ClassVar[bool] = False

    def __init__(self, options: OptionsT) -> None:
        self.options = options

    @classmethod
    def carry_state(cls, state: JSONObject | None) -> JSONObject | None:
        """What of a source's state survives a change of its options (a new
        URL, new credentials): by default nothing, so nothing cached for the
        old options (an ETag, a cursor) applies to the new ones. A kind that
        keeps something that must outlive such a change (how it identifies
        items) returns it here."""
        return None

    @abstractmethod
    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        """Fetch and parse what is new since `state`. Raise ConnectorError on failure."""

    async def preview(self, ctx: PollContext, limit: int) -> PollResult:
        """What the admin's Test shows: by default a poll from scratch. A kind
        whose first poll reads a whole archive (a mailbox) reads only about
        the newest `limit` items instead."""
        return await self.poll(None, ctx)
