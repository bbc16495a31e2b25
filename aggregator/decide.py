"""What a poll adds to the log: pure rules, no I/O.

An item's identity is its external id, else its link, else a hash of title
and date. `(source, identity, content_hash)` names a version: the same version
again is a no-op, a changed one becomes an `Update` event (unless the source
ignores updates).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from aggregator.sanitize import html_to_text, safe_url, sanitize_html
from aggregator.types import Actor, EventData

# A lone surrogate (JSON's "\ud800" decodes to one) is no character: SQLite,
# nh3 and UTF-8 refuse it, and one such item would fail its source's every poll.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Prepared:
    """An item ready to store: identity settled, HTML sanitised, hash taken."""

    external_id: str
    content_hash: str
    data: EventData


def _digest(*parts: object) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(str(part if part is not None else "").encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()


def identity(item: EventData) -> str:
    if item.external_id:
        return item.external_id
    if item.url:
        return item.url
    when = item.published or item.updated
    return "hash:" + _digest(item.title, when.isoformat() if when else "")


def content_hash(item: EventData) -> str:
    """Hash of what a reader sees; timestamps alone changing is not an update."""
    a = item.actor
    return _digest(
        item.title, item.summary, item.content_html, item.url,
        a.name, a.email, a.url, ",".join(item.tags), item.object_type,
    )  # fmt: skip


def prepare(items: Iterable[EventData], source_tags: Iterable[str] = ()) -> list[Prepared]:
    """Normalise and sanitise a poll's items; the first of duplicate ids wins.

    Links that are not http(s)/mailto (javascript:, data:) are dropped here,
    once, so no read path has to remember to check them."""
    extra_tags = tuple(source_tags)
    seen: set[str] = set()
    out: list[Prepared] = []
    for raw in items:
        item = _characters_only(raw)
        key = identity(item)
        if key in seen:
            continue
        seen.add(key)
        url = safe_url(item.url)
        content = sanitize_html(item.content_html, url)
        summary = html_to_text(item.summary or item.content_html)
        tags = tuple(dict.fromkeys((*item.tags, *extra_tags)))
        actor = replace(item.actor, url=safe_url(item.actor.url))
        clean = replace(
            item, external_id=key, url=url, actor=actor, content_html=content,
            summary=summary, tags=tags,
        )  # fmt: skip
        # Hash what the source sent, not what we made of it: editing a source's
        # tags or upgrading the sanitiser must not turn every item into an Update.
        out.append(Prepared(key, content_hash(item), clean))
    return out


def _characters_only(item: EventData) -> EventData:
    """`item` with every lone surrogate in its text replaced by U+FFFD."""

    def fix(text: str | None) -> str | None:
        return _SURROGATE.sub("\ufffd", text) if text else text

    a = item.actor
    texts = (
        *(item.external_id, item.title, item.verb, item.object_type, item.summary),
        *(item.content_html, item.url, item.thread_id, a.name, a.email, a.url, *item.tags),
    )
    if not any(_SURROGATE.search(t) for t in texts if t):
        return item
    return replace(
        item, external_id=fix(item.external_id), title=fix(item.title) or "",
        verb=fix(item.verb) or "", object_type=fix(item.object_type) or "",
        summary=fix(item.summary) or "", content_html=fix(item.content_html) or "",
        url=fix(item.url), thread_id=fix(item.thread_id),
        actor=Actor(fix(a.name), fix(a.email), fix(a.url)),
        tags=tuple(fix(t) or "" for t in item.tags),
    )  # fmt: skip


def decide(
    items: Iterable[Prepared], known: Mapping[str, str], *, track_updates: bool = True
) -> list[Prepared]:
    """The items to append: new identities, and changed ones as `Update`s.

    `known` maps each identity already stored to the hash of its latest version.
    """
    out = []
    for item in items:
        previous = known.get(item.external_id)
        if previous is None:
            out.append(item)
        elif previous != item.content_hash and track_updates:
            out.append(replace(item, data=replace(item.data, verb="Update")))
    return out


def event_time(item: EventData, now: datetime) -> datetime:
    """When it happened: published, else updated, else when we saw it (never the future)."""
    when = item.published or item.updated or now
    return min(when, now)
