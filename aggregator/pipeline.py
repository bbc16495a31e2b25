"""One source, one poll: the whole refresh in one readable function."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from aggregator import metrics
from aggregator.config import SourceConfig
from aggregator.connector import PollContext
from aggregator.decide import prepare
from aggregator.exceptions import ConnectorError
from aggregator.recorder import Recorder
from aggregator.registry import connector_class
from aggregator.schedule import next_poll
from aggregator.store import Claim, FailureRecord, PollRecord

log = logging.getLogger(__name__)

POLL_TIMEOUT = 300.0  # a poll that hangs longer than this is failed and retried later


@dataclass(frozen=True, slots=True)
class PollOutcome:
    source_id: str
    new_event_ids: list[int]
    error: str | None = None
    not_modified: bool = False


async def poll_source(
    source: SourceConfig,
    claim: Claim,
    recorder: Recorder,
    ctx: PollContext,
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
        items = await ctx.run_cpu(prepare, result.events, source.tags) if result.events else []
    except Exception as err:  # whatever a connector sends, the others keep flowing
        failure: Exception = err
        if deadline.expired():
            failure = TimeoutError(f"poll did not finish within {POLL_TIMEOUT:g}s")
        return await _record_failure(
            source, recorder, failure, now=now, failures=claim.failures + 1
        )

    when = next_poll(
        now, interval=source.interval, cron=source.cron, min_interval=result.min_interval
    )
    new_ids = await recorder.record(
        PollRecord(source, items, result.state, now, when, result.permanent_redirect)
    )
    metrics.POLLS.labels(source.id, "not_modified" if result.not_modified else "ok").inc()
    metrics.EVENTS.labels(source.id).inc(len(new_ids))
    metrics.POLL_SECONDS.labels(source.id).observe(time.perf_counter() - started)
    return PollOutcome(source.id, new_ids, not_modified=result.not_modified)


async def _record_failure(
    source: SourceConfig, recorder: Recorder, err: Exception, *, now: datetime, failures: int
) -> PollOutcome:
    message = _describe(err)
    if isinstance(err, ConnectorError | TimeoutError):
        log.warning("source %s: %s", source.id, message)
    else:
        log.error("source %s: connector crashed", source.id, exc_info=err)
    retry = err.retry_after if isinstance(err, ConnectorError) else None
    when = next_poll(
        now, interval=source.interval, cron=source.cron, failures=failures, retry_after=retry
    )
    await recorder.record(FailureRecord(source.id, message, now, when))
    metrics.POLLS.labels(source.id, "error").inc()
    metrics.POLL_ERRORS.labels(source.id).inc()
    return PollOutcome(source.id, [], error=message)


def _describe(err: BaseException) -> str:
    if isinstance(err, ConnectorError) or (isinstance(err, TimeoutError) and str(err)):
        return str(err)
    return f"{type(err).__name__}: {err}"
