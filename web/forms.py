"""Reading submitted forms: text fields only (an upload where text belongs reads as empty).
And ids from URLs, bounded to what a row can have."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request

# Ids are signed 64-bit integers (SQLite raises OverflowError past this, so a
# wider one must never reach a query).
MAX_ID = 2**63 - 1


def form_text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def form_texts(form: FormData, key: str) -> list[str]:
    return [v for v in form.getlist(key) if isinstance(v, str)]


def parse_id(raw: str | int, name: str) -> int:
    """`raw` as an id from 0 to MAX_ID; else ValueError, its message naming `name`
    (the answer of a 400). A string must be plain ASCII digits."""
    if isinstance(raw, str):
        digits = raw.lstrip("0") or "0"
        if not (raw.isascii() and raw.isdigit()):
            raise ValueError(f"{name} must be an integer from 0 to {MAX_ID}, not {raw[:40]!r}")
        # No int() of thousands of digits: Python refuses past 4300 anyway.
        raw = int(digits) if len(digits) <= len(str(MAX_ID)) else MAX_ID + 1
    if not 0 <= raw <= MAX_ID:
        raise ValueError(f"{name} must be an integer from 0 to {MAX_ID}")
    return raw


def path_id(request: Request, name: str) -> int | None:
    """The path parameter `name` as an id; None when no row can have it (a 404).
    Declare it `{name}`, not `{name:int}`: Starlette's int convertor fails (a 500)
    on more than 4300 digits, before the endpoint could answer."""
    try:
        return parse_id(request.path_params[name], name)
    except ValueError:
        return None
