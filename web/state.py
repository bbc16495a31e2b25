"""What the app holds while it runs, created and torn down by the lifespan."""

from __future__ import annotations

import json
from collections import OrderedDict
from concurrent.futures import Executor
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from aggregator.bus import Bus, EventTail
from aggregator.config import Config
from aggregator.poller import Poller
from aggregator.store import Store
from aggregator.types import Event
from web.access import Access


class EventJsonCache:
    """Each event is serialised once, however many clients receive it."""

    def __init__(self, size: int = 4096) -> None:
        self._items: OrderedDict[int, str] = OrderedDict()
        self._size = size

    def get(self, event: Event) -> str:
        text = self._items.get(event.id)
        if text is None:
            text = json.dumps(event.to_json(), separators=(",", ":"))
            self._items[event.id] = text
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return text


@dataclass
class AppState:
    config: Config
    store: Store
    bus: Bus
    tail: EventTail
    poller: Poller | None
    access: Access
    session_secret: str = field(repr=False)
    event_json: EventJsonCache = field(default_factory=EventJsonCache)
    # Parses the admin's test polls when no poller runs here (one process,
    # made on first use): a hostile page must not hold the web process.
    preview_pool: Executor | None = None


def app_state(conn: HTTPConnection) -> AppState:
    state: AppState = conn.app.state.tidings
    return state
