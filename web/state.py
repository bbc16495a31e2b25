"""What the app holds while it runs, created and torn down by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from aggregator.bus import Bus, EventTail
from aggregator.config import Config
from aggregator.poller import Poller
from aggregator.store import Store


@dataclass
class AppState:
    config: Config
    store: Store
    bus: Bus
    tail: EventTail
    poller: Poller | None


def app_state(conn: HTTPConnection) -> AppState:
    state: AppState = conn.app.state.tidings
    return state
