"""Builds the Starlette app. The lifespan owns the store, the live tail and the
poller: everything that runs in the background starts and stops there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from aggregator.bus import Bus, EventTail
from aggregator.config import Config
from aggregator.poller import Poller
from aggregator.store import Store
from web import api, live, pages
from web.security import SecurityHeaders
from web.state import AppState


def create_app(config: Config, *, run_poller: bool = True) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await asyncio.to_thread(Store, config.store_url)
        await asyncio.to_thread(
            partial(store.sync_sources, config_file=str(config.path)),
            config.sources,
            datetime.now(UTC),
        )
        bus = Bus()
        start = await asyncio.to_thread(store.max_event_id)
        tail = EventTail(bus, store.events_after, start)
        poller = None
        if run_poller and config.poller.enabled:
            poller = Poller(config, store, on_commit=tail.nudge)
        app.state.tidings = AppState(config, store, bus, tail, poller)
        tail.start()
        if poller:
            poller.start()
        try:
            yield
        finally:
            if poller:
                await poller.aclose()
            await tail.stop()
            store.close()

    routes = [
        Route("/", pages.dashboard),
        Route("/healthz", api.healthz),
        Route("/readyz", api.readyz),
        Route("/metrics", api.metrics_endpoint),
        Route("/api/events", api.list_events),
        Route("/api/events/{event_id:int}", api.get_event),
        Route("/api/sources", api.list_sources),
        WebSocketRoute("/ws", live.websocket_endpoint),
        Mount("/static", StaticFiles(directory=Path(__file__).with_name("static")), name="static"),
    ]
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=config.server.trusted_hosts),
        Middleware(SecurityHeaders),
    ]
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
