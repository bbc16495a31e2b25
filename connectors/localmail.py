"""Local mail archives: `kind = "maildir"` and `kind = "mbox"`.

Config-file sources only: the path must lie under `[files] allowed_dirs`
(connectors.files checks it, and gives sources made in the web admin no
directories at all). Both kinds only ever read: no flag is set, nothing moves
from new/ to cur/, no lock file is made. Messages map to events through
connectors.mail.message_event, like IMAP's.

Incremental state:

- maildir, per folder: a high-water mark on the files' ctime, plus the keys
  (file names before ":") seen within MARGIN of it. ctime rather than mtime:
  a delivery's rename into new/ sets it and no program can set it back,
  while mail syncers (mbsync, offlineimap) set mtime to the message's old
  date. A rename (new/ to cur/, a flag change) makes a message look new
  again; reading it again is a no-op, since its identity (Message-ID, else
  the hash of its bytes) is unchanged. MARGIN covers a delivery that landed
  during a listing with a ctime below the newest one seen; the key list is
  bounded by what arrives within MARGIN, and capped.
- mbox: the byte offset reached, the file's inode and a hash of the bytes
  just before the offset. Another inode (rotation), a shorter file
  (truncation) or other bytes there (a rewrite) start over from the top;
  identities keep that from storing anything twice. Separators are lines
  starting with "From ", as the standard library's mailbox.mbox reads them;
  the file is scanned here rather than through mailbox.mbox, which reads the
  whole file at every open, so that a poll reads only what was appended.

The admin's Test (`preview`) reads only the newest messages and no state:
a maildir's newest files by ctime, an mbox's last messages, found by
scanning the file backwards from its end.
"""

from __future__ import annotations

import asyncio
import hashlib
import mailbox
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from aggregator.connector import Connector, PollContext
from aggregator.exceptions import FetchError
from aggregator.types import EventData, JSONObject, PollResult
from connectors.files import allowed_path, local_path
from connectors.mail import MailOptions, parse_messages

BATCH = 50  # messages per run_cpu task
MARGIN_NS = 60 * 10**9  # see the module docstring
MAX_SEEN = 10_000  # keys kept per maildir folder
TAIL = 256  # bytes before an mbox offset that must not change
SETTLE_NS = 10 * 10**9  # an mbox's last message without a blank line after it is complete
LINE = 64 * 1024  # bytes read at a time while scanning an mbox


class LocalMailOptions(MailOptions):
    """An mbox file (and the base of the maildir options)."""

    path: str = Field(
        description="the mailbox, relative to the config file; under [files] allowed_dirs"
    )
    max_message_bytes: int = Field(
        default=1_000_000,
        ge=1024,
        le=64 * 1024 * 1024,
        description="bytes read of each message at most (the rest is not read)",
    )
    max_messages_per_poll: int = Field(
        default=1000, ge=1, le=100_000, description="messages read per poll; the rest next poll"
    )

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        if not path.strip() or "\0" in path or local_path(path) is None:
            raise ValueError("must be a file path (relative to the config file)")
        return path


class MaildirOptions(LocalMailOptions):
    """A maildir and which of its folders to read."""

    folders: list[str] = Field(
        default_factory=lambda: ["INBOX"],
        min_length=1,
        description='INBOX is the maildir itself; other names are Maildir++ folders ("Sent" '
        'is the directory ".Sent")',
    )

    @field_validator("folders")
    @classmethod
    def _folders(cls, folders: list[str]) -> list[str]:
        for name in folders:
            if not name.strip() or any(c in name for c in "/\\\0") or ".." in name:
                raise ValueError(f"{name!r} is not a folder name (no slashes, no ..)")
        return folders


@dataclass(frozen=True, slots=True)
class _Raw:
    data: bytes  # at most max_message_bytes
    size: int  # the whole message's


