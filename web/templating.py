"""Jinja2 templates (autoescaped) and the context every page gets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from aggregator import __version__
from aggregator.humanize import file_name, file_size, relative_time
from web.auth import csrf_token, principal_of

templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def ago(when: datetime) -> str:
    return relative_time(when, datetime.now(UTC), just_now=45)


templates.env.filters["ago"] = ago
templates.env.filters["file_size"] = file_size
templates.env.filters["file_name"] = file_name


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> Response:
    base: dict[str, Any] = {
        "principal": principal_of(request),
        "csrf_token": csrf_token(request),
        "version": __version__,
        "errors": {},
    }
    return templates.TemplateResponse(
        request, name, {**base, **(context or {})}, status_code=status_code
    )
