"""Admin pages (admins only). Filled in next."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