async def _events(found: list[_Raw], opts: LocalMailOptions, ctx: PollContext) -> list[EventData]:
    """The messages as events, in order; the batches go to the parser pool
    together, so every core reads."""
    parsed = await asyncio.gather(
        *(
            ctx.run_cpu(
                parse_messages,
                [(r.data, r.size) for r in found[at : at + BATCH]],
                opts.rules(),
                ctx.now,
            )
            for at in range(0, len(found), BATCH)
        )
    )
    return [event for batch in parsed for event in batch if event is not None]


def _location(path: str, ctx: PollContext) -> Path:
    where = local_path(path)
    if where is None:
        raise FetchError(f"{path}: not a local path")
    return allowed_path(where, ctx)


def _cap_warning(opts: LocalMailOptions) -> str:
    return (
        f"read {opts.max_messages_per_poll} messages (max_messages_per_poll); "
        "the rest follow at the next polls"
    )


# Maildir


@dataclass(frozen=True, slots=True)
class _File:
    ctime: int
    key: str
    path: Path


def _list_maildir(folder: Path) -> list[_File]:
    """The messages in new/ and cur/ (regular files only: a symlink could
    lead outside the allowed directories)."""
    found: list[_File] = []
    for sub in ("new", "cur"):
        try:
            entries = list(os.scandir(folder / sub))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            try:
                ctime = entry.stat(follow_symlinks=False).st_ctime_ns
            except FileNotFoundError:  # renamed since the listing: seen next poll
                continue
            found.append(_File(ctime, entry.name.split(":", 1)[0], Path(entry.path)))
    return found


def _read_file(path: Path, cap: int) -> _Raw | None:
    try:
        with path.open("rb") as file:
            data = file.read(cap)
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:  # moved by a mail client since the listing
        return None
    return _Raw(data, max(size, len(data)))


def _read_maildir(
    folder: Path, state: JSONObject, budget: int, cap: int
) -> tuple[list[_Raw], JSONObject, bool]:
    """(messages new since `state`, the folder's next state, whether more wait)."""
    mark = state.get("ctime") if isinstance(state.get("ctime"), int) else None
    raw_seen = state.get("seen")
    seen: dict[str, int] = (
        {k: v for k, v in raw_seen.items() if isinstance(k, str) and isinstance(v, int)}
        if isinstance(raw_seen, dict)
        else {}
    )
    files = _list_maildir(folder)
    fresh = sorted(
        (f for f in files if (mark is None or f.ctime > mark - MARGIN_NS) and f.key not in seen),
        key=lambda f: (f.ctime, f.key),
    )
    more = len(fresh) > budget
    found: list[_Raw] = []
    for f in fresh[:budget]:
        raw = _read_file(f.path, cap)
        if raw is not None:
            found.append(raw)
            seen[f.key] = f.ctime
    if seen:
        mark = max(mark or 0, *seen.values())
    recent = sorted(
        ((k, v) for k, v in seen.items() if mark is None or v > mark - MARGIN_NS),
        key=lambda kv: kv[1],
    )[-MAX_SEEN:]
    next_state: JSONObject = {"seen": dict(recent)}
    if mark is not None:
        next_state["ctime"] = mark
    return found, next_state, more


def _read_newest(folders: list[Path], count: int, cap: int) -> list[_Raw]:
    """The newest `count` messages of the folders together, by ctime (then
    key), oldest first; only those files are read."""
    files = sorted(
        (f for folder in folders for f in _list_maildir(folder)),
        key=lambda f: (f.ctime, f.key),
        reverse=True,
    )
    found: list[_Raw] = []
    for f in files:
        if len(found) == count:
            break
        raw = _read_file(f.path, cap)
        if raw is not None:  # else moved since the listing: the next older one instead
            found.append(raw)
    return found[::-1]


