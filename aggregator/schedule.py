"""When a source is polled next. Pure: time is passed in."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger

MAX_BACKOFF = 6 * 3600.0  # [poller] max_backoff's default
MAX_HINT = 24 * 3600.0  # [poller] max_interval's default: a hint may slow polling to daily
JITTER = 0.1  # spread polls (and retries) of equal interval so they do not arrive in lockstep


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
    max_interval: float = MAX_HINT,
    max_backoff: float = MAX_BACKOFF,
    rng: random.Random | None = None,
) -> datetime:
    """The next poll time after one at `now`.

    Errors back off exponentially from the interval, with jitter, capped at
    `max_backoff`. The source's own hints (a feed's TTL or sy:updatePeriod,
    max-age, Expires, Retry-After) are lower bounds: they can only push the
    poll later, and no further than `max_interval`.
    """
    rnd = rng or random
    if failures:
        # Up to JITTER less: many sources failing together (one host down)
        # must not all come back in the same second, at the cap included.
        delay = min(interval * 2 ** min(failures, 16), max_backoff) * (1 - JITTER * rnd.random())
    elif cron:
        # Strictly after now: a trigger returns `now` itself when it matches.
        fire: datetime | None = cron_trigger(cron).get_next_fire_time(
            None, now + timedelta(seconds=1)
        )
        delay = (fire - now).total_seconds() if fire else max_backoff
    else:
        delay = interval * (1 + JITTER * rnd.random())
    hint = max(min_interval or 0.0, retry_after or 0.0)
    delay = max(delay, min(hint, max_interval))
    return now + timedelta(seconds=delay)
