"""The `tidings` command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from aggregator import __version__, dburl
from aggregator.accounts import check_password, check_user_name, hash_password, token_hash
from aggregator.backup import backup_store
from aggregator.config import Config, default_config_path, load_config
from aggregator.connector import HttpSettings
from aggregator.dburl import password_of
from aggregator.exceptions import AccountError, ConfigError, TidingsError, blot, driver_error
from aggregator.humanize import file_size, relative_time
from aggregator.opml import OpmlError, audience_problems, export_opml, import_feeds, parse_opml
from aggregator.store import SourceStatus, Store
from web.logs import RedactFeedTokens

if TYPE_CHECKING:
    from connectors.discover import FoundFeed


def _config_arg(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """`nested`: the parser is a sub-command of one that takes --config too;
    only a value given here may replace the outer one (argparse copies every
    default of a sub-parser over the outer namespace)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS if nested else None,
        help="config file (default: $TIDINGS_CONFIG, then ./config.toml)",
    )


def _open(args: argparse.Namespace) -> tuple[Config, Store]:
    config = load_config(args.config or default_config_path())
    store = Store(config.store_url)
    store.sync_sources(config.sources, datetime.now(UTC), config_file=config.source_file)
    return config, store


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from web.app import create_app
    from web.logs import uvicorn_log_config

    config = load_config(args.config or default_config_path())
    app = create_app(config, run_poller=not args.no_poller)
    uvicorn.run(
        app,
        host=args.host or config.server.host,
        port=args.port if args.port is not None else config.server.port,
        ws="websockets-sansio",
        # A client sends subscriptions and pings: 64 KiB, not uvicorn's 16 MiB.
        ws_max_size=64 * 1024,
        log_level=args.log_level.lower(),
        log_config=uvicorn_log_config(),  # personal-feed tokens never reach the log
        proxy_headers=False,
    )
    return 0


def cmd_poll(args: argparse.Namespace) -> int:
    from aggregator.poller import Poller

    config, store = _open(args)
    ids = [args.source_id] if args.source_id else None
    # Sources made in the web admin live in the store; the Poller polls them too.
    if args.source_id and args.source_id not in {
        s.id for s in (*config.sources, *store.db_sources())
    }:
        store.close()
        raise TidingsError(f"no source {args.source_id!r} in {config.path} or the web admin")

    async def run() -> None:
        poller = Poller(config, store)
        try:
            outcomes = await poller.poll_now(ids)
        finally:
            await poller.aclose()
        for outcome in outcomes:
            if outcome.error:
                print(f"{outcome.source_id}: error: {outcome.error}")
                continue
            note = " (not modified)" if outcome.not_modified else ""
            print(f"{outcome.source_id}: {len(outcome.new_event_ids)} new{note}")
            for event_id in outcome.new_event_ids:
                event = store.get_event(event_id, viewer=None)
                if event:
                    print(f"  #{event.id} {event.verb} {event.title or '(untitled)'}")

    asyncio.run(run())
    store.close()
    return 0


def cmd_poller(args: argparse.Namespace) -> int:
    import signal

    from aggregator.poller import Poller

    config, store = _open(args)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        poller = Poller(config, store)
        poller.start()
        logging.getLogger(__name__).info(
            "polling %d sources (and any made later in the web admin)",
            len(config.sources) + len(await asyncio.to_thread(store.db_sources)),
        )
        try:
            await stop.wait()
        finally:
            await poller.aclose()

    asyncio.run(run())
    store.close()
    return 0


