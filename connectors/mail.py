"""Mail messages as events: the MIME side shared by imap, maildir and mbox.

`message_event` reads one message (its raw RFC 5322 bytes, possibly only the
first part of them) with the standard library's `email` parser and never
raises: mail is written by every program ever made. The parser runs with
`policy.compat32`, which keeps each header as the text it was; the few headers
an event needs are decoded here, leniently (RFC 2047 words in unknown
charsets, cut off or glued to text; raw 8-bit bytes read as UTF-8, else as the
body's charset, else Windows-1252). policy.default's header registry parses
every header it is asked for, Content-Type a dozen times a message, and cost
1.1 ms of a message's 1.6 ms; it also gives up on much of the junk read here.
A body in an unknown or wrong charset falls back to UTF-8, then Windows-1252.
It is a module-level function so a process pool can run it.

Identity is the Message-ID, else a hash of the bytes (DESIGN.md): stable
across an IMAP UIDVALIDITY reset or a maildir rename, and two different
messages without a Message-ID stay two events.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import html
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from functools import partial
from typing import Any

from pydantic import Field

from aggregator.connector import ConnectorOptions
from aggregator.sanitize import html_to_text
from aggregator.types import Actor, EventData, JSONObject

log = logging.getLogger(__name__)


class MailOptions(ConnectorOptions):
    """Options every mailbox kind shares."""

    store_bodies: bool = Field(
        default=False, description="keep each message's body as content, not only a summary"
    )
    summary_chars: int = Field(
        default=500,
        ge=0,
        le=500,  # every kind's summary is at most 500 characters (aggregator.decide.prepare)
        description="characters of the text kept as the summary (at most 500)",
    )

    def rules(self) -> MailRules:
        return MailRules(store_bodies=self.store_bodies, summary_chars=self.summary_chars)


@dataclass(frozen=True, slots=True)
class MailRules:
    """What of a message is kept (from MailOptions)."""

    store_bodies: bool = False
    summary_chars: int = 500


EARLIEST = datetime(1980, 1, 1, tzinfo=UTC)  # older Date headers are a broken clock
FUTURE_SLACK = timedelta(days=1)
MAX_ADDRESSES = 100  # per To/Cc: extra is small JSON, and a mass mailing lists thousands
MAX_FILES = 50
MAX_ID = 500  # characters of a Message-ID; a longer one is hashed
FALLBACK_CHARSETS = ("utf-8", "windows-1252")
# Labels Python does not know, or knows as something narrower than what
# mailers mean by them (WHATWG Encoding: gb2312 is gbk, iso-8859-1 is 1252).
CHARSET_ALIASES = {
    "iso-8859-8-i": "iso-8859-8",
    "x-user-defined": "windows-1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "iso-8859-1": "windows-1252",
    "latin1": "windows-1252",
    "us-ascii": "windows-1252",
    "ascii": "windows-1252",
    "ks_c_5601-1987": "cp949",
    "x-mac-roman": "mac-roman",
}
# An encoded word (RFC 2047), tolerant: unterminated at the end, spaces inside.
_ENCODED_WORD = re.compile(r"=\?([^?]+)\?([bBqQ])\?([^?]*)(?:\?=|$)")
_SURROGATES = re.compile("[\udc80-\udcff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
_BLANK_LINES = re.compile(r"\n\s*\n")
_WORDS = re.compile(r"[\s,;]+")
_PARSER = BytesParser(policy=policy.compat32)  # headers kept as text: see above


def message_event(
    raw: bytes, rules: MailRules = MailRules(), now: datetime | None = None
) -> EventData:
    """One message (its raw RFC 5322 bytes) as an event. Never raises for
    any input: a message nothing can be made of is an untitled event whose
    id is the hash of its bytes. `now` bounds a believable Date."""
    now = now or datetime.now(UTC)
    try:
        msg = _PARSER.parsebytes(raw)
    except Exception:  # the parser is lenient; this is for what it still trips on
        return EventData(external_id=_bytes_id(raw), verb="Create", object_type="Message")
    hint = _charset_hint(msg)
    message_id = _message_id(msg)
    name, address = _sender(msg, hint)
    list_id = _list_id(msg)
    plain, markup = _bodies(msg)
    extra: JSONObject = {
        "to": _addresses(msg, "To"),
        "cc": _addresses(msg, "Cc"),
        "files": _files(msg, plain, markup),
    }
    if message_id:
        extra["message_id"] = message_id
    if list_id:
        extra["list_id"] = list_id
    plain_text = _part_text(plain) if plain is not None else None
    html_text = _part_text(markup) if markup is not None else None
    return EventData(
        external_id=_identity(message_id, raw),
        title=" ".join(header_text(msg, "Subject", hint).split()),
        verb="Create",
        object_type="Message",
        summary=_summary(plain_text, html_text, rules.summary_chars),
        content_html=_content(plain_text, html_text) if rules.store_bodies else "",
        actor=Actor(name=name, email=address),
        published=_date(msg, now),
        tags=(list_id,) if list_id else (),
        thread_id=_thread_root(msg) or message_id,
        extra=extra,
    )


def parse_messages(
    messages: list[tuple[bytes, int]], rules: MailRules, now: datetime
) -> list[EventData | None]:
    """message_event over a batch: one process-pool task rather than one per
    message. Each message is (the bytes read, its whole size); one read only
    in part is marked `truncated_at`. None stands for a message the parser
    failed on, which is a bug (it never raises), so one message cannot stop
    a mailbox."""
    out: list[EventData | None] = []
    for data, size in messages:
        try:
            event = message_event(data, rules, now)
        except Exception:
            log.exception("a message could not be read (%d bytes)", len(data))
            out.append(None)
            continue
        if size > len(data):
            event = replace(event, extra={**event.extra, "truncated_at": len(data)})
        out.append(event)
    return out


def _bytes_id(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _identity(message_id: str | None, raw: bytes) -> str:
    if message_id is None:
        return _bytes_id(raw)
    if len(message_id) > MAX_ID:  # an id is a key, not a payload
        return "sha256:" + hashlib.sha256(message_id.encode("utf-8", "replace")).hexdigest()
    return message_id


# Headers


def _raw_header(msg: Message, name: str) -> str | None:
    """The header as it was in the message (unfolded), without the policy's
    parsing: for headers the policy cannot parse or parses too strictly."""
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            return " ".join(str(value).split())
    return None


def header_text(msg: Message, name: str, hint: str | None = None) -> str:
    """A header as text: RFC 2047 words decoded, raw 8-bit bytes read as
    UTF-8, else as `hint` (the body's charset: what the sender's mailer
    used), else Windows-1252; control characters dropped."""
    raw = _raw_header(msg, name)
    return clean_text(raw, hint) if raw is not None else ""


def clean_text(text: str, hint: str | None = None) -> str:
    """Surrogate-escaped bytes decoded (see header_text), leftover encoded
    words decoded, control characters replaced by spaces."""
    if _SURROGATES.search(text):
        data = text.encode("utf-8", "surrogateescape")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = decode_bytes(data, hint)
    if "=?" in text:
        text = decode_encoded_words(text)
    return _CONTROL.sub(" ", text)


def decode_encoded_words(text: str) -> str:
    """RFC 2047 words decoded leniently: unknown charsets, bad base64, words
    inside quotes or glued to text, a word cut off at the end. Space between
    two words is dropped (RFC 2047, 6.2), and adjacent words in one charset
    are joined before decoding (mailers split a character across two)."""
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending:
            out.append(decode_bytes(b"".join(pending), pending_charset))
            pending.clear()
        pending_charset = None

    for match in _ENCODED_WORD.finditer(text):
        between = text[pos : match.start()]
        charset = match.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        if not pending or between.strip() or charset.lower() != (pending_charset or "").lower():
            flush()
            if pos == 0 or between.strip():
                out.append(between)
        pending_charset = charset
        pending.append(_word_bytes(match.group(2), match.group(3)))
        pos = match.end()
    flush()
    out.append(text[pos:])
    return "".join(out)


def _word_bytes(encoding: str, payload: str) -> bytes:
    data = payload.encode("utf-8", "surrogateescape")
    if encoding in "qQ":
        return binascii.a2b_qp(data, header=True)
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    data = data[: len(data) - len(data) % 4 if len(data) % 4 == 1 else len(data)]
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return payload.encode("utf-8", "replace")


def decode_bytes(data: bytes, declared: str | None) -> str:
    """Text from bytes in a declared charset that may be unknown or wrong:
    the declared one, else UTF-8, else Windows-1252 (which maps almost every
    byte, the rest replaced)."""
    tried: list[str] = []
    for name in (_charset(declared), *FALLBACK_CHARSETS):
        if name is None or name in tried:
            continue
        tried.append(name)
        try:
            return data.decode(name)
        except (LookupError, UnicodeError):
            continue
    return data.decode("windows-1252", errors="replace")


def _charset(declared: str | None) -> str | None:
    """A codec name for a declared charset, None when Python has none."""
    if not declared:
        return None
    label = declared.strip().strip("\"'").lower()
    label = CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return None


def _message_id(msg: Message) -> str | None:
    """The Message-ID without its angle brackets; the raw header, since the
    policy cuts ids with spaces or without brackets short."""
    return _first_id(_raw_header(msg, "Message-ID"), whole=True)


def _first_id(value: str | None, *, whole: bool = False) -> str | None:
    """The first <id> in a header; without brackets, the first word (or the
    whole value, for a Message-ID that is one broken id)."""
    if not value:
        return None
    value = clean_text(value).strip()
    found = _ANGLE_ID.search(value)
    if found:
        return found.group(1)
    words = value.strip("<> \t").split()
    if not words:
        return None
    return " ".join(words) if whole else words[0]


def _thread_root(msg: Message) -> str | None:
    """The thread's first message: the first of References, else In-Reply-To."""
    for name in ("References", "In-Reply-To"):
        found = _first_id(_raw_header(msg, name))
        if found and len(found) <= MAX_ID:
            return found
    return None


