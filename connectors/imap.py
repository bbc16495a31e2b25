"""IMAP mailboxes (IMAPClient): UID-incremental, read-only sync, and IDLE.

A poll connects, logs in, and for each watched folder EXAMINEs it (read only:
Tidings never sets \\Seen or changes a mailbox), compares its UIDVALIDITY with
the state, and fetches the UIDs above the last one seen, in batches, each
message at most `max_message_bytes` (`BODY.PEEK[]<0.N>`: a partial fetch that
sets no flag). The state is `{"folders": {name: {"uidvalidity", "last_uid"}}}`;
it is committed with the events, so a crash or a dropped connection loses
nothing and repeats nothing. A UIDVALIDITY change refetches the folder: a
message's identity is its Message-ID (else a hash of its bytes), so the
refetch stores no duplicate.

`watch` keeps an IDLE connection on one folder (INBOX when it is watched) and
calls `wake` when the server announces a new message; aggregator.idle runs it
and turns a wake into a poll. Other folders follow the source's interval.

IMAPClient is blocking: every call runs in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import imaplib
import ipaddress
import logging
import socket
import ssl
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from aggregator.connector import Connector, PollContext
from aggregator.exceptions import ConnectorError
from aggregator.secrets import SecretRef
from aggregator.types import EventData, JSONObject, PollResult
from connectors.files import option_path_problem
from connectors.mail import MailOptions, parse_messages
from connectors.microsoft import MicrosoftOptions, access_token

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"tls": 993, "starttls": 143, "none": 143}
TOKEN_COMMAND_TIMEOUT = 30.0
WILDCARDS = ("*", "%")
IN_FLIGHT = 4  # fetched batches waiting for the parser pool, at most
OVERVIEW_FOLDERS = 50  # folders the admin's Test lists with their counts


def _error(message: str) -> PydanticCustomError:
    return PydanticCustomError("imap_option", message)


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine (plain text is safe only there)."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
        ".localhost"
    ):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ImapOptions(MailOptions):
    """An IMAP account: where, how to log in, which folders."""

    model_config = ConfigDict(hide_input_in_errors=True)  # inputs may be pasted secrets

    host: str = Field(description="the IMAP server's host name or address")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="default 993 for tls, 143 otherwise"
    )
    tls: Literal["tls", "starttls", "none"] = Field(
        default="tls",
        description="tls (implicit, port 993), starttls, or none (plain text: loopback "
        "hosts only, unless insecure_plaintext = true)",
    )
    insecure_plaintext: bool = Field(
        default=False, description="allow tls = none to a host that is not this machine"
    )
    username: str = Field(description="the account's user name")
    auth: Literal["login", "xoauth2"] = Field(
        default="login", description="login (LOGIN with the password) or xoauth2 (a token)"
    )
    password: SecretRef | None = Field(default=None, description="password reference (login)")
    token: SecretRef | None = Field(
        default=None, description="OAuth 2 access token reference (xoauth2)"
    )
    token_command: list[str] | None = Field(
        default=None,
        description="config-file sources only: a command (argv, no shell) printing an "
        "OAuth 2 access token (xoauth2), run at every connection",
    )
    microsoft: MicrosoftOptions | None = Field(
        default=None,
        description="xoauth2 with a Microsoft 365 token, fetched with the app's client "
        "credentials through MSAL (the microsoft extra)",
    )
    folders: list[str] = Field(
        default_factory=lambda: ["INBOX"],
        min_length=1,
        description="folders to watch; * and % are IMAP LIST wildcards",
    )
    ca_bundle: str | None = Field(
        default=None,
        description="config-file sources only: PEM file of the CAs to trust, instead of "
        "the system's (relative to the config file)",
    )
    max_message_bytes: int = Field(
        default=1_000_000,
        ge=1024,
        le=64 * 1024 * 1024,
        description="bytes fetched of each message at most (the rest is not read)",
    )
    batch_size: int = Field(default=50, ge=1, le=1000, description="messages per FETCH")
    max_messages_per_poll: int = Field(
        default=2000, ge=1, description="messages read per poll at most; the rest next poll"
    )
    timeout: float = Field(default=30.0, gt=0, le=600, description="socket timeout, seconds")
    idle: bool = Field(default=True, description="watch the first folder with IDLE (push)")
    idle_renew: float = Field(
        default=25 * 60.0,
        gt=0,
        le=29 * 60.0,
        description="seconds after which IDLE is re-issued (servers drop it after 30 min)",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        host = host.strip()
        if not host or any(c.isspace() or c in "/@" for c in host):
            raise _error("must be a host name or address")
        return host

    @field_validator("username")
    @classmethod
    def _username(cls, username: str) -> str:
        if not username or any(c in username for c in "\r\n\0"):
            raise _error("must be a non-empty user name without line breaks")
        return username

    @field_validator("folders")
    @classmethod
    def _folders(cls, folders: list[str]) -> list[str]:
        if any(not f.strip() or any(c in f for c in "\r\n\0") for f in folders):
            raise _error("folder names must be non-empty, without line breaks")
        return folders

    @field_validator("token_command")
    @classmethod
    def _command(cls, command: list[str] | None) -> list[str] | None:
        if command is not None and (not command or not command[0].strip()):
            raise _error("must be a command and its arguments, e.g. ['oauth-token', 'imap']")
        return command

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle(cls, path: str | None, info: ValidationInfo) -> str | None:
        if path is None:
            return None
        if problem := option_path_problem(path):
            raise _error(problem)
        if info.data.get("tls") == "none":
            raise _error("only with tls = tls or starttls")
        return path

    @model_validator(mode="after")
    def _consistent(self) -> ImapOptions:
        if self.tls == "none" and not self.insecure_plaintext and not is_loopback(self.host):
            raise _error(
                f'tls = "none" sends the password in plain text: only to a loopback host, '
                f"not {self.host}, unless insecure_plaintext = true"
            )
        if self.auth == "login":
            if self.password is None:
                raise _error("auth = login needs password (an env: or file: reference)")
            if self.token is not None or self.token_command is not None:
                raise _error("token and token_command are for auth = xoauth2")
            if self.microsoft is not None:
                raise _error("microsoft is for auth = xoauth2")
        else:
            if self.password is not None:
                raise _error("auth = xoauth2 takes token, token_command or microsoft, not password")
            given = [self.token, self.token_command, self.microsoft]
            if sum(x is not None for x in given) != 1:
                raise _error("auth = xoauth2 needs one of token, token_command and microsoft")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.tls]


@dataclass(frozen=True, slots=True)
class Login:
    """What a connection needs, resolved for this poll (secrets included)."""

    source_id: str
    host: str
    port: int
    tls: str
    username: str
    auth: str
    secret: str  # the password or the access token: never in a message
    ca_bundle: Path | None
    timeout: float

    def where(self) -> str:
        return f"imap source {self.source_id} ({self.host}:{self.port})"

    def scrub(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text


class _Dropped(ConnectorError):
    """The connection broke: the poll or the watch is retried later."""


def _reason(err: BaseException) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {err.verify_message or err}"
    if isinstance(err, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err) or type(err).__name__
    return text.decode(errors="replace") if isinstance(text, bytes) else text


@contextmanager
def _failures(login: Login, doing: str) -> Iterator[None]:
    """Turns whatever IMAPClient, imaplib, ssl or the socket raise into a
    ConnectorError naming the source and host, never the secret."""
    try:
        yield
    except ConnectorError:
        raise
    except LoginError as err:
        raise ConnectorError(
            login.scrub(
                f"{login.where()}: the server refused the login of {login.username!r}: "
                f"{_reason(err)}"
            )
        ) from None
    except (OSError, imaplib.IMAP4.abort, EOFError) as err:
        raise _Dropped(
            login.scrub(f"{login.where()}: connection failed while {doing}: {_reason(err)}")
        ) from None
    except (IMAPClientError, imaplib.IMAP4.error) as err:
        raise ConnectorError(
            login.scrub(f"{login.where()}: error while {doing}: {_reason(err)}")
        ) from None


def connect(login: Login) -> IMAPClient:
    """A logged-in client (blocking: call it in a thread)."""
    context = None
    if login.tls != "none":
        context = ssl.create_default_context(
            cafile=str(login.ca_bundle) if login.ca_bundle else None
        )
    with _failures(login, "connecting"):
        client = IMAPClient(
            login.host,
            login.port,
            ssl=login.tls == "tls",
            ssl_context=context,
            timeout=login.timeout,
        )
    try:
        with _failures(login, "starting TLS"):
            if login.tls == "starttls":
                if not client.has_capability("STARTTLS"):
                    raise ConnectorError(f"{login.where()}: the server does not offer STARTTLS")
                client.starttls(context)
        with _failures(login, "logging in"):
            if login.auth == "xoauth2":
                client.oauth2_login(login.username, login.secret)
            else:
                client.login(login.username, login.secret)
    except BaseException:
        _close(client)
        raise
    return client


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # already gone: closing is all that is left
        try:
            client.shutdown()
        except Exception:
            log.debug("closing an IMAP connection failed", exc_info=True)


def _selectable(flags: tuple[bytes, ...]) -> bool:
    return b"\\Noselect" not in flags and b"\\NonExistent" not in flags


def _folder_names(client: IMAPClient, patterns: list[str]) -> list[str]:
    """The folders `patterns` name, in order, each once; wildcards through LIST."""
    names: list[str] = []
    for pattern in patterns:
        if any(w in pattern for w in WILDCARDS):
            for flags, _delimiter, name in client.list_folders(pattern=pattern):
                if _selectable(flags):
                    names.append(name)
        else:
            names.append(pattern)
    return list(dict.fromkeys(names))


def _overview(client: IMAPClient, login: Login, watched: list[str]) -> list[str]:
    """What the admin's Test says about the account: the login, then its
    folders with their message counts (STATUS: nothing is selected), the
    watched ones marked, at most OVERVIEW_FOLDERS of them."""
    lines = [f"logged in as {login.username} at {login.host}:{login.port} (tls = {login.tls})"]
    names = [name for flags, _delimiter, name in client.list_folders() if _selectable(flags)]
    lines.append(f"{len(names)} folder(s), {len(watched)} watched by this source")
    for name in sorted(names, key=lambda n: (n not in watched, n.casefold()))[:OVERVIEW_FOLDERS]:
        count = client.folder_status(name, [b"MESSAGES"]).get(b"MESSAGES", 0)
        lines.append(f"{name}: {count} message(s){' (watched)' if name in watched else ''}")
    if len(names) > OVERVIEW_FOLDERS:
        lines.append(f"... and {len(names) - OVERVIEW_FOLDERS} more folder(s)")
    return lines


@dataclass(slots=True)
class FolderPlan:
    name: str
    uidvalidity: int
    last_uid: int
    uids: list[int]  # new UIDs, ascending


def _plan(client: IMAPClient, name: str, known: JSONObject | None) -> FolderPlan:
    info = client.select_folder(name, readonly=True)  # EXAMINE: never changes the mailbox
    uidvalidity = int(info.get(b"UIDVALIDITY", 0))
    last = 0
    if known and known.get("uidvalidity") == uidvalidity:
        seen = known.get("last_uid")
        last = seen if isinstance(seen, int) else 0
    elif known:
        log.info("folder %s: UIDVALIDITY changed, refetching it", name)
    # "last+1:*" always includes the highest UID, even when it is below last+1.
    uids = sorted(u for u in client.search(["UID", f"{last + 1}:*"]) if u > last)
    return FolderPlan(name, uidvalidity, last, uids)


def _fetch(client: IMAPClient, uids: list[int], cap: int) -> dict[int, tuple[bytes, int]]:
    """Raw bytes (at most `cap`) and full size of each UID still there."""
    found = client.fetch(uids, [b"RFC822.SIZE", f"BODY.PEEK[]<0.{cap}>".encode()])
    out: dict[int, tuple[bytes, int]] = {}
    for uid, data in found.items():
        body = next((v for k, v in data.items() if k.startswith(b"BODY[")), None)
        if isinstance(body, bytes):
            out[int(uid)] = (body, int(data.get(b"RFC822.SIZE") or len(body)))
    return out


class ImapConnector(Connector[ImapOptions]):
    kind = "imap"
    Options = ImapOptions
    default_audience: ClassVar[tuple[str, ...]] = ()

    async def login(self, ctx: PollContext) -> Login:
        """Resolve the credentials and files for one connection."""
        opts = self.options
        where = f"imap source {ctx.source_id} ({opts.host}:{opts.effective_port})"
        ca = None
        if opts.ca_bundle is not None:
            if ctx.web_made:  # parse_source refuses it too
                raise ConnectorError(f"{where}: sources made in the web admin may not name files")
            ca = (ctx.base_dir / opts.ca_bundle).resolve()
            if not await asyncio.to_thread(ca.is_file):
                raise ConnectorError(f"{where}: ca_bundle {ca} is not a file")
        if opts.auth == "login":
            assert opts.password is not None  # the options' validator says so
            secret = await ctx.secret(opts.password)
        elif opts.token is not None:
            secret = await ctx.secret(opts.token)
        elif opts.microsoft is not None:
            if ctx.web_made and opts.microsoft.authority is not None:
                raise ConnectorError(
                    f"{where}: microsoft.authority makes the server send the client "
                    "secret to that URL: only sources in the config file may set it"
                )
            client_secret = await ctx.secret(opts.microsoft.client_secret)
            secret = await access_token(opts.microsoft, client_secret, where, opts.timeout)
        else:
            if ctx.web_made:
                raise ConnectorError(
                    f"{where}: token_command runs a program on the server: "
                    "only sources in the config file may use it"
                )
            assert opts.token_command is not None
            secret = await asyncio.to_thread(_run_token_command, opts.token_command, ctx, where)
        return Login(
            ctx.source_id,
            opts.host,
            opts.effective_port,
            opts.tls,
            opts.username,
            opts.auth,
            secret,
            ca,
            opts.timeout,
        )

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        opts = self.options
        login = await self.login(ctx)
        known = state.get("folders") if isinstance(state, dict) else None
        known = known if isinstance(known, dict) else {}
        folders: dict[str, JSONObject] = {}
        events: list[EventData] = []
        unreadable = 0
        budget = opts.max_messages_per_poll
        client = await asyncio.to_thread(connect, login)
        try:
            with _failures(login, "listing folders"):
                names = await asyncio.to_thread(_folder_names, client, opts.folders)
            for name in names:
                with _failures(login, f"examining {name}"):
                    old = known.get(name)
                    plan = await asyncio.to_thread(
                        _plan, client, name, old if isinstance(old, dict) else None
                    )
                todo = plan.uids[:budget]
                budget -= len(todo)
                parsed = await self._read(client, login, name, todo, ctx)
                unreadable += sum(1 for e in parsed if e is None)
                events.extend(e for e in parsed if e is not None)
                last = todo[-1] if todo else plan.last_uid
                folders[name] = {"uidvalidity": plan.uidvalidity, "last_uid": last}
                if budget <= 0:
                    break
        finally:
            await asyncio.to_thread(_close, client)
        # Folders not reached this time (the cap) keep what was known of them.
        for name, value in known.items():
            if name not in folders and isinstance(value, dict):
                folders[name] = value
        warnings = []
        if budget <= 0:
            warnings.append(
                f"read {opts.max_messages_per_poll} messages (max_messages_per_poll); "
                "the rest follows at the next polls"
            )
        if unreadable:
            warnings.append(f"{unreadable} message(s) could not be read and were skipped")
        return PollResult(
            events=events,
            state={"folders": folders},
            warning="; ".join(warnings) or None,
        )

    async def _read(
        self, client: IMAPClient, login: Login, folder: str, uids: list[int], ctx: PollContext
    ) -> list[EventData | None]:
        """The messages `uids` name, as events in UID order (a UID expunged
        since the search is simply absent). The next batch is fetched while
        the parser pool reads the last ones; at most IN_FLIGHT batches wait
        there, so a fast server does not fill memory with raw mail."""
        opts = self.options
        rules = opts.rules()
        waiting: deque[asyncio.Future[list[EventData | None]]] = deque()
        out: list[EventData | None] = []
        try:
            for start in range(0, len(uids), opts.batch_size):
                batch = uids[start : start + opts.batch_size]
                with _failures(login, f"fetching from {folder}"):
                    found = await asyncio.to_thread(_fetch, client, batch, opts.max_message_bytes)
                messages = [found[uid] for uid in batch if uid in found]
                waiting.append(
                    asyncio.ensure_future(ctx.run_cpu(parse_messages, messages, rules, ctx.now))
                )
                if len(waiting) >= IN_FLIGHT:
                    out += await waiting.popleft()
            while waiting:
                out += await waiting.popleft()
        finally:
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
        return out

    async def preview(self, ctx: PollContext, limit: int) -> PollResult:
        """The newest `limit` messages of each folder, not the whole archive,
        and (as notes) the login and the account's folders."""
        login = await self.login(ctx)
        events: list[EventData] = []
        client = await asyncio.to_thread(connect, login)
        try:
            with _failures(login, "listing folders"):
                names = await asyncio.to_thread(_folder_names, client, self.options.folders)
                notes = await asyncio.to_thread(_overview, client, login, names)
            with _failures(login, "reading the newest messages"):
                for name in names:
                    plan = await asyncio.to_thread(_plan, client, name, None)
                    newest = plan.uids[-limit:] if limit > 0 else []
                    parsed = await self._read(client, login, name, newest, ctx)
                    events.extend(e for e in parsed if e is not None)
        finally:
            await asyncio.to_thread(_close, client)
        return PollResult(events=events[-limit:] if limit > 0 else [], notes=tuple(notes))

    # --- push ---------------------------------------------------------------

    async def watch(self, ctx: PollContext, wake: Callable[[], None]) -> None:
        """Keep an IDLE connection and call `wake` (on the event loop) when a
        message arrives, and once when IDLE starts (what came while nobody
        watched). Returns at once when the source does not want IDLE or the
        server lacks it (the interval polls are then all there is); raises
        ConnectorError when the connection breaks, for the caller to retry."""
        if not self.options.idle:
            return
        login = await self.login(ctx)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        stop = threading.Event()

        def notify() -> None:
            loop.call_soon_threadsafe(wake)

        def finish(err: BaseException | None) -> None:
            if not done.done():
                if err is None:
                    done.set_result(None)
                else:
                    done.set_exception(err)

        def run() -> None:
            try:
                idle_session(login, self.options, notify, stop)
            except BaseException as err:
                loop.call_soon_threadsafe(finish, err)
            else:
                loop.call_soon_threadsafe(finish, None)

        # Its own thread, not the default executor: an IDLE lasts for hours.
        thread = threading.Thread(target=run, name=f"idle:{ctx.source_id}", daemon=True)
        thread.start()
        try:
            await asyncio.shield(done)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, login.timeout)