def _print_table(
    rows: Sequence[Sequence[str]], notes: Mapping[int, Sequence[str]] | None = None
) -> None:
    """Columns padded to their widest cell; the last one is left ragged.
    `notes[i]`: lines printed indented under row i."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for index, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
        for line in (notes or {}).get(index, ()):
            print(f"    {line}")


def _ago(when: datetime | None, now: datetime) -> str:
    return "-" if when is None else relative_time(when, now)


def _next(when: datetime | None, now: datetime) -> str:
    return "due" if when is not None and when <= now else _ago(when, now)


def _state(s: SourceStatus, alert_after: int) -> str:
    if s.origin == "system":
        return "built-in"
    if not s.enabled:
        return "disabled"
    if s.disabled_reason:
        return "stopped"  # by the poller, not by an admin: a 410 Gone
    if s.consecutive_failures >= alert_after:
        return f"ALERT failing x{s.consecutive_failures}"
    return f"failing x{s.consecutive_failures}" if s.consecutive_failures else "ok"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cmd_sources(args: argparse.Namespace) -> int:
    config, store = _open(args)
    now = datetime.now(UTC)
    rows = [("SOURCE", "KIND", "STATE", "LAST POLL", "NEXT POLL", "EVENTS", "LAST ERROR")]
    notes: dict[int, list[str]] = {}  # row index -> lines printed under it
    for s in store.source_statuses(viewer=None):
        below = []
        if s.disabled_reason:
            below.append(
                f"stopped: {_one_line(s.disabled_reason, 200)}; "
                "resume it in the web admin (Sources, Resume)"
            )
        if s.permanent_redirect:
            below.append(f"moved permanently to {s.permanent_redirect}")
        if s.last_warning and not s.last_error:
            below.append(f"last poll, partly: {_one_line(s.last_warning, 200)}")
        if below:
            notes[len(rows)] = below
        polled = s.enabled and not s.disabled_reason
        rows.append((
            s.id, s.kind, _state(s, config.poller.alert_after), _ago(s.last_poll_at, now),
            _next(s.next_poll_at, now) if polled else "-", str(s.event_count),
            _one_line(s.last_error or "", 80),
        ))  # fmt: skip
    _print_table(rows, notes)
    store.close()
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    from connectors.discover import COMMON_PATHS, discover
    from connectors.http import Fetcher

    # Settings only when asked for: discovery needs no store and no config file.
    settings = load_config(args.config).http_settings if args.config else HttpSettings()

    async def run() -> list[FoundFeed]:
        async with Fetcher.open(settings) as fetcher:
            return await discover(fetcher, args.url)

    found = asyncio.run(run())
    if not found:
        paths = ", ".join(COMMON_PATHS)
        print(
            f"no feed found for {args.url}: it is not a feed, declares no "
            f'<link rel="alternate"> feed, and none of {paths} on its host answers with one',
            file=sys.stderr,
        )
        return 1
    _print_table([(f.url, f.type, f.title or "-") for f in found])
    return 0


def cmd_import_opml(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    try:
        data = Path(args.file).read_bytes()
    except OSError as err:
        raise TidingsError(f"cannot read {args.file}: {err.strerror or err}") from None
    try:
        subscriptions = parse_opml(data)
    except OpmlError as err:
        raise TidingsError(f"{args.file}: {err}") from None
    audience = args.audience or None
    if audience is not None and (problems := audience_problems(audience)):
        raise ConfigError([f"--audience: {p.removeprefix('audience: ')}" for p in problems])
    _config, store = _open(args)
    # The bar goes to stderr, and only to a terminal: stdout stays the summary.
    bar = tqdm(
        total=len(subscriptions.feeds), unit="feed", file=sys.stderr,
        disable=not sys.stderr.isatty(), leave=False,
    )  # fmt: skip
    try:
        result = import_feeds(
            store, subscriptions, audience=audience, actor=_actor(), now=datetime.now(UTC),
            progress=bar.update,
        )  # fmt: skip
    finally:
        bar.close()
        store.close()
    for problem in result.problems:
        print(f"{args.file}:{problem.line}: {problem.message}", file=sys.stderr)
    created, present, invalid = len(result.created), result.present, result.invalid
    print(f"{created} created, {present} already present, {invalid} invalid")
    return 0


def cmd_export_opml(args: argparse.Namespace) -> int:
    _config, store = _open(args)
    try:
        export = export_opml(store, now=datetime.now(UTC))
    finally:
        store.close()
    if args.output in (None, "-"):
        sys.stdout.buffer.write(export.document)
        sys.stdout.flush()
    else:
        try:
            Path(args.output).write_bytes(export.document)
        except OSError as err:
            raise TidingsError(f"cannot write {args.output}: {err.strerror or err}") from None
    where = "" if args.output in (None, "-") else f" to {args.output}"
    print(f"wrote {export.written} feed sources{where}", file=sys.stderr)
    if export.left_out:
        print(f"left out (no feed URL to share): {', '.join(export.left_out)}", file=sys.stderr)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    if not args.no_store and (problem := _store_problem(config.store_url)):
        raise TidingsError(f"{args.file} is valid, but {problem}")
    print(f"{args.file}: ok ({len(config.sources)} sources)")
    return 0


STORE_CONNECT_TIMEOUT = 5  # seconds: check-config answers soon when a server is away


def _store_problem(store_url: str) -> str | None:
    """Why the store cannot be opened, or None when it can. Creates nothing:
    a SQLite file that does not exist yet is fine where it can be made, as
    every command makes it (and its directory) on first use."""
    url = make_url(store_url)
    if url.get_backend_name() == "sqlite":
        try:
            return _sqlite_problem(url.database)
        except OSError as err:  # a directory on the way that may not be read
            return f"cannot open the store {url.database}: {err.strerror or err}"
    return _server_problem(url)


def _sqlite_problem(database: str | None) -> str | None:
    if not database or database == ":memory:":
        return None
    db = Path(database)
    if not db.exists():
        ancestor = db.absolute().parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            return f"cannot create the store {db}: {ancestor} is not a directory"
        if not os.access(ancestor, os.W_OK | os.X_OK):
            return f"cannot create the store {db}: the directory {ancestor} is not writable"
        return None
    if not db.is_file():
        return f"the store {db} is not a file"
    # SQLite makes its -wal and -shm files beside the database.
    for path in (db, db.absolute().parent):
        if not os.access(path, os.W_OK):
            return f"cannot write to the store {db}: {path} is not writable"
    try:
        uri = f"{db.absolute().as_uri()}?mode=rw"  # never creates the file
        with closing(sqlite3.connect(uri, uri=True, timeout=STORE_CONNECT_TIMEOUT)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as err:
        return f"cannot open the store {db}: {err}"
    return None


def _server_problem(url: URL) -> str | None:
    shown = dburl.shown(url)
    postgresql = url.get_backend_name() == "postgresql"
    try:
        engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args={"connect_timeout": STORE_CONNECT_TIMEOUT} if postgresql else {},
        )
    except ImportError as err:
        extra = " (pip install 'tidings[postgres]')" if postgresql else ""
        return f"cannot reach the store {shown}: its driver is not installed: {err}{extra}"
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        said = blot(str(driver_error(err)).strip(), password_of(url))
        lines = [line.strip() for line in said.splitlines() if line.strip()]
        return f"cannot reach the store {shown}: " + "\n    ".join(lines)
    finally:
        engine.dispose()
    return None


def cmd_backup(args: argparse.Namespace) -> int:
    config = load_config(args.config or default_config_path())
    done = backup_store(config.store_url, Path(args.path), force=args.force)
    for warning in done.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    size = f"{file_size(done.size) or '0 B'}, {done.size} bytes"
    if done.format == "sqlite":
        print(f"wrote {done.path} ({size}): a copy of the SQLite store {done.store}")
    else:
        print(
            f"wrote {done.path} ({size}): a pg_dump archive of {done.store}; restore it "
            f"into an empty database with: pg_restore --dbname=URL {done.path}"
        )
    return 0


# --- people: users, groups, API tokens, the audit log -------------------------


def _actor() -> str:
    """Who the audit log names for a change made here: the login name."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no $USER and no passwd entry (some containers)
        return "cli"