def _list_id(msg: Message) -> str | None:
    """The list's id from List-Id ("Dev list <dev.lists.example.org>")."""
    value = _raw_header(msg, "List-Id")
    if not value:
        return None
    found = _first_id(value)
    return found.lower() if found and len(found) <= 200 else None


def _address_list(msg: Message, name: str) -> list[tuple[str, str]]:
    """(display name, address) pairs of an address header, parsed before its
    encoded words are decoded (a decoded name may hold commas or brackets)."""
    raw = _raw_header(msg, name)
    if raw is None:
        return []
    try:
        pairs = getaddresses([raw])
    except Exception:
        pairs = [parseaddr(raw)]
    if any(not address.partition("@")[0] for _, address in pairs) and "@" in raw:
        # "a@x.org b@x.org": bare addresses without commas, which the parser
        # refuses as a whole; read one by one.
        pairs = [(n, a) for word in _WORDS.split(raw) for n, a in getaddresses([word]) if a]
    return pairs


def _addresses(msg: Message, name: str) -> list[str]:
    """Lowercase addresses of To or Cc, in order, once each (what `to:` matches)."""
    found: dict[str, None] = {}
    for _, address in _address_list(msg, name):
        address = clean_text(address).strip().lower()
        local, at, domain = address.partition("@")
        if local and at and domain and len(found) < MAX_ADDRESSES:
            found.setdefault(address, None)
    return list(found)