def idle_session(
    login: Login, opts: ImapOptions, wake: Callable[[], None], stop: threading.Event
) -> None:
    """One IDLE connection until `stop` is set (blocking). IDLE is re-issued
    every `idle_renew` seconds; `stop` is looked at every second."""
    client = connect(login)
    try:
        with _failures(login, "starting IDLE"):
            if not client.has_capability("IDLE"):
                log.info("%s: no IDLE: polling at the interval only", login.where())
                return
            names = _folder_names(client, opts.folders)
            if not names:
                return
            folder = "INBOX" if "INBOX" in names else names[0]
            client.select_folder(folder, readonly=True)
        wake()  # whatever arrived while nobody was watching
        while not stop.is_set():
            with _failures(login, f"waiting in IDLE on {folder}"):
                client.idle()
                renew_at = time.monotonic() + opts.idle_renew
                try:
                    while not stop.is_set() and (left := renew_at - time.monotonic()) > 0:
                        wait = min(1.0, left)
                        began = time.monotonic()
                        responses = client.idle_check(timeout=wait)
                        if _announces_mail(responses):
                            wake()
                        elif not responses and time.monotonic() - began < wait / 2:
                            # idle_check returns early and empty on EOF: DONE
                            # then tells a dead connection from a spurious wake.
                            break
                finally:
                    _text, responses = client.idle_done()
                if _announces_mail(responses):
                    wake()
    finally:
        _close(client)


def _announces_mail(responses: list[Any]) -> bool:
    return any(
        isinstance(r, tuple) and len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses
    )


def _run_token_command(command: list[str], ctx: PollContext, where: str) -> str:
    try:
        done = subprocess.run(
            command,
            cwd=ctx.base_dir,
            capture_output=True,
            timeout=TOKEN_COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ConnectorError(f"{where}: token_command failed: {_reason(err)}") from None
    if done.returncode != 0:
        raise ConnectorError(f"{where}: token_command exited with status {done.returncode}")
    token = done.stdout.decode(errors="replace").strip()
    if not token:
        raise ConnectorError(f"{where}: token_command printed no token")
    return token