@contextmanager
def _people(args: argparse.Namespace) -> Iterator[Store]:
    _config, store = _open(args)
    try:
        yield store
    finally:
        store.close()


def _when(when: datetime | None) -> str:
    return "never" if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _read_password(name: str, env_var: str | None) -> str:
    """The new password for `name`: from the variable named by --password-env,
    else typed twice at the terminal. Never echoed, printed or logged."""
    if env_var:
        password = os.environ.get(env_var)
        if not password:
            raise AccountError(f"--password-env: the environment variable {env_var} is not set")
        return check_password(password)
    if not sys.stdin.isatty():
        raise AccountError(
            "no terminal to ask for the password on; put it in an environment variable "
            "and name that variable with --password-env VAR"
        )
    password = check_password(getpass.getpass(f"Password for {name}: "))
    if getpass.getpass("Same password again: ") != password:
        raise AccountError("the two passwords differ; nothing was changed")
    return password


def _groups_note(groups: Sequence[str]) -> str:
    return f"groups: {', '.join(sorted(groups))}" if groups else "no groups"


def cmd_users_create(args: argparse.Namespace) -> int:
    check_user_name(args.name)
    with _people(args) as store:
        # Ask for the password only when the account can be made.
        for user in store.people.users():
            if user.name.lower() == args.name.lower():
                known = "" if user.name == args.name else f" as {user.name!r}"
                raise AccountError(f"user {args.name!r} already exists{known}")
        password_hash = hash_password(_read_password(args.name, args.password_env))
        user = store.people.create_user(
            args.name,
            password_hash=password_hash,
            admin=args.admin,
            groups=args.group,
            actor=_actor(),
            now=datetime.now(UTC),
        )
        no_admin = not any(u.is_admin and not u.disabled for u in store.people.users())
    print(f"created {user.role} {user.name} ({_groups_note(sorted(user.groups))})")
    if no_admin:  # setup mode is over, yet nobody may administer from the web
        print(
            f"note: there is no admin; make one with: tidings users set-role {user.name} admin",
            file=sys.stderr,
        )
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    with _people(args) as store:
        users = store.people.users()
        tokens: dict[str, int] = {}
        for token in store.people.tokens():
            tokens[token.user] = tokens.get(token.user, 0) + 1
    if not users:
        print("no users yet: until one exists only this machine may use the web app;")
        print("create the first admin with: tidings users create NAME --admin")
        return 0
    rows = [("NAME", "ROLE", "GROUPS", "STATE", "TOKENS", "CREATED")]
    for u in users:
        rows.append((
            u.name, u.role, ",".join(sorted(u.groups)) or "-",
            "disabled" if u.disabled else "active", str(tokens.get(u.name, 0)),
            _when(u.created_at),
        ))  # fmt: skip
    _print_table(rows)
    return 0


