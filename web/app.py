"""Builds the Starlette app. The lifespan owns the store, the live tail and the
poller: everything that runs in the background starts and stops there."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from aggregator.bus import Bus, EventTail
from aggregator.config import Config
from aggregator.poller import Poller
from aggregator.secrets import resolve_secret
from aggregator.store import Store
from web import (
    admin_people,
    admin_sources,
    api,
    as2,
    feeds,
    hooks,
    live,
    login,
    openapi,
    pages,
    streams,
)
from web.access import Access
from web.auth import Authenticate, Sessions
from web.security import BodyLimit, SecurityHeaders
from web.state import AppState

if TYPE_CHECKING:
    from aggregator.notify import Listener


def _listener(store_url: str, tail: EventTail, unheard_interval: float) -> Listener:
    """PostgreSQL announces other processes' commits: the tail looks when told,
    and often only while it cannot hear them."""
    from aggregator.notify import Listener  # psycopg is the optional extra tidings[postgres]

    def heard(newest: int | None) -> None:
        if newest is None or newest > tail.last_id:  # not already published from here
            tail.nudge()

    def hearing(up: bool) -> None:
        tail.interval = 1.0 if up else unheard_interval

    return Listener(store_url, heard, hearing)


def create_app(config: Config, *, run_poller: bool = True) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await asyncio.to_thread(Store, config.store_url)
        await asyncio.to_thread(
            partial(store.sync_sources, config_file=config.source_file),
            config.sources,
            datetime.now(UTC),
        )
        bus = Bus()
        start = await asyncio.to_thread(store.max_event_id)
        polling_here = run_poller and config.poller.enabled
        # Commits of an in-process poller nudge the tail; without one, a short
        # look interval is how other processes' commits reach subscribers fast.
        interval = 1.0 if polling_here else 0.025
        tail = EventTail(bus, partial(store.events_after, viewer=None), start, interval)
        listener = None if store.is_sqlite else _listener(config.store_url, tail, interval)
        access = await Access.load(store.people)
        tail.before_publish = access.current  # new rules apply before new events go out
        poller = None
        if polling_here:
            poller = Poller(config, store, on_commit=tail.nudge)
        if config.auth.secret_key:  # several web workers must share one key
            secret = resolve_secret(config.auth.secret_key, config.base_dir)
        else:
            secret = await asyncio.to_thread(store.people.session_secret)
        app.state.tidings = AppState(config, store, bus, tail, poller, access, secret)
        app.state.webhooks = hooks.WebhookReceiver(config, store, on_commit=tail.nudge)
        tail.start()
        if listener:
            listener.start()
        if poller:
            poller.start()
        # What start-up made lives as long as the process: keep it out of the
        # collector's full passes, which otherwise stall every stream for
        # ~100 ms every few seconds (bench/live.py).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if poller:
                await poller.aclose()
            state = app.state.tidings
            if state.preview_pool is not None:
                state.preview_pool.shutdown(wait=True, cancel_futures=True)
            await app.state.webhooks.aclose()  # deliveries under way are answered
            if listener:
                await listener.stop()
            await tail.stop()
            store.close()

    routes = [
        Route("/", pages.dashboard),
        Route("/login", login.login, methods=["GET", "POST"]),
        Route("/logout", login.logout, methods=["POST"]),
        Route("/account", login.account),
        Route("/account/password", login.change_password, methods=["POST"]),
        Route("/account/tokens", login.create_token, methods=["POST"]),
        Route("/account/tokens/{token_id}/revoke", login.revoke_token, methods=["POST"]),
        Route("/account/sign-out-everywhere", login.sign_out_everywhere, methods=["POST"]),
        Route("/healthz", api.healthz),
        Route("/readyz", api.readyz),
        Route("/metrics", api.metrics_endpoint),
        Route("/api/events", api.list_events),
        Route("/api/events/{event_id}.as2", as2.event_as2),  # before the plain event route
        Route("/api/events/{event_id}", api.get_event),
        Route("/api/sources", api.list_sources),
        Route("/api/search", api.search_events),
        Route("/api/streams", streams.list_streams),
        Route("/api/streams", streams.create_stream, methods=["POST"]),
        Route("/api/streams.opml", streams.export_opml),
        Route("/api/streams/order", streams.reorder_streams, methods=["PUT"]),
        Route("/api/streams/{stream_id}", streams.one_stream, methods=["GET", "PATCH", "DELETE"]),
        Route("/api/streams/{stream_id}/read", streams.mark_read, methods=["POST"]),
        Route("/api/feed-token/rotate", streams.rotate_feed_token, methods=["POST"]),
        Route("/api/openapi.json", openapi.openapi_json),
        Route("/feeds/{token}/{stream}.{format}", feeds.personal_feed),
        WebSocketRoute("/ws", live.websocket_endpoint),
        Route("/hooks/{source_id}", hooks.receive, methods=["POST"]),
        *admin_sources.routes,
        *admin_people.routes,
        Mount("/static", StaticFiles(directory=Path(__file__).with_name("static")), name="static"),
    ]
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=config.server.trusted_hosts),
        Middleware(live.KeepRawSend),
        Middleware(SecurityHeaders),
        # Webhooks take each source's own max_bytes (web.hooks).
        Middleware(BodyLimit, limit=config.server.max_request_bytes, exempt=("/hooks/",)),
        Middleware(Sessions),
        Middleware(Authenticate),
    ]
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
