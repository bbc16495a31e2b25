"""Reading submitted forms: text fields only (an upload where text belongs reads as empty)."""

from __future__ import annotations

from starlette.datastructures import FormData


def form_text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def form_texts(form: FormData, key: str) -> list[str]:
    return [v for v in form.getlist(key) if isinstance(v, str)]