def _update_user(
    args: argparse.Namespace, done: str, *, disabled: bool | None = None, sign_out: bool = False
) -> int:
    with _people(args) as store:
        store.people.update_user(
            args.name, actor=_actor(), now=datetime.now(UTC), disabled=disabled, sign_out=sign_out
        )
    print(done)
    return 0


def cmd_users_disable(args: argparse.Namespace) -> int:
    return _update_user(args, f"disabled {args.name}; their sessions have ended", disabled=True)


def cmd_users_enable(args: argparse.Namespace) -> int:
    return _update_user(args, f"enabled {args.name}", disabled=False)


def cmd_users_sign_out(args: argparse.Namespace) -> int:
    return _update_user(args, f"ended every session of {args.name}", sign_out=True)


def cmd_users_set_password(args: argparse.Namespace) -> int:
    with _people(args) as store:
        if store.people.user(args.name) is None:
            raise AccountError(f"no user {args.name!r}")
        password_hash = hash_password(_read_password(args.name, args.password_env))
        store.people.update_user(
            args.name, actor=_actor(), now=datetime.now(UTC), password_hash=password_hash
        )
    print(f"changed the password of {args.name}; their sessions have ended")
    return 0


def cmd_users_set_role(args: argparse.Namespace) -> int:
    with _people(args) as store:
        store.people.update_user(
            args.name, actor=_actor(), now=datetime.now(UTC), admin=args.role == "admin"
        )
    print(f"{args.name} is now {'an admin' if args.role == 'admin' else 'a member'}")
    return 0


