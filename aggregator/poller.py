"""Runs polls: the due-list lives in the database (`sources.next_poll_at`).

APScheduler (3.x, AsyncIOScheduler) fires `tick` every second or so; a tick
claims due sources from the store (so restarts and several pollers are safe)
and starts their polls, bounded by a global limit. CPU-heavy parsing runs in a
process pool so the event loop stays responsive. Every hour it also deletes
the events older than retention keeps them (aggregator.store.retention).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from aggregator.config import Config, SourceConfig
from aggregator.connector import PollContext, Resources
from aggregator.cpu import PARSE_BUDGET, process_pool, run_within
from aggregator.idle import Watchers, WatchStatus
from aggregator.pipeline import PollOutcome, PollPolicy, poll_source
from aggregator.recorder import Recorder
from aggregator.registry import is_push
from aggregator.store import Claim, Store
from aggregator.store.retention import RetentionPolicy

log = logging.getLogger(__name__)

# A claimed source is not claimed again for LEASE seconds, renewed every RENEW
# seconds while its poll runs (a poll may take POLL_TIMEOUT): the claims of a
# poller that crashed lapse within LEASE, and another poller takes them.
LEASE = 15.0
RENEW = LEASE / 3
REFRESH = 1.0  # seconds between looks for sources made in the web admin, when claiming
UNKNOWN_RETRY = 30.0  # a claimed source this poller does not know is due again after
PRUNE_EVERY = 3600.0  # seconds between retention passes
PRUNE_FIRST = 60.0  # the first pass, after start-up's own writes (and not never, on restarts)


class Poller:
    def __init__(
        self,
        config: Config,
        store: Store,
        on_commit: Callable[[], None] = lambda: None,
        *,
        executor: Executor | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._on_commit = on_commit
        self._sources = {s.id: s for s in config.sources}
        self._revision: int | None = None  # of the store, when _sources was read
        self._refreshed = float("-inf")  # time.monotonic() of the last look at the revision
        self._resources = Resources()
        self._slots = asyncio.Semaphore(config.poller.concurrency)
        self._running: dict[asyncio.Task[PollOutcome], str] = {}
        self._executor = executor
        self._own_executor = executor is None
        self._scheduler: AsyncIOScheduler | None = None
        self.recorder = Recorder(store)
        self._backlog = False
        self._closing = False
        self._refill: asyncio.Task[None] | None = None
        self._leases: dict[str, datetime] = {}  # running polls' claims: when each lapses
        self._renewer: asyncio.Task[None] | None = None
        self._http = config.http_settings
        self._policy = PollPolicy.of(config.poller)
        self._local_dirs = config.allowed_dirs
        self._base_dir = config.base_dir
        # Push for polled kinds (IMAP IDLE): started by start(), not by `tidings poll`.
        self._watchers: Watchers | None = None
        self._watched_revision: int | None = None
        self._stop_pruning = threading.Event()

    # --- the pieces a poll needs ------------------------------------------

    def _pool(self) -> Executor:
        if self._executor is None:
            self._executor = process_pool(self.config.poller.workers or os.cpu_count() or 1)
        return self._executor

    async def _run_cpu(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await run_within(self._pool(), PARSE_BUDGET, fn, *args)

    async def start_workers(self) -> None:
        """Start the parser processes now rather than on the first poll."""
        await self._run_cpu(len, ())

    def context(self, source: SourceConfig, now: datetime) -> PollContext:
        return PollContext(
            source_id=source.id,
            now=now,
            resources=self._resources,
            run_cpu=self._run_cpu,
            http=self._http,
            local_dirs=self._local_dirs if source.origin == "file" else (),
            base_dir=self._base_dir,
            web_made=source.origin != "file",
        )

    def _refresh_sources(self) -> None:
        """Add the sources made in the web admin (re-read when the store's
        revision moves). The config file's own sources always win."""
        revision = self.store.people.revision()
        self._refreshed = time.monotonic()
        if revision == self._revision:
            return
        self._revision, self._sources = self.store.known_sources(self.config.sources)

    def _claim_due(self, now: datetime, limit: int) -> list[Claim]:
        """Due sources this poller knows. Others (another config file's, one
        made in the web admin since the last refresh, one whose kind is not
        installed here) go back, due again in UNKNOWN_RETRY seconds, for
        whichever poller knows them. The claim is a condition on the row, not
        a list of known ids: an IN list of 10,000 ids cost 39 ms a claim."""
        if time.monotonic() - self._refreshed >= REFRESH:
            self._refresh_sources()
        claims = self.store.claim_due(now, limit, LEASE)
        if any(c.source_id not in self._sources for c in claims):
            self._refresh_sources()  # made in the web admin a moment ago, perhaps
        # A push source is never due (registry.first_poll); one made due anyway (an
        # older build's "Poll now") goes back to never, unpolled: a no-op
        # "success" would clear the error its refused deliveries left.
        pushed = [
            c.source_id
            for c in claims
            if c.source_id in self._sources and is_push(self._sources[c.source_id].kind)
        ]
        if pushed:
            self.store.set_next_poll(pushed, None)
        claims = [c for c in claims if c.source_id not in pushed]
        mine = [c for c in claims if c.source_id in self._sources]
        if len(mine) < len(claims):
            others = [c.source_id for c in claims if c.source_id not in self._sources]
            self.store.set_next_poll(others, now + timedelta(seconds=UNKNOWN_RETRY))
        return mine

    def watch_status(self, source_id: str) -> WatchStatus | None:
        """The push watch (IMAP IDLE) of a source, when this poller runs it."""
        return self._watchers.status(source_id) if self._watchers is not None else None

    def source(self, source_id: str) -> SourceConfig | None:
        return self._sources.get(source_id)

    # --- running polls -----------------------------------------------------

    async def _poll(self, claim: Claim, now: datetime) -> PollOutcome:
        source = self._sources[claim.source_id]  # claims are only ever made among these
        self._hold(claim)
        try:
            async with self._slots:
                ctx = self.context(source, now)
                outcome = await poll_source(source, claim, self.recorder, ctx, self._policy)
        finally:
            self._leases.pop(claim.source_id, None)
        if outcome.new_event_ids or outcome.alert_ids:
            self._on_commit()
        return outcome

    def _hold(self, claim: Claim) -> None:
        """Keep the claim while its poll runs (waiting for a slot included)."""
        self._leases[claim.source_id] = claim.until
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew(), name="leases")

    async def _renew(self) -> None:
        """Renew the claims of running polls every RENEW seconds, until none
        is left. A claim already recorded (or made due by an admin, or lost)
        is not renewed, and no longer held."""
        while self._leases and not self._closing:
            await asyncio.sleep(RENEW)
            held = dict(self._leases)
            until = datetime.now(UTC) + timedelta(seconds=LEASE)
            try:
                renewed = await asyncio.to_thread(self.store.renew, held, until)
            except Exception:  # the store is away: try again; the claims lapse meanwhile
                log.warning("could not renew the claims of %d running polls", len(held))
                continue
            for source_id, lapse in held.items():
                if self._leases.get(source_id) != lapse:
                    continue  # finished (or claimed anew) meanwhile
                if source_id in renewed:
                    self._leases[source_id] = until
                else:
                    del self._leases[source_id]

    async def poll_now(self, source_ids: Iterable[str] | None = None) -> list[PollOutcome]:
        """Poll the given (default: all enabled) sources once, whatever their schedule."""
        await asyncio.to_thread(self._refresh_sources)
        ids = (
            [i for i in source_ids if i in self._sources]
            if source_ids is not None
            else [s.id for s in self._sources.values() if s.enabled]
        )
        ids = [i for i in ids if not is_push(self._sources[i].kind)]
        now = datetime.now(UTC)
        claims = await asyncio.to_thread(self.store.claim, ids, now, LEASE)
        return list(await asyncio.gather(*(self._poll(c, now) for c in claims)))

    async def poll_pushed(self, source_id: str) -> None:
        """Poll a source whose server announced something new (IMAP IDLE),
        after the poll of it that is running, if one is."""
        running = [t for t, sid in self._running.items() if sid == source_id]
        if running:
            await asyncio.wait(running)
        if not self._closing:
            await self.poll_now([source_id])

    def _watch(self) -> None:
        """Start or stop watches when the source list changed."""
        if self._watchers is not None and self._watched_revision != self._revision:
            self._watched_revision = self._revision
            self._watchers.sync(self._sources.values())

    async def drain(self) -> list[PollOutcome]:
        """Poll due sources until none is left, keeping `concurrency` polls in
        flight. Several processes can drain one store together: claims keep
        them from taking the same source."""
        limit = self.config.poller.concurrency
        outcomes: list[PollOutcome] = []
        running: set[asyncio.Task[PollOutcome]] = set()
        exhausted = False
        while True:
            # Claim in batches (half the slots at least): a claim is a write.
            if not exhausted and len(running) <= limit // 2:
                now = datetime.now(UTC)
                free = limit - len(running)
                claims = await asyncio.to_thread(self._claim_due, now, free)
                exhausted = len(claims) < free
                running |= {asyncio.create_task(self._poll(c, now)) for c in claims}
            if not running:
                return outcomes
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    outcomes.append(task.result())
                else:  # the store failed; the source's lease makes it due again later
                    log.error("poll crashed", exc_info=task.exception())

    async def tick(self) -> None:
        """Claim what is due and start it; never waits for the polls. When the
        claim was cut short by the concurrency limit, the next finished poll
        ticks again, so a backlog drains at full speed."""
        if self._closing:
            return
        free = self.config.poller.concurrency - len(self._running)
        now = datetime.now(UTC)
        claims = await asyncio.to_thread(self._claim_due, now, free)
        if self._closing:  # closed while claiming: hand the claims back
            await asyncio.to_thread(self.store.set_next_poll, [c.source_id for c in claims], now)
            return
        self._backlog = free > 0 and len(claims) == free
        self._watch()
        for claim in claims:
            task = asyncio.create_task(self._poll(claim, now), name=f"poll:{claim.source_id}")
            self._running[task] = claim.source_id
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[PollOutcome]) -> None:
        self._running.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("poll %s crashed", task.get_name(), exc_info=task.exception())
        if self._backlog and not self._closing:
            self._backlog = False
            self._refill = asyncio.create_task(self.tick(), name="tick:refill")

    # --- maintenance ---------------------------------------------------------

    async def prune(self) -> int:
        """One retention pass, in a thread: the events older than their
        source (or `[retention] events`) keeps them go; how many. A failure
        is logged, and the next pass tries again."""
        policy = RetentionPolicy.of(self.config, self._sources.values())
        try:
            gone = await asyncio.to_thread(self._prune, datetime.now(UTC), policy)
        except Exception:  # a maintenance job must never stop the poller
            log.exception("retention: deleting old events failed; trying again in an hour")
            return 0
        if gone:
            log.info("retention: deleted %d events older than their sources keep them", gone)
        return gone

    def _prune(self, now: datetime, policy: RetentionPolicy) -> int:
        gone = self.store.prune(now, policy, stop=self._stop_pruning)
        if gone:
            # A much smaller table needs new planner statistics (Store.optimize).
            self.store.optimize()
        return gone

    # --- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self._watchers = Watchers(
            self.poll_pushed, lambda source: self.context(source, datetime.now(UTC))
        )
        self._watchers.sync(self._sources.values())
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_job(
            self.tick, "interval", seconds=self.config.poller.tick, id="tick",
            max_instances=1, coalesce=True, next_run_time=datetime.now(UTC),
        )  # fmt: skip
        self._scheduler.add_job(
            self.prune, "interval", seconds=PRUNE_EVERY, id="retention",
            max_instances=1, coalesce=True,
            next_run_time=datetime.now(UTC) + timedelta(seconds=PRUNE_FIRST),
        )  # fmt: skip
        self._scheduler.start()

    async def aclose(self) -> None:
        self._closing = True  # no new polls from here on, scheduled or refilled
        self._stop_pruning.set()  # a retention pass in its thread ends after its batch
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._refill is not None:
            self._refill.cancel()
        if self._watchers is not None:
            await self._watchers.aclose()
        interrupted = list(self._running.values())
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        if self._renewer is not None:
            self._renewer.cancel()
        await self.recorder.aclose()
        if interrupted:
            # Their lease would delay them after a restart; they are due now.
            await asyncio.to_thread(self.store.set_next_poll, interrupted, datetime.now(UTC))
        await self._resources.aclose()
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