class MaildirConnector(Connector[MaildirOptions]):
    kind = "maildir"
    Options = MaildirOptions
    default_audience: ClassVar[tuple[str, ...]] = ()  # admins only unless the config says

    def _folders(self, ctx: PollContext) -> list[tuple[str, Path]]:
        root = _location(self.options.path, ctx)
        try:
            box = mailbox.Maildir(root, factory=None, create=False)
            names = [] if self.options.folders == ["INBOX"] else box.list_folders()
        except (mailbox.NoSuchMailboxError, OSError) as err:
            raise FetchError(f"{self.options.path}: not a readable maildir ({err})") from None
        if not (root / "cur").is_dir() and not (root / "new").is_dir():
            raise FetchError(f"{self.options.path}: not a maildir (no cur/ or new/)")
        out = []
        for name in self.options.folders:
            if name == "INBOX":
                out.append((name, root))
            elif name in names:
                # the folder itself must be under the allowed directories too
                out.append((name, allowed_path(root / f".{name}", ctx)))
            else:
                raise FetchError(f"{self.options.path}: no folder {name!r} (found: {names})")
        return out

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        opts = self.options
        folders = await asyncio.to_thread(self._folders, ctx)
        old = state.get("folders") if isinstance(state, dict) else None
        old = old if isinstance(old, dict) else {}
        budget = opts.max_messages_per_poll
        found: list[_Raw] = []
        states: JSONObject = {}
        capped = False
        for name, folder in folders:
            kept = old.get(name)
            previous: JSONObject = kept if isinstance(kept, dict) else {}
            raws, states[name], more = await asyncio.to_thread(
                _read_maildir, folder, previous, budget, opts.max_message_bytes
            )
            found += raws
            budget -= len(raws)
            capped = capped or more
            if budget <= 0:  # later folders keep their state and go on next poll
                states.update({n: old[n] for n, _ in folders if n not in states and n in old})
                capped = True
                break
        events = await _events(found, opts, ctx)
        return PollResult(
            events=events,
            state={"folders": states},
            warning=_cap_warning(opts) if capped else None,
        )

    async def preview(self, ctx: PollContext, limit: int) -> PollResult:
        """The newest `limit` messages of the folders, not the whole archive;
        reads no state and returns none."""
        opts = self.options
        folders = await asyncio.to_thread(self._folders, ctx)
        if limit <= 0:
            return PollResult()
        found = await asyncio.to_thread(
            _read_newest, [folder for _, folder in folders], limit, opts.max_message_bytes
        )
        return PollResult(events=await _events(found, opts, ctx))


# Mbox


def _tail(file: Any, offset: int) -> str:
    start = max(0, offset - TAIL)
    file.seek(start)
    return hashlib.sha256(file.read(offset - start)).hexdigest()


def _finish(buf: bytearray, size: int, last: bytes) -> _Raw:
    """A message as mailbox.mbox gives it: without the blank line that
    separates it from the next."""
    if last in (b"\n", b"\r\n") and size == len(buf):
        del buf[-len(last) :]
        size -= len(last)
    return _Raw(bytes(buf), size)


def _scan(
    file: Any, info: os.stat_result, offset: int, budget: int, cap: int, now_ns: int
) -> tuple[list[_Raw], int, bool]:
    """(the messages from `offset`, which starts a line, on; the offset
    reached; whether more wait beyond `budget`)."""
    file.seek(offset)
    found: list[_Raw] = []
    pos, start = offset, None
    buf, size, last, at_line_start = bytearray(), 0, b"", True
    more = False
    while True:
        line = file.readline(LINE)
        if not line:
            break
        if at_line_start and line.startswith(b"From "):
            if start is not None:
                found.append(_finish(buf, size, last))
                if len(found) == budget:
                    more = True
                    break
            start, buf, size, last = pos, bytearray(), 0, b""
        elif start is not None:
            size += len(line)
            if len(buf) < cap:
                buf += line[: cap - len(buf)]
            last = line if at_line_start else b""
        at_line_start = line.endswith(b"\n")
        pos += len(line)
    if more:
        reached = pos
    elif start is None:
        reached = pos  # no message (or junk before the first "From ")
    elif last in (b"\n", b"\r\n") or now_ns - info.st_mtime_ns > SETTLE_NS:
        found.append(_finish(buf, size, last))
        reached = pos
    else:  # the last message may still be being written: read it next poll
        reached = start
    return found, reached, more