def cmd_users_delete(args: argparse.Namespace) -> int:
    with _people(args) as store:
        store.people.delete_user(args.name, actor=_actor(), now=datetime.now(UTC))
    print(f"deleted {args.name} and their API tokens")
    return 0


def cmd_groups_list(args: argparse.Namespace) -> int:
    with _people(args) as store:
        groups = store.people.groups()
    if not groups:
        print("no groups yet: tidings groups create NAME")
        return 0
    rows = [("GROUP", "MEMBERS")]
    rows += [(name, ", ".join(members) or "-") for name, members in groups.items()]
    _print_table(rows)
    return 0


def cmd_groups_create(args: argparse.Namespace) -> int:
    with _people(args) as store:
        store.people.create_group(args.name, actor=_actor(), now=datetime.now(UTC))
    print(f"created group {args.name}")
    return 0


def cmd_groups_delete(args: argparse.Namespace) -> int:
    with _people(args) as store:
        store.people.delete_group(args.name, actor=_actor(), now=datetime.now(UTC))
    print(f"deleted group {args.name}")
    return 0


def cmd_groups_add(args: argparse.Namespace) -> int:
    with _people(args) as store:
        for user in args.users:
            store.people.add_member(args.group, user, actor=_actor(), now=datetime.now(UTC))
    print(f"added {', '.join(args.users)} to {args.group}")
    return 0


def cmd_groups_remove(args: argparse.Namespace) -> int:
    with _people(args) as store:
        if args.group not in store.people.groups():
            raise AccountError(f"no group {args.group!r}")
        for user in args.users:
            store.people.remove_member(args.group, user, actor=_actor(), now=datetime.now(UTC))
    print(f"removed {', '.join(args.users)} from {args.group}")
    return 0


def cmd_tokens_create(args: argparse.Namespace) -> int:
    with _people(args) as store:
        token = store.people.create_token(
            args.user, args.name, actor=_actor(), now=datetime.now(UTC)
        )
        token_id, _uid = store.people.snapshot().tokens[token_hash(token)]
    print(f"created API token {token_id} ({args.name.strip()}) for {args.user}.")
    print("It is shown only now; send it as 'Authorization: Bearer TOKEN'.")
    print(token)  # alone on the last line: scripts take it with `tail -n1`
    return 0


def cmd_tokens_list(args: argparse.Namespace) -> int:
    with _people(args) as store:
        if args.user is not None and store.people.user(args.user) is None:
            raise AccountError(f"no user {args.user!r}")
        tokens = store.people.tokens(args.user)
    if not tokens:
        print("no API tokens")
        return 0
    rows = [("ID", "USER", "NAME", "CREATED", "LAST USED")]
    for t in tokens:
        rows.append((str(t.id), t.user, t.name, _when(t.created_at), _when(t.last_used_at)))
    _print_table(rows)
    return 0


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    with _people(args) as store:
        found = {t.id: t for t in store.people.tokens()}.get(args.id)
        store.people.revoke_token(args.id, actor=_actor(), now=datetime.now(UTC))
    note = f" ({found.name}) of {found.user}" if found else ""
    print(f"revoked API token {args.id}{note}")
    return 0


def _detail(detail: dict[str, object]) -> str:
    return " ".join(
        f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in detail.items()
    )


def cmd_audit(args: argparse.Namespace) -> int:
    with _people(args) as store:
        entries = store.people.audit_log(limit=args.limit)
    if not entries:
        print("the audit log is empty")
        return 0
    rows = [("AT", "ACTOR", "ACTION", "TARGET", "DETAIL")]
    for e in entries:
        rows.append((_when(e.at), e.actor, e.action, e.target, _detail(e.detail)))
    _print_table(rows)
    return 0


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {value!r}")
    return number


