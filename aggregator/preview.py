"""A dry run of one source: what its next poll would add, storing nothing.

The web admin's "Test" button runs this before a source is saved (or on a
saved one) so an admin sees real items instead of guessing whether a URL,
a credential or a JMESPath is right. It is the first half of `poll_source`
(poll, then prepare: the same parsing and the same sanitiser) with the store
left out, and with no state, so a 304 cannot hide what the source holds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aggregator.config import SourceConfig
from aggregator.connector import PollContext
from aggregator.decide import Prepared, event_time
from aggregator.exceptions import ConnectorError
from aggregator.pipeline import prepare_in_pool
from aggregator.registry import connector_class

PREVIEW_TIMEOUT = 60.0  # someone is waiting at a form; a poll may take longer


@dataclass(frozen=True, slots=True)
class DryRun:
    items: list[Prepared]  # newest first
    warning: str | None  # what the poll could not read
    notes: tuple[str, ...]  # what it found about the source (PollResult.notes)


async def preview_poll(source: SourceConfig, ctx: PollContext, limit: int = 20) -> DryRun:
    """The newest `limit` items a poll of `source` finds, sanitised as they
    would be stored, with the poll's warning and notes. Nothing is written:
    not events, not state, not health.

    Every failure comes out as ConnectorError with a message fit to show an
    admin (a connector's own crash included), like a poll's recorded error.
    """
    connector = connector_class(source.kind)(source.options)
    deadline = asyncio.timeout(PREVIEW_TIMEOUT)
    try:
        async with deadline:
            result = await connector.preview(ctx, limit)
            items = await prepare_in_pool(ctx, result.events, source.tags)
    except ConnectorError:
        raise
    except Exception as err:
        if deadline.expired():
            raise ConnectorError(
                f"the test poll did not finish within {PREVIEW_TIMEOUT:g}s"
            ) from None
        raise ConnectorError(f"the connector failed: {type(err).__name__}: {err}") from err
    items.sort(key=lambda item: event_time(item.data, ctx.now), reverse=True)
    return DryRun(items[:limit], result.warning, result.notes)