def _read_mbox(
    path: Path, state: JSONObject, budget: int, cap: int, now_ns: int
) -> tuple[list[_Raw], JSONObject, bool]:
    """(messages after the stored offset, next state, whether more wait)."""
    try:
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            offset = state.get("offset")
            restart = not (
                isinstance(offset, int)
                and state.get("inode") == info.st_ino
                and 0 <= offset <= info.st_size
                and state.get("tail") == _tail(file, offset)
            )
            if restart or not isinstance(offset, int):
                offset = 0
            found, reached, more = _scan(file, info, offset, budget, cap, now_ns)
            next_state: JSONObject = {
                "offset": reached,
                "inode": info.st_ino,
                "tail": _tail(file, reached),
            }
    except OSError as err:
        raise FetchError(f"cannot read {path}: {err.strerror or err}") from None
    return found, next_state, more


def _last_separators(file: Any, size: int, count: int) -> list[int]:
    """The offsets of the last `count` separator lines before `size`, in
    file order: read backwards a block at a time, so that only the end of a
    large archive is read. A separator starts the file or follows a newline,
    as _scan reads them."""
    found: list[int] = []
    hi, after = size, b""  # `after`: the bytes just past the block
    while hi > 0 and len(found) < count:
        lo = max(0, hi - LINE)
        file.seek(lo)
        block = file.read(hi - lo)
        data = block + after
        end = len(data)  # a match's newline lies in `block`: `after` is 5 bytes at most
        while len(found) < count:
            at = data.rfind(b"\nFrom ", 0, end)
            if at < 0:
                break
            found.append(lo + at + 1)
            end = at + 5  # the next match starts before this one
        if lo == 0 and len(found) < count and block.startswith(b"From "):
            found.append(0)
        hi, after = lo, block[:5]
    return found[::-1]


def _read_mbox_newest(path: Path, count: int, cap: int, now_ns: int) -> list[_Raw]:
    """The last `count` messages (of those a poll would read: not a last one
    still being written), read from their separators on; nothing else of the
    file is read but the scan back to them."""
    try:
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            # one more than wanted, in case the last is still being written
            starts = _last_separators(file, info.st_size, count + 1)
            if not starts:
                return []
            found, _, _ = _scan(file, info, starts[0], count + 1, cap, now_ns)
    except OSError as err:
        raise FetchError(f"cannot read {path}: {err.strerror or err}") from None
    return found[-count:]


class MboxConnector(Connector[LocalMailOptions]):
    kind = "mbox"
    Options = LocalMailOptions
    default_audience: ClassVar[tuple[str, ...]] = ()  # admins only unless the config says

    def _path(self, ctx: PollContext) -> Path:
        path = _location(self.options.path, ctx)
        if not path.is_file():
            raise FetchError(f"{self.options.path}: no such mbox file")
        return path

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        opts = self.options
        path = self._path(ctx)
        now_ns = int(ctx.now.timestamp() * 1e9)
        found, next_state, more = await asyncio.to_thread(
            _read_mbox,
            path,
            state or {},
            opts.max_messages_per_poll,
            opts.max_message_bytes,
            now_ns,
        )
        events = await _events(found, opts, ctx)
        return PollResult(
            events=events,
            state=next_state,
            warning=_cap_warning(opts) if more else None,
        )

    async def preview(self, ctx: PollContext, limit: int) -> PollResult:
        """The last `limit` messages of the file, not the whole archive; reads
        no state and returns none."""
        opts = self.options
        path = self._path(ctx)
        if limit <= 0:
            return PollResult()
        now_ns = int(ctx.now.timestamp() * 1e9)
        found = await asyncio.to_thread(
            _read_mbox_newest, path, limit, opts.max_message_bytes, now_ns
        )
        return PollResult(events=await _events(found, opts, ctx))
