"""`POST /hooks/{source_id}`: webhook deliveries in, events out at once.

One delivery, in this order, each step answering at once when it fails:

1. the source: unknown, disabled and not a webhook all answer the same 404
   (no oracle for which ids exist);
2. the size: a Content-Length over the source's `max_bytes` gets 413 before
   anything is read, and so does a body that grows past it while streaming;
3. the signature (connectors.webhook.verify, constant-time): 401, nothing
   stored; the refusal is shown on the source's admin page at most once per
   FAILURE_EVERY seconds, so a flood of forgeries cannot become a flood of
   writes;
4. the payload: not JSON gets 400, a mapping that reads no item 422; both are
   recorded for admins with the payload, to test a fix on;
5. ONE transaction (Store.record_deliveries): the delivery id, the new
   events, the source's health and its last payload. A delivery id seen
   before answers 200 "duplicate" and stores nothing; a ping (GitHub's
   X-GitHub-Event: ping) answers "pong" and stores no event;
6. only then 200, and the live tail is nudged, so websocket subscribers get
   the events now rather than at the tail's next look.

Steps 3-4 and the sanitising run on a small thread pool of their own, and
the commits on one writer thread (`DeliveryWriter`) that groups the
deliveries ready together into one transaction: hashing, parsing and
sanitising stay off the event loop, deliveries waiting for the one SQLite
writer never hold the threads the live tail reads with, and a burst costs
one commit per batch rather than per delivery (1,100 deliveries/s instead of
480 on two cores: bench/hooks.py).

Webhook senders carry no session and no user: `/hooks/` is outside user
authentication (web.auth.ANONYMOUS) and CSRF (`guard("public", csrf=False)`:
the signature is the credential, and no cookie counts), and outside the
global body limit (web.security.BodyLimit), since each source sets its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import OperationalError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from aggregator import metrics
from aggregator.config import Config, SourceConfig
from aggregator.decide import prepare
from aggregator.recorder import GroupCommit
from aggregator.secrets import SecretError, resolve_secret
from aggregator.store import DeliveryRecord, Store
from aggregator.types import JSONObject
from connectors.mapping import Mapped, MappingError, describe_problems
from connectors.webhook import (
    PayloadError,
    WebhookOptions,
    delivery_id,
    event_type,
    map_payload,
    parse_payload,
    verify,
)
from web.auth import guard

log = logging.getLogger(__name__)

REFRESH = 1.0  # seconds a source lookup may be stale (an edit, a new secret reference)
FAILURE_EVERY = 10.0  # seconds between recorded refusals of unauthenticated requests, per source
BODY_TIMEOUT = 30.0  # a sender dripping its body does not hold a request for ever
LAST_PAYLOAD_MAX = 256 * 1024  # bytes of a payload kept for the admin's Test
KEEP_DELIVERIES = timedelta(days=30)  # delivery ids remembered for replays
PRUNE_EVERY = 3600.0  # seconds between forgetting old delivery ids
WORKERS = 2  # deliveries checked and sanitised at once (the writer has its own thread)
PING = "ping"  # GitHub's "hello" when a hook is created: acknowledged, stores nothing
NOT_FOUND = {"error": "no such webhook"}
NONE_FROM_WEB = (
    'signature = "none" is refused for sources made in the web admin: '
    "set a secret, or define the source in the config file"
)


@dataclass(frozen=True)
class Outcome:
    """How one delivery ended: the answer to the sender, and what admins see."""

    status: int
    body: JSONObject
    new_ids: list[int] = field(default_factory=list)
    error: str | None = None  # recorded on the source for admins
    authenticated: bool = False  # errors of unauthenticated requests are rate-limited
    payload: JSONObject | None = None  # kept with an authenticated failure


@dataclass(frozen=True)
class Ready:
    """A delivery that passed every check, mapped and sanitised: to commit."""

    record: DeliveryRecord
    status: str  # what to answer once committed: "stored", "ignored" or "pong"

    def outcome(self, ids: list[int] | None) -> Outcome:
        if ids is None:
            return Outcome(200, {"status": "duplicate"})
        if self.status == "pong":
            return Outcome(200, {"status": "pong"})
        return Outcome(200, {"status": self.status, "events": ids}, new_ids=ids)


class DeliveryWriter:
    """Group commit for deliveries (aggregator.recorder.GroupCommit) on one
    thread of its own, forgetting old delivery ids now and then."""

    def __init__(self, store: Store, max_batch: int = 200) -> None:
        self._store = store
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="webhook-writer")
        self._commit: GroupCommit[DeliveryRecord, list[int] | None] = GroupCommit(
            store.record_deliveries, max_batch=max_batch, executor=self._executor,
            name="webhook-writer",
        )  # fmt: skip
        self._pruned = float("-inf")

    async def record(self, record: DeliveryRecord) -> list[int] | None:
        """Commit `record` with whatever else is waiting: its new event ids,
        or None for a delivery received before."""
        ids = await self._commit.record(record)
        await self._prune(record.now)
        return ids

    async def _prune(self, now: datetime) -> None:
        """Forget old delivery ids now and then (an hour apart)."""
        if time.monotonic() - self._pruned < PRUNE_EVERY:
            return
        self._pruned = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._executor, self._store.forget_deliveries, now - KEEP_DELIVERIES
            )
        except OperationalError:
            log.exception("forgetting old webhook delivery ids failed; retrying in an hour")

    async def aclose(self) -> None:
        """Let the batch being written finish, then stop the thread."""
        await self._commit.aclose()
        await asyncio.to_thread(self._executor.shutdown, wait=True)


def _answer(outcome: Outcome) -> Response:
    headers = {"Retry-After": "5"} if outcome.status == 503 else None
    return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)


class WebhookReceiver:
    """The app's webhook side: source lookups, the delivery pipeline and its
    thread pool. Made and closed by the app's lifespan."""

    def __init__(self, config: Config, store: Store, on_commit: Callable[[], None]) -> None:
        self.config = config
        self.store = store
        self._on_commit = on_commit
        self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="webhooks")
        self._writer = DeliveryWriter(store)
        self._sources: dict[str, SourceConfig] = {}
        self._revision: int | None = None
        self._checked = float("-inf")  # time.monotonic() of the last look at the revision
        self._lock = asyncio.Lock()
        self._refused_at: dict[str, float] = {}

    async def aclose(self) -> None:
        """Finish the deliveries under way (their senders wait for the answer)."""
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        await self._writer.aclose()

    # --- which sources take deliveries -------------------------------------

    async def source(self, source_id: str) -> SourceConfig | None:
        """The enabled webhook source `source_id`, at most REFRESH seconds
        stale; an id not known yet is looked up at once (made a moment ago)."""
        asked = time.monotonic()
        if asked - self._checked >= REFRESH or source_id not in self._sources:
            async with self._lock:
                if self._checked < asked:  # nobody refreshed while this waited
                    await asyncio.to_thread(self._reload)
        return self._sources.get(source_id)

    def _reload(self) -> None:
        """Re-read the sources when the store's revision moved (every admin
        edit bumps it). The config file's own sources win, as in the poller."""
        self._checked = time.monotonic()
        revision = self.store.people.revision()
        if revision == self._revision:
            return
        revision, found = self.store.known_sources(self.config.sources)
        hooks = {
            i: s for i, s in found.items() if s.enabled and isinstance(s.options, WebhookOptions)
        }
        for s in hooks.values():
            if s.origin == "file" and _options(s).signature == "none":
                log.warning("webhook %s checks no signature: anyone who can reach it posts", s.id)
        self._sources = hooks
        self._revision = revision

    # --- one delivery --------------------------------------------------------

    async def receive(self, request: Request) -> Response:
        source = await self.source(request.path_params["source_id"])
        if source is None:
            return JSONResponse(NOT_FOUND, status_code=404)
        options = _options(source)
        too_large = Outcome(
            413,
            {"error": f"the payload is larger than {options.max_bytes} bytes"},
            error=f"a delivery was refused: larger than max_bytes ({options.max_bytes})",
        )
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > options.max_bytes):
            return await self._finish(source, too_large)
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                body = await _read_body(request, options.max_bytes)
        except TimeoutError:
            slow = f"a delivery was refused: its body took over {BODY_TIMEOUT:g}s to arrive"
            outcome = Outcome(408, {"error": "the body took too long to arrive"}, error=slow)
            return await self._finish(source, outcome)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        if body is None:
            return await self._finish(source, too_large)
        headers = request.headers
        content_type = headers.get("content-type")
        loop = asyncio.get_running_loop()
        try:
            checked = await loop.run_in_executor(
                self._executor, self._process, source, headers, body, content_type
            )
            outcome = (
                checked.outcome(await self._writer.record(checked.record))
                if isinstance(checked, Ready)
                else checked
            )
        except OperationalError:
            log.exception("webhook %s: the store failed; the sender may retry", source.id)
            outcome = Outcome(503, {"error": "the store is busy; retry later"})
        return await self._finish(source, outcome)

    async def _finish(self, source: SourceConfig, outcome: Outcome) -> Response:
        if outcome.new_ids:
            self._on_commit()  # the live tail publishes them now
            metrics.EVENTS.labels(source.id).inc(len(outcome.new_ids))
        if outcome.error is not None:
            await self._refused(source.id, outcome)
        return _answer(outcome)

    async def _refused(self, source_id: str, outcome: Outcome) -> None:
        """Record a refusal for admins: always when the sender proved who it
        is, else at most once per FAILURE_EVERY seconds per source."""
        assert outcome.error is not None
        now = time.monotonic()
        if not outcome.authenticated:
            if now - self._refused_at.get(source_id, float("-inf")) < FAILURE_EVERY:
                return
            self._refused_at[source_id] = now
        log.warning("webhook %s: %s", source_id, outcome.error)
        try:
            await asyncio.to_thread(
                self.store.record_delivery_failure,
                source_id,
                outcome.error,
                now=datetime.now(UTC),
                payload=outcome.payload,
            )
        except OperationalError:
            log.exception("webhook %s: could not record the refusal", source_id)

    def _process(
        self,
        source: SourceConfig,
        headers: Mapping[str, str],
        body: bytes,
        content_type: str | None,
    ) -> Outcome | Ready:
        """Steps 3-4 and the sanitising, in a worker thread: an answer, or
        a delivery ready to commit."""
        options = _options(source)
        refused = self._check_sender(source, options, headers, body)
        if refused is not None:
            return refused
        now = datetime.now(UTC)
        event = event_type(options, headers)
        delivery = delivery_id(options, headers, body)
        try:
            doc = parse_payload(body, content_type)
        except PayloadError as err:
            return Outcome(400, {"error": str(err)}, error=f"a delivery: {err}", authenticated=True)
        if event is not None and event.lower() == PING:
            return Ready(DeliveryRecord(source, delivery, [], now), "pong")
        payload = _last_payload(doc, event, delivery, now, len(body))
        try:
            mapped = map_payload(options, doc, event=event, delivery=delivery)
        except MappingError as err:
            return self._unmappable(source, delivery, f"{source.id}: {err}", payload)
        if not mapped.events and mapped.unmapped:
            return self._unmappable(source, delivery, describe_problems(source.id, mapped), payload)
        items = prepare(mapped.events, source.tags)
        record = DeliveryRecord(source, delivery, items, now, payload, _warning(source, mapped))
        return Ready(record, "stored" if items else "ignored")  # a rule may skip everything

    def _check_sender(
        self,
        source: SourceConfig,
        options: WebhookOptions,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Outcome | None:
        """None when the request proves it comes from the source's sender."""
        if options.signature == "none" and source.origin != "file":
            return Outcome(401, {"error": "this webhook is not set up"}, error=NONE_FROM_WEB)
        secret = None
        if options.secret is not None:
            try:
                secret = resolve_secret(
                    options.secret, self.config.base_dir, web_made=source.origin != "file"
                )
            except SecretError as err:  # names the reference, never a value
                return Outcome(503, {"error": "this webhook is not set up"}, error=f"secret: {err}")
        if verify(options, secret, headers, body):
            return None
        header = options.signature_header_name
        return Outcome(
            401,
            {"error": "the signature is missing or wrong"},
            error=f"a delivery was refused: its {header} header was missing or wrong",
        )

    def _unmappable(
        self, source: SourceConfig, delivery: str, error: str, payload: JSONObject
    ) -> Outcome:
        """422, unless it is a replay of a delivery stored under an older mapping."""
        if self.store.delivery_seen(source.id, delivery):
            return Outcome(200, {"status": "duplicate"})
        return Outcome(422, {"error": error}, error=error, authenticated=True, payload=payload)


def _options(source: SourceConfig) -> WebhookOptions:
    options = source.options
    assert isinstance(options, WebhookOptions)  # only such sources are looked up
    return options


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _last_payload(
    doc: Any, event: str | None, delivery: str, now: datetime, size: int
) -> JSONObject:
    """What the source keeps of its last payload: the document itself unless
    it is large (then only that it came)."""
    kept: JSONObject = {
        "event": event,
        "delivery": delivery,
        "received_at": now.isoformat(),
        "bytes": size,
    }
    if size <= LAST_PAYLOAD_MAX:
        kept["body"] = doc
    return kept


def _warning(source: SourceConfig, mapped: Mapped) -> str | None:
    return describe_problems(source.id, mapped) if mapped.problems else None


def receiver_of(request: Request) -> WebhookReceiver:
    receiver: WebhookReceiver = request.app.state.webhooks
    return receiver


@guard("public", csrf=False)  # the source's signature is the credential
async def receive(request: Request) -> Response:
    """The route: see the module's docstring."""
    return await receiver_of(request).receive(request)
