"""Html sources (push): placeholder until the html work lands."""

from __future__ import annotations

from aggregator.connector import Connector, ConnectorOptions, PollContext
from aggregator.types import JSONObject, PollResult


class HtmlOptions(ConnectorOptions):
    pass


class HtmlConnector(Connector[HtmlOptions]):
    kind = "html"
    Options = HtmlOptions

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        return PollResult(not_modified=True)