def _sender(msg: Message, hint: str | None) -> tuple[str | None, str | None]:
    """(a person's name, lowercase address) of the first From (else Sender)."""
    for header in ("From", "Sender"):
        for display, address in _address_list(msg, header):
            name = " ".join(clean_text(display, hint).split()).strip("\"' ")
            if "@" in name and parseaddr(name)[1]:  # "bob@x.org" <bob@x.org>: no name
                name = ""
            address = clean_text(address, hint).strip()
            if "@" not in address:  # "MAILER-DAEMON", or a broken header: a name
                name, address = name or " ".join(address.split()), ""
            address = address.lower()
            if address or name:
                return name or None, address or None
    return None, None


def _date(msg: Message, now: datetime) -> datetime | None:
    """The Date header in UTC; None when missing, unparsable or absurd (before
    1980, or more than a day ahead of `now`): the pipeline then uses the
    time the message was first seen."""
    raw = _raw_header(msg, "Date")
    try:
        when = parsedate_to_datetime(clean_text(raw)) if raw else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if not isinstance(when, datetime):
        return None
    try:
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return when if EARLIEST <= when <= now + FUTURE_SLACK else None


# Bodies


def _charset_hint(msg: Message) -> str | None:
    """The first charset a part declares (not us-ascii, which says nothing
    about 8-bit bytes): how to read raw 8-bit headers."""
    for part in _guarded(lambda: list(_walk(msg)), []):
        charset = _guarded(part.get_content_charset, None)
        if isinstance(charset, str) and charset.lower() not in ("us-ascii", "ascii"):
            return charset
    return None


def _walk(part: Message) -> Iterator[Message]:
    """Every part, without descending into attached messages (message/*),
    which are attachments rather than this message's body."""
    yield part
    if part.is_multipart() and part.get_content_maintype() != "message":
        payload = part.get_payload()
        for child in payload if isinstance(payload, list) else ():
            if isinstance(child, Message):
                yield from _walk(child)


