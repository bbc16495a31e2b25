"""Reading local files for sources defined in the config file.

Only paths under a directory the config allows (`[files] allowed_dirs`) can be
read, and sources created in the web admin get no allowed directories at all.
The file's size and modification time stand in for an ETag, so an unchanged
file costs one stat() and stores nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from aggregator.connector import PollContext
from aggregator.exceptions import FetchError


@lru_cache(maxsize=4096)  # asked at every poll of every source
def local_path(location: str) -> Path | None:
    """The path a `file:` URL or plain path names; None for network URLs."""
    parts = urlsplit(location)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if not parts.scheme:
        return Path(location)
    return None


def refusal(path: Path, base_dir: Path, dirs: Sequence[Path]) -> tuple[Path, str | None]:
    """`path` resolved against `base_dir`, and why a source allowed `dirs`
    may not read it (None: it may). The poll and the config's check both ask."""
    resolved = (base_dir / path).resolve()
    if any(resolved.is_relative_to(base) for base in dirs):
        return resolved, None
    if not dirs:
        return resolved, "this source may not read local files"
    return resolved, f"not under an allowed directory ({', '.join(str(d) for d in dirs)})"


def allowed_path(path: Path, ctx: PollContext) -> Path:
    """`path` resolved against the config's directory, when this source may
    read it: under one of ctx.local_dirs (none for web-made sources)."""
    resolved, reason = refusal(path, ctx.base_dir, ctx.local_dirs)
    if reason:
        raise FetchError(f"{path}: {reason}")
    return resolved


def _read(path: Path, version: str | None, cap: int) -> tuple[str, bytes | None]:
    try:
        info = path.stat()
        current = f"{info.st_mtime_ns}-{info.st_size}"
        if current == version:
            return current, None
        with path.open("rb") as file:
            body = file.read(cap + 1)  # the file may grow (or be a pipe) after stat()
        if len(body) > cap:
            raise FetchError(f"{path} is larger than {cap} bytes")
        return current, body
    except OSError as err:
        raise FetchError(f"cannot read {path}: {err.strerror or err}") from None


async def read_local(path: Path, version: str | None, ctx: PollContext) -> tuple[str, bytes | None]:
    """(version, bytes), or (version, None) when the file has not changed."""
    resolved = allowed_path(path, ctx)
    return await asyncio.to_thread(_read, resolved, version, ctx.http.max_body_bytes)


def option_path_problem(path: str) -> str | None:
    """Why an option naming a file on the server's disk (a CA bundle, a
    client certificate) is not a usable path, or None."""
    if not path.strip() or "\0" in path:
        return "must be a file path"
    if path.startswith(("env:", "file:", "http:", "https:")):
        return "a file path (relative to the config file), not a reference or URL"
    return None
