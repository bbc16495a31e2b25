"""One source, one poll: the whole refresh in one readable function."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from aggregator import metrics
from aggregator.config import PollerConfig, SourceConfig
from aggregator.connector import PollContext
from aggregator.decide import Prepared, prepare
from aggregator.exceptions import ConnectorError, GoneError
from aggregator.recorder import Recorder
from aggregator.registry import connector_class
from aggregator.schedule import MAX_BACKOFF, MAX_HINT, next_poll
from aggregator.store import Claim, FailureRecord, PollRecord
from aggregator.types import EventData

log = logging.getLogger(__name__)

POLL_TIMEOUT = 300.0  # a poll that hangs longer than this is failed and retried later
PREPARE_CHUNK = 500  # items per pool task: a big poll (a mailbox's first sync) uses every core


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """The poller-wide rules a poll follows (the `[poller]` table)."""

    max_interval: float = MAX_HINT
    max_backoff: float = MAX_BACKOFF
    alert_after: int = 5
    adopt_redirects: bool = False

    @classmethod
    def of(cls, config: PollerConfig) -> PollPolicy:
        return cls(
            max_interval=config.max_interval_seconds,
            max_backoff=config.max_backoff_seconds,
            alert_after=config.alert_after,
            adopt_redirects=config.adopt_redirects,
        )


@dataclass(frozen=True, slots=True)
class PollOutcome:
    source_id: str
    new_event_ids: list[int]
    error: str | None = None
    not_modified: bool = False
    alert_ids: list[int] = field(default_factory=list)  # events in the alerts source


async def poll_source(
    source: SourceConfig,
    claim: Claim,
    recorder: Recorder,
    ctx: PollContext,
    policy: PollPolicy = PollPolicy(),  # frozen: one shared default is safe
) -> PollOutcome:
    """Fetch -> parse -> sanitise -> decide -> commit (events + state, one
    transaction) -> report what is new. A source's errors (and a connector's
    crashes) are recorded, never raised: a broken source never stops the
    others. Store errors do propagate; nothing was committed, and the claim's
    lease makes the source due again."""
    now = ctx.now
    started = time.perf_counter()
    connector = connector_class(source.kind)(source.options)
    deadline = asyncio.timeout(POLL_TIMEOUT)  # unlike wait_for, no extra task per poll
    try:
        async with deadline:
            result = await connector.poll(claim.state, ctx)
        # Sanitising is CPU work: it runs in the parser pool, off the event loop.
        items = await prepare_in_pool(ctx, result.events, source.tags)
    except Exception as err:  # whatever a connector sends, the others keep flowing
        failure: Exception = err
        if deadline.expired():
            failure = TimeoutError(f"poll did not finish within {POLL_TIMEOUT:g}s")
        return await _record_failure(source, recorder, failure, now, claim.failures + 1, policy)

    when = next_poll(
        now,
        interval=source.interval,
        cron=source.cron,
        min_interval=result.min_interval if source.obey_hints else None,
        max_interval=policy.max_interval,
    )
    recovered = None
    if claim.failures >= policy.alert_after:
        recovered = _alert(source, now, f"{source.name} is polling again", "", "source-recovered")
    moved = result.permanent_redirect
    adopt = moved if moved and policy.adopt_redirects and _adoptable(source, moved) else None
    ids = await recorder.record(
        PollRecord(
            source,
            items,
            result.state,
            now,
            when,
            moved,
            recovered,
            adopt,
            result.rebaseline,
            result.warning,
        )
    )
    new_ids, alert_ids = (ids[:-1], ids[-1:]) if recovered else (ids, [])
    metrics.ALERTS.labels(source.id).set(0)
    metrics.POLLS.labels(source.id, "not_modified" if result.not_modified else "ok").inc()
    metrics.EVENTS.labels(source.id).inc(len(new_ids))
    metrics.POLL_SECONDS.labels(source.id).observe(time.perf_counter() - started)
    return PollOutcome(source.id, new_ids, not_modified=result.not_modified, alert_ids=alert_ids)


async def prepare_in_pool(
    ctx: PollContext, events: list[EventData], tags: tuple[str, ...]
) -> list[Prepared]:
    """decide.prepare in the parser pool, in chunks that go to every worker
    at once; the first of duplicate ids wins across chunks as within one."""
    if len(events) <= PREPARE_CHUNK:
        return await ctx.run_cpu(prepare, events, tags) if events else []
    parts = await asyncio.gather(
        *(
            ctx.run_cpu(prepare, events[at : at + PREPARE_CHUNK], tags)
            for at in range(0, len(events), PREPARE_CHUNK)
        )
    )
    seen: set[str] = set()
    out: list[Prepared] = []
    for part in parts:
        for item in part:
            if item.external_id not in seen:
                seen.add(item.external_id)
                out.append(item)
    return out


async def _record_failure(
    source: SourceConfig,
    recorder: Recorder,
    err: Exception,
    now: datetime,
    failures: int,
    policy: PollPolicy,
) -> PollOutcome:
    message = _describe(err)
    if isinstance(err, ConnectorError | TimeoutError):
        log.warning("source %s: %s", source.id, message)
    else:
        log.error("source %s: connector crashed", source.id, exc_info=err)
    retry = err.retry_after if isinstance(err, ConnectorError) else None
    when = next_poll(
        now,
        interval=source.interval,
        cron=source.cron,
        failures=failures,
        retry_after=retry,
        max_interval=policy.max_interval,
        max_backoff=policy.max_backoff,
    )
    gone = isinstance(err, GoneError)
    alert = None
    if failures == policy.alert_after or gone:  # once: a stopped source is not polled again
        what = (
            "is gone (HTTP 410) and was disabled" if gone else f"failed {failures} polls in a row"
        )
        alert = _alert(source, now, f"{source.name} {what}", message, "source-failing")
    # Set at every poll, so a resumed or recovered source reads 0 again.
    metrics.ALERTS.labels(source.id).set(1 if gone or failures >= policy.alert_after else 0)
    ids = await recorder.record(FailureRecord(source.id, message, now, when, alert, gone))
    metrics.POLLS.labels(source.id, "error").inc()
    metrics.POLL_ERRORS.labels(source.id).inc()
    return PollOutcome(source.id, [], error=message, alert_ids=ids)


def _adoptable(source: SourceConfig, new: str) -> bool:
    """Whether a web-made source may move to `new` on its own: only within
    its origin, or from http to https on the same host, so the source's
    credentials never follow a redirect to another server or to plain text;
    and never to a URL with credentials in it. Anything else is reported."""
    old = getattr(source.options, "url", None)
    if source.origin != "db" or not isinstance(old, str):
        return False
    try:
        was, now = urlsplit(old), urlsplit(new)
        ports = (was.port, now.port)
    except ValueError:
        return False
    if now.username is not None or now.password is not None or was.hostname != now.hostname:
        return False
    if was.scheme == now.scheme:
        return ports[0] == ports[1]
    return (
        (was.scheme, now.scheme) == ("http", "https")
        and ports[0] in (None, 80)
        and ports[1] in (None, 443)
    )


def _alert(source: SourceConfig, now: datetime, title: str, detail: str, tag: str) -> Prepared:
    """An event for the admins-only alerts source about `source`."""
    item = EventData(
        external_id=f"{source.id}:{tag}:{now.isoformat()}",
        object_type="Note",
        title=title,
        summary=detail,
        published=now,
        tags=(tag, source.id),
        extra={"source_id": source.id},
    )
    [prepared] = prepare([item])
    return prepared


def _describe(err: BaseException) -> str:
    if isinstance(err, ConnectorError) or (isinstance(err, TimeoutError) and str(err)):
        return str(err)
    return f"{type(err).__name__}: {err}"