def _guarded(fn: Callable[[], Any], default: Any) -> Any:
    try:
        return fn()
    except Exception:
        return default


def _is_attachment(part: Message) -> bool:
    disposition = _guarded(part.get_content_disposition, None)
    return disposition == "attachment" or bool(_guarded(part.get_filename, None))


def _bodies(msg: Message) -> tuple[Message | None, Message | None]:
    """The first text/plain and text/html part that are the message's body,
    found as EmailMessage.get_body finds them: not attachments, not inside
    attached messages, and of a multipart/related only its start part."""
    plain = markup = None
    for part in _body_candidates(msg):
        kind = _guarded(part.get_content_type, "")
        if kind == "text/plain" and plain is None:
            plain = part
        elif kind == "text/html" and markup is None:
            markup = part
    return plain, markup


def _body_candidates(part: Message) -> Iterator[Message]:
    if _guarded(part.get_content_disposition, None) == "attachment":
        return
    if not part.is_multipart():
        yield part
        return
    kind = _guarded(part.get_content_type, "")
    payload = part.get_payload()
    children = [c for c in payload if isinstance(c, Message)] if isinstance(payload, list) else []
    if not kind.startswith("multipart/"):
        return  # message/rfc822 and the like: an attachment, not the body
    if kind == "multipart/related" and children:
        start = _guarded(partial(part.get_param, "start"), None)
        root = next((c for c in children if start and c.get("Content-ID") == start), None)
        children = [root or children[0]]
    for child in children:
        yield from _body_candidates(child)


def _payload(part: Message) -> bytes:
    """A part's decoded bytes (base64 and quoted-printable undone leniently)."""
    data = _guarded(partial(part.get_payload, decode=True), b"")
    return data if isinstance(data, bytes) else b""


def _part_text(part: Message) -> str:
    charset = _guarded(part.get_content_charset, None)
    return decode_bytes(_payload(part), charset).replace("\r\n", "\n")


def _summary(plain: str | None, markup: str | None, limit: int) -> str:
    """The head of the text, as HTML-escaped text: the pipeline reads a
    summary as HTML, and "a <b> c" in a plain message is no tag."""
    if limit <= 0:
        return ""
    if plain and plain.strip():
        text = html_to_text(html.escape(plain, quote=False), limit)
    elif markup:
        text = html_to_text(markup, limit)
    else:
        return ""
    return html.escape(text, quote=False)


def _content(plain: str | None, markup: str | None) -> str:
    """The body as raw HTML (sanitised by the pipeline): the HTML part, else
    the plain text in paragraphs."""
    if markup and markup.strip():
        return markup
    if not plain or not plain.strip():
        return ""
    paragraphs = (p.strip("\n") for p in _BLANK_LINES.split(plain.strip()))
    return "".join(
        "<p>" + html.escape(p, quote=False).replace("\n", "<br>\n") + "</p>\n"
        for p in paragraphs
        if p.strip()
    )


def _files(msg: Message, *bodies: Message | None) -> list[JSONObject]:
    """Attachments as {"name", "type", "size"} (decoded bytes present; a
    truncated message lists what it has). Their bytes are not kept."""
    out: list[JSONObject] = []
    for part in _guarded(lambda: list(_walk(msg)), []):
        if any(part is b for b in bodies) or (part is msg and not _is_attachment(part)):
            continue
        kind = _guarded(part.get_content_type, "application/octet-stream")
        if part.is_multipart() and not kind.startswith("message/"):
            continue
        inline_text = kind.startswith("text/") and not _is_attachment(part)
        if inline_text or kind.startswith("multipart/"):
            continue
        name = _filename(part)
        if kind.startswith("message/"):
            size = len(_guarded(part.as_bytes, b""))
        else:
            size = len(_payload(part))
        out.append({"name": name, "type": kind, "size": size})
        if len(out) == MAX_FILES:
            break
    return out


def _filename(part: Message) -> str | None:
    """An attachment's name (RFC 2231 and RFC 2047 decoded). A name in raw
    8-bit bytes comes back from compat32 as U+FFFD: it is then read from the
    headers decoded here first."""
    name = _guarded(part.get_filename, None)
    if isinstance(name, str) and "\ufffd" in name:
        decoded = Message()
        for header in ("Content-Disposition", "Content-Type"):
            if (raw := _raw_header(part, header)) is not None:
                decoded[header] = clean_text(raw)
        name = _guarded(decoded.get_filename, None) or name
    return clean_text(name) if isinstance(name, str) and name else None
