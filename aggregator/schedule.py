"""When a source is polled next. Pure: time is passed in."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger

MAX_BACKOFF = 6 * 3600.0
MAX_HINT = 24 * 3600.0  # a feed's TTL or max-age may slow polling down to daily, no further
JITTER = 0.1  # spread polls of equal interval so they do not arrive in lockstep


def cron_trigger(expression: str) -> Any:
    """A crontab-style trigger ("*/5 8-18 * * mon-fri"), evaluated in UTC."""
    try:
        return CronTrigger.from_crontab(expression, timezone="UTC")
    except ValueError as err:
        raise ValueError(f"not a cron expression ({err})") from None


def next_poll(
    now: datetime,
    *,
    interval: float,
    cron: str | None = None,
    failures: int = 0,
    min_interval: float | None = None,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> datetime:
    """The next poll time after one at `now`.

    Errors back off exponentially from the interval, capped at six hours;
    a Retry-After or a feed's own TTL/max-age can only push it later.
    """
    rnd = rng or random
    if cron and not failures:
        # Strictly after now: a trigger returns `now` itself when it matches.
        after = now + timedelta(seconds=1)
        fire: datetime | None = cron_trigger(cron).get_next_fire_time(None, after)
        base = (fire - now).total_seconds() if fire else MAX_BACKOFF
        delay = base
    else:
        delay = interval * (1 + JITTER * rnd.random())
    if failures:
        delay = min(interval * 2 ** min(failures, 16), MAX_BACKOFF)
    delay = max(delay, min(max(min_interval or 0.0, retry_after or 0.0), MAX_HINT))
    return now + timedelta(seconds=delay)