def _add_people_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        func: Callable[[argparse.Namespace], int],
        summary: str,
        aliases: Sequence[str] = (),
    ) -> argparse.ArgumentParser:
        description = summary[:1].upper() + summary[1:] + "."
        p = parent.add_parser(name, help=summary, description=description, aliases=aliases)
        _config_arg(p, nested=True)
        p.set_defaults(func=func)
        return p

    def password_env(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--password-env",
            metavar="VAR",
            help="read the password from the environment variable VAR (default: prompt twice)",
        )

    users = sub.add_parser(
        "users",
        help="list and manage user accounts",
        description="List (the default) or manage user accounts.",
    )
    _config_arg(users)
    users.set_defaults(func=cmd_users_list)
    us = users.add_subparsers(dest="action", metavar="ACTION")
    command(us, "list", cmd_users_list, "list users (the default)", aliases=["ls"])
    p = command(us, "create", cmd_users_create, "create a user")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--admin", action="store_true", help="an admin (default: a member)")
    p.add_argument(
        "--group", metavar="G", action="append", default=[],
        help="a group to join (created when missing); repeat for several",
    )  # fmt: skip
    password_env(p)
    p = command(
        us, "set-password", cmd_users_set_password, "set a user's password (ends their sessions)"
    )
    p.add_argument("name", metavar="NAME")
    password_env(p)
    for name, func, summary in (
        ("disable", cmd_users_disable, "disable a user: no sign-in, no API access"),
        ("enable", cmd_users_enable, "enable a disabled user"),
        ("sign-out", cmd_users_sign_out, "end all of a user's sessions (API tokens stay)"),
    ):
        p = command(us, name, func, summary)
        p.add_argument("name", metavar="NAME")
    p = command(us, "set-role", cmd_users_set_role, "make a user an admin or a member")
    p.add_argument("name", metavar="NAME")
    p.add_argument("role", choices=["admin", "member"])
    p = command(us, "delete", cmd_users_delete, "delete a user and their API tokens")
    p.add_argument("name", metavar="NAME")

    groups = sub.add_parser(
        "groups", help="list and manage groups", description="List (the default) or manage groups."
    )
    _config_arg(groups)
    groups.set_defaults(func=cmd_groups_list)
    gs = groups.add_subparsers(dest="action", metavar="ACTION")
    command(
        gs, "list", cmd_groups_list, "list groups with their members (the default)", aliases=["ls"]
    )
    p = command(gs, "create", cmd_groups_create, "create a group")
    p.add_argument("name", metavar="NAME")
    p = command(gs, "delete", cmd_groups_delete, "delete a group (its members stay)")
    p.add_argument("name", metavar="NAME")
    p = command(gs, "add", cmd_groups_add, "add users to a group (created when missing)")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("users", metavar="USER", nargs="+")
    p = command(gs, "remove", cmd_groups_remove, "remove users from a group")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("users", metavar="USER", nargs="+")

    tokens = sub.add_parser(
        "tokens",
        help="list and manage API tokens",
        description="List (the default) or manage API tokens.",
    )
    _config_arg(tokens)
    tokens.add_argument("--user", metavar="USER", help="only this user's tokens")
    tokens.set_defaults(func=cmd_tokens_list)
    ts = tokens.add_subparsers(dest="action", metavar="ACTION")
    p = command(
        ts,
        "list",
        cmd_tokens_list,
        "list API tokens, never their values (the default)",
        aliases=["ls"],
    )
    p.add_argument(
        "--user", metavar="USER", default=argparse.SUPPRESS, help="only this user's tokens"
    )
    p = command(
        ts, "create", cmd_tokens_create, "create an API token; prints it alone on the last line"
    )
    p.add_argument("user", metavar="USER")
    p.add_argument(
        "--name", metavar="LABEL", default="cli", help="what the token is for (default: cli)"
    )
    p = command(ts, "revoke", cmd_tokens_revoke, "revoke an API token by its id")
    p.add_argument("id", metavar="ID", type=int)

    p = sub.add_parser("audit", help="the audit log of changes to people and sources, newest first")
    _config_arg(p)
    p.add_argument(
        "--limit", metavar="N", type=_positive, default=50, help="entries to show (default: 50)"
    )
    p.set_defaults(func=cmd_audit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidings", description="A calm, live activity stream from feeds, intranets and mail."
    )
    parser.add_argument("--version", action="version", version=f"tidings {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="serve the dashboard, API and live streams (and poll)")
    _config_arg(p)
    p.add_argument("--host", help="address to listen on (default: server.host)")
    p.add_argument("--port", type=int, help="port to listen on (default: server.port)")
    p.add_argument("--no-poller", action="store_true", help="serve only; poll elsewhere")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("poll", help="poll sources now and print what was new")
    _config_arg(p)
    p.add_argument("source_id", nargs="?", metavar="SOURCE_ID", help="only this source")
    p.set_defaults(func=cmd_poll)

    p = sub.add_parser(
        "poller", help="poll on schedule without serving (run several to share the work)"
    )
    _config_arg(p)
    p.set_defaults(func=cmd_poller)

    p = sub.add_parser("sources", help="list sources with their health")
    _config_arg(p)
    p.set_defaults(func=cmd_sources)

    p = sub.add_parser(
        "discover",
        help="find the feeds of a web page (or check that an address is one)",
        description="Print the feeds URL is or offers, one per line: URL, type, title. "
        'Looks at the page\'s <link rel="alternate"> feeds, and only when it declares none, '
        "at a few common paths on its host. Exits 1 when none is found.",
    )
    p.add_argument("url", metavar="URL")
    p.add_argument(
        "--config", metavar="FILE", help="take the [http] settings from FILE (default: built-in)"
    )
    p.set_defaults(func=cmd_discover)

    p = sub.add_parser(
        "import-opml",
        help="add the feeds of an OPML subscription list as sources",
        description="Add every feed of an OPML file as a feed source, as the web admin's "
        "import does: folders and category attributes become tags; feeds already present "
        "are skipped; each outline that is not a usable feed is reported with its line. "
        "Exits 0 when the import ran.",
    )
    _config_arg(p)
    p.add_argument("file", metavar="FILE", help="the OPML file")
    p.add_argument(
        "--audience", metavar="G", action="append", default=[],
        help="a group to see the new sources' events; repeat for several "
        "(default: the feed kind's, everyone)",
    )  # fmt: skip
    p.set_defaults(func=cmd_import_opml)

    p = sub.add_parser(
        "export-opml",
        help="write every feed source as an OPML subscription list",
        description="Write every feed source (from the config file and the web admin) as "
        "OPML 2.0, its tags as category attributes.",
    )
    _config_arg(p)
    p.add_argument(
        "-o", "--output", metavar="OUT", help="the file to write (default: standard output)"
    )
    p.set_defaults(func=cmd_export_opml)

    p = sub.add_parser(
        "check-config",
        help="validate a config file and that its store can be reached",
        description="Validate a config file, and that the store it names can be opened "
        "(a server answers, the database exists, a SQLite file's directory is writable). "
        "Exits 2, saying why, when either is wrong.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--no-store", action="store_true", help="check the file only, not the store it names"
    )
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser(
        "backup",
        help="copy the store to a file, consistently, while Tidings runs",
        description="Copy the store to PATH: SQLite's online backup (a database file) or, "
        "on PostgreSQL, pg_dump --format=custom (an archive for pg_restore). The copy is "
        "written beside PATH and renamed into place only when complete. The store is "
        "only read: it is neither created nor migrated.",
    )
    _config_arg(p)
    p.add_argument("path", metavar="PATH", help="the file to write")
    p.add_argument("--force", action="store_true", help="replace PATH if it exists")
    p.set_defaults(func=cmd_backup)

    _add_people_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx2 logs every request's full URL at INFO: query-string tokens
    # included. Our own messages name URLs through redact().
    for noisy in ("alembic", "apscheduler", "httpx2", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:  # a feed's URL is its credential
        handler.addFilter(RedactFeedTokens())
    try:
        code: int = args.func(args)
    except TidingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
