"""What a poll adds to the log: pure rules, no I/O.

An item's identity is its external id, else its link, else a hash of title
and date. `(source, identity, content_hash)` names a version: the same version
again is a no-op, a changed one becomes an `Update` event (unless the source
ignores updates).

A connector whose ids may be missing, shared or unstable (feeds) settles the
identity per source instead, with `settle_identities`: one scheme for every
item, kept in the source's state, that only ever moves to a weaker one.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

from aggregator.sanitize import html_to_text, safe_url, sanitize_html
from aggregator.types import Actor, EventData, JSONObject

# A lone surrogate (JSON's "\ud800" decodes to one) is no character: SQLite,
# nh3 and UTF-8 refuse it, and one such item would fail its source's every poll.
# Lone surrogates cannot be encoded and NUL cannot be stored (PostgreSQL text).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD and each NUL dropped."""
    return _UNSTORABLE.sub(lambda m: "" if m[0] == "\x00" else "\ufffd", text)


MAX_TITLE = 1_000  # characters
MAX_CONTENT = 1_000_000  # characters of HTML (and of a connector's own summary)

IdentityScheme: TypeAlias = Literal["guid", "link", "hash"]
SCHEMES: tuple[IdentityScheme, ...] = ("guid", "link", "hash")  # strongest first
CARRIED_IDS = 500  # links remembered from the last poll; a feed's window is smaller
# Guid changes on fewer kept links prove nothing: a one-item "last build" feed
# mints a guid per build under one link, and is no feed of unstable guids.
MIN_KEPT = 3
MAX_ATTACHMENTS = 20  # per item: extra is small JSON, and a gallery is not a podcast


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
    """One item's own identity: its id, else its link, else a hash."""
    if item.external_id:
        return item.external_id
    if item.url:
        return item.url
    return _hash_identity(item)


def _hash_identity(item: EventData) -> str:
    """Title and date. The content too, only when both are missing: untitled,
    undated items would otherwise all be one (editing such an item then makes
    a new one, as it must: nothing else tells it apart)."""
    when = item.published or item.updated
    parts: tuple[object, ...] = (item.title, when.isoformat() if when else "")
    if not item.title and when is None:
        parts += (item.content_html or item.summary,)
    return "hash:" + _digest(*parts)


def identity_scheme(items: Sequence[EventData]) -> IdentityScheme:
    """The strongest key some items have and no two items share: "guid",
    "link", else "hash". An item without that key falls back to its link
    (when no other item has it), then to the hash."""
    guids = [i.external_id for i in items if i.external_id]
    if guids and len(set(guids)) == len(guids):
        return "guid"
    links = [i.url for i in items if i.url]
    if links and len(set(links)) == len(links):
        return "link"
    return "hash"


def settle_identities(
    items: Sequence[EventData], state: Mapping[str, Any] | None
) -> tuple[list[EventData], JSONObject]:
    """`items` with `external_id` set by their source's identity scheme, and
    the identity state to keep for the next poll (`identity`, and `ids` when
    there are any), to merge into the source's state.

    An entry listed twice (same guid, link, title and date: one identity under
    every scheme) counts once, so the repeat costs no scheme. The scheme is
    the weaker of the last poll's and the strongest these items support
    (`identity_scheme`); guids that changed for most of the links the last
    poll saw (`_guids_unstable`) are unstable, which means "link". So a
    source only ever moves to a weaker scheme: new options keep it
    (`carried_identity`), deleting the source forgets it. Moving costs no
    duplicates: `ids` maps a digest of each link (unique in its poll) to the
    identity its item was given when that differs from the link, and an item
    whose link is there keeps that identity under "link" and "hash".
    """
    previous, carried = _identity_state(state)
    items = _listed_once(items)
    if not items:  # nothing to learn from
        return [], _kept(previous, carried)
    scheme = max(previous or "guid", identity_scheme(items), key=SCHEMES.index)
    counts = Counter(i.url for i in items if i.url)
    keys = [_link_key(i.url) if i.url and counts[i.url] == 1 else None for i in items]
    if scheme == "guid" and _guids_unstable(items, keys, carried):
        scheme = "link"
    out: list[EventData] = []
    ids: dict[str, str] = {}
    for item, key in zip(items, keys, strict=True):
        if scheme != "guid" and key is not None and key in carried:
            ident = carried[key]
        else:
            ident = _scheme_identity(item, scheme, item.url if key is not None else None)
        out.append(replace(item, external_id=ident))
        if key is not None and ident != item.url and len(ids) < CARRIED_IDS:
            ids[key] = storable(ident)  # as prepare() stores it
    return out, _kept(scheme, ids)


def carried_identity(state: Mapping[str, Any] | None) -> JSONObject:
    """The identity part of a source's state (`identity`, `ids`), junk
    dropped: what must outlive new options for settle_identities to go on."""
    return _kept(*_identity_state(state))


def _listed_once(items: Sequence[EventData]) -> list[EventData]:
    """`items` less repeats of one listing (the first wins, as in prepare).
    Guid and link alone are not enough: feeds give distinct entries one guid
    and one link (a proxy's), and only title or date tell those apart."""
    seen: set[tuple[str | None, str | None, str]] = set()
    out = []
    for item in items:
        key = (item.external_id, item.url, _hash_identity(item))
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _kept(scheme: IdentityScheme | None, ids: dict[str, str]) -> JSONObject:
    kept: JSONObject = {"identity": scheme} if scheme else {}
    if ids:
        kept["ids"] = ids
    return kept


