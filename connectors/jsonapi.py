"""JsonApi sources (push): placeholder until the jsonapi work lands."""

from __future__ import annotations

from aggregator.connector import Connector, PollContext
from aggregator.types import JSONObject, PollResult
from connectors.mapping import MappedOptions


class JsonApiOptions(MappedOptions):
    preset_kind = "jsonapi"


class JsonApiConnector(Connector[JsonApiOptions]):
    kind = "jsonapi"
    Options = JsonApiOptions

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        return PollResult(not_modified=True)
