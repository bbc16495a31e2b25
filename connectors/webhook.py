"""Webhook sources (push): placeholder until the webhook work lands."""

from __future__ import annotations

from aggregator.connector import Connector, PollContext
from aggregator.types import JSONObject, PollResult
from connectors.mapping import MappedOptions


class WebhookOptions(MappedOptions):
    preset_kind = "webhook"


class WebhookConnector(Connector[WebhookOptions]):
    kind = "webhook"
    Options = WebhookOptions
    push = True

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        return PollResult(not_modified=True)