def _identity_state(
    state: Mapping[str, Any] | None,
) -> tuple[IdentityScheme | None, dict[str, str]]:
    """The scheme and carried ids in a stored state, ignoring anything malformed."""
    state = state or {}
    scheme, ids = state.get("identity"), state.get("ids")
    if not isinstance(ids, dict):
        ids = {}
    carried = {k: v for k, v in ids.items() if isinstance(k, str) and isinstance(v, str)}
    return (scheme if scheme in SCHEMES else None), carried


def _link_key(url: str) -> str:
    return _digest(url)[:16]  # 64 bits: no collisions within one feed's links


def _scheme_identity(item: EventData, scheme: IdentityScheme, unique_link: str | None) -> str:
    """`unique_link` is the item's link when no other item in the poll has it."""
    if scheme == "guid" and item.external_id:
        return item.external_id
    if scheme != "hash" and unique_link:
        return unique_link
    return _hash_identity(item)


def _guids_unstable(
    items: Sequence[EventData], keys: Sequence[str | None], carried: Mapping[str, str]
) -> bool:
    """Most of at least MIN_KEPT items whose link the last poll saw now carry
    another guid, and their old guids are gone: a feed that mints its guids
    afresh on every fetch. (An old guid still in the poll moved to another
    link: that is no new guid.)"""
    guids = {i.external_id for i in items if i.external_id}
    kept = changed = 0
    for item, key in zip(items, keys, strict=True):
        if key is not None and key in carried:
            kept += 1
            old = carried[key]
            changed += old != item.external_id and old not in guids
    return kept >= MIN_KEPT and changed * 2 > kept


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
    once, so no read path has to remember to check them; attachments
    (`extra["attachments"]`) keep http(s) URLs only. `extra["content_base"]`,
    when a connector sets it, is what relative URLs in the content resolve
    against instead of the item's link; it is used here and not stored."""
    extra_tags = tuple(source_tags)
    seen: set[str] = set()
    out: list[Prepared] = []
    for raw in items:
        item = _bounded(_characters_only(raw))
        key = identity(item)
        if key in seen:
            continue
        seen.add(key)
        url = safe_url(item.url)
        extra = dict(item.extra)
        base = extra.pop("content_base", None)
        content = sanitize_html(item.content_html, base if isinstance(base, str) else url)
        if "attachments" in extra:
            extra["attachments"] = _attachments(extra["attachments"])
        summary = html_to_text(item.summary or item.content_html)
        tags = tuple(dict.fromkeys((*item.tags, *extra_tags)))
        actor = replace(item.actor, url=safe_url(item.actor.url))
        clean = replace(
            item, external_id=key, url=url, actor=actor, content_html=content,
            summary=summary, tags=tags, extra=extra,
        )  # fmt: skip
        # Hash what the source sent, not what we made of it: editing a source's
        # tags or upgrading the sanitiser must not turn every item into an Update.
        out.append(Prepared(key, content_hash(item), clean))
    return out


def _bounded(item: EventData) -> EventData:
    """`item` with its text cut to sizes a stream can show: whatever a source
    sends (an entity its parser expanded, a runaway page), one item never
    costs the store or a reader more than about a megabyte."""
    if (
        len(item.title) <= MAX_TITLE
        and len(item.summary) <= MAX_CONTENT
        and len(item.content_html) <= MAX_CONTENT
    ):
        return item
    title = item.title if len(item.title) <= MAX_TITLE else item.title[: MAX_TITLE - 1] + "…"
    return replace(
        item,
        title=title,
        summary=item.summary[:MAX_CONTENT],
        content_html=item.content_html[:MAX_CONTENT],  # nh3 closes what the cut leaves open
    )


def _attachments(value: object) -> list[JSONObject]:
    """Attachments fit to store and show: `{"url", "type", "length"}` with an
    absolute http(s) URL, the first of each URL, at most MAX_ATTACHMENTS."""
    found: dict[str, JSONObject] = {}
    for entry in value if isinstance(value, list) else ():
        if not isinstance(entry, dict):
            continue
        url = _web_url(entry.get("url"))
        if url is None or url in found:
            continue
        kind, length = entry.get("type"), entry.get("length")
        kind = storable(kind.strip()) if isinstance(kind, str) else ""
        found[url] = {
            "url": url,
            "type": kind or None,
            "length": length if type(length) is int and length >= 0 else None,  # not a bool
        }
        if len(found) == MAX_ATTACHMENTS:
            break
    return list(found.values())


def _web_url(url: object) -> str | None:
    """An absolute http(s) URL, made safe as safe_url does; else None."""
    safe = safe_url(storable(url)) if isinstance(url, str) else None
    if safe is None:
        return None
    parts = urlsplit(safe)
    return safe if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def _characters_only(item: EventData) -> EventData:
    """`item` with its text `storable`."""

    def fix(text: str | None) -> str | None:
        return storable(text) if text else text

    a = item.actor
    texts = (
        *(item.external_id, item.title, item.verb, item.object_type, item.summary),
        *(item.content_html, item.url, item.thread_id, a.name, a.email, a.url, *item.tags),
    )
    if not any(_UNSTORABLE.search(t) for t in texts if t):
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
