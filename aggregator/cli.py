"""The `tidings` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from aggregator import __version__
from aggregator.config import Config, default_config_path, load_config
from aggregator.exceptions import TidingsError
from aggregator.humanize import relative_time
from aggregator.store import Store


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="config file (default: $TIDINGS_CONFIG, then ./config.toml)",
    )


def _open(args: argparse.Namespace) -> tuple[Config, Store]:
    config = load_config(args.config or default_config_path())
    store = Store(config.store_url)
    store.sync_sources(config.sources, datetime.now(UTC), config_file=str(config.path))
    return config, store


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from web.app import create_app

    config = load_config(args.config or default_config_path())
    app = create_app(config, run_poller=not args.no_poller)
    uvicorn.run(
        app,
        host=args.host or config.server.host,
        port=args.port if args.port is not None else config.server.port,
        ws="websockets-sansio",
        log_level=args.log_level.lower(),
        proxy_headers=False,
    )
    return 0


def cmd_poll(args: argparse.Namespace) -> int:
    from aggregator.poller import Poller

    config, store = _open(args)
    ids = [args.source_id] if args.source_id else None
    if args.source_id and args.source_id not in {s.id for s in config.sources}:
        raise TidingsError(f"no source {args.source_id!r} in {config.path}")

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
        logging.getLogger(__name__).info("polling %d sources", len(config.sources))
        try:
            await stop.wait()
        finally:
            await poller.aclose()

    asyncio.run(run())
    store.close()
    return 0


def _ago(when: datetime | None, now: datetime) -> str:
    return "-" if when is None else relative_time(when, now)


def _next(when: datetime | None, now: datetime) -> str:
    return "due" if when is not None and when <= now else _ago(when, now)


def cmd_sources(args: argparse.Namespace) -> int:
    _config, store = _open(args)
    now = datetime.now(UTC)
    rows = [("SOURCE", "KIND", "STATE", "LAST POLL", "NEXT POLL", "EVENTS", "LAST ERROR")]
    for s in store.source_statuses(viewer=None):
        state = (
            "disabled"
            if not s.enabled
            else (f"failing x{s.consecutive_failures}" if s.consecutive_failures else "ok")
        )
        rows.append((
            s.id, s.kind, state, _ago(s.last_poll_at, now),
            _next(s.next_poll_at, now) if s.enabled else "-", str(s.event_count),
            (s.last_error or "").replace("\n", " ")[:80],
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    store.close()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    print(f"{args.file}: ok ({len(config.sources)} sources)")
    return 0


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

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code: int = args.func(args)
    except TidingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
