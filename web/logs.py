"""Logs never carry credentials that sit in a URL path.

A personal feed's URL is its credential (`/feeds/{token}/...`: feed readers
cannot send headers), and uvicorn's access log writes every request path. The
filter here rewrites such paths to `/feeds/***/...` in every record that
passes the handlers it is attached to: uvicorn's own (access and errors) and
the root handler the CLI sets up.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

_FEED_TOKEN = re.compile(r"(/feeds/)[^/?#\s\"]+")


def redact(text: str) -> str:
    """`text` with the token of every personal-feed path hidden."""
    return _FEED_TOKEN.sub(r"\1***", text) if "/feeds/" in text else text


class RedactFeedTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # The whole message: a token may come in an argument (uvicorn's path),
        # and a format string's own "/feeds/%s/" must keep its placeholder.
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # logging reports that record's own fault
            return True
        if "/feeds/" in message:
            record.msg, record.args = redact(message), None
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging config with the filter on each of its handlers."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_feed_tokens"] = {"()": RedactFeedTokens}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_feed_tokens")
    return config
