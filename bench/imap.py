"""IMAP: initial sync of 10,000 messages from Dovecot, and IDLE latency to a subscriber.

    python -m bench.imap                          # the issue's figures (6-8 min)
    python -m bench.imap --messages 2000 --runs 1 --idle-messages 30   # a quick look

A real Dovecot on 127.0.0.1 (tests/dovecot.py: maildir, plain text on loopback)
holds `--messages` generated messages (deterministic: 2-4 KB, plain text,
multipart/alternative with HTML, some with a small attachment) in folder
`Bench`, written straight into alice's Maildir before the server starts.

1. the floor: a bare IMAPClient session: LOGIN, EXAMINE, UID SEARCH, then
   FETCH of every UID in batches of `--batch-size` with the items Tidings
   asks for (RFC822.SIZE, BODY.PEEK[]<0.1000000>); nothing parsed.
2. Tidings: one `Poller.poll_now()` of an imap source (max_messages_per_poll
   = the message count) into a fresh SQLite store: the connector's fetches,
   message_event in the parser pool (started before the clock), sanitising,
   one commit. The event count must equal the message count.
   Both in this process, alternating, after one untimed warm-up of the floor
   (Dovecot's index and the page cache); messages/s are medians of `--runs`.
3. IDLE latency. Dovecot itself tells an IDLE connection about a message
   APPENDed by another connection only after its notify delay (about half a
   second here), so the server sets most of this figure, and it has a floor:
   a. the floor: a bare IMAPClient session (plain text on loopback) EXAMINEs
      its own folder `PushFloor`, enters IDLE (DONE and IDLE again every
      `--idle-renew` s, like Tidings), and waits in idle_check with a short
      timeout; latency is the arrival of the EXISTS that counts the message
      minus the start of its APPEND (from a second connection). Nothing is
      fetched or parsed.
   b. Tidings: a real `tidings serve` with the imap source on folder `Push`
      (interval 1h, idle on, idle_renew as given), one websocket subscriber;
      latency is the event's arrival at the subscriber minus the start of its
      APPEND.
   Both phases wait for one warm-up message to arrive and for Dovecot's
   process title to say IDLE, then APPEND the same `--idle-messages` messages
   one at a time over one IMAP connection, with the same gaps: drawn uniform
   in [0.5, 1.5]/`--rate` s from random.Random(`--seed`), so that the APPENDs
   do not keep one phase against Dovecot's periodic notify checks.

Two cores, shared with Dovecot (and with whatever else runs: the environment
line says how busy the machine was before the start).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from bench.feeds import _machine_busy, environment, package_version
from bench.hooks import _pct

TARGET_RATIO = 0.5  # the issue: initial sync at least 50% of the bare IMAPClient fetch
TARGET_P99_S = 1.0  # ... and IDLE append -> websocket p99 at most a second
FOLDER = "Bench"
PUSH_FOLDER = "Push"
FLOOR_FOLDER = "PushFloor"
PASSWORD_ENV = "BENCH_IMAP_PASSWORD"
CAP = 1_000_000  # ImapOptions.max_message_bytes' default: the partial fetch Tidings sends
Result = dict[str, Any]

_WORDS = [
    "quarterly",
    "review",
    "budget",
    "draft",
    "counsel",
    "merger",
    "filing",
    "release",
    "branch",
    "deploy",
    "meeting",
    "agenda",
    "minutes",
    "invoice",
    "contract",
    "renewal",
    "schedule",
    "customer",
    "support",
    "ticket",
    "escalation",
    "roadmap",
    "milestone",
    "design",
    "proposal",
    "feedback",
    "approval",
    "security",
    "audit",
    "incident",
    "report",
    "vendor",
    "onboarding",
    "training",
    "travel",
    "expense",
]
_PEOPLE = [
    ("Jane Doe", "jane@example.org"),
    ("Amir Haddad", "amir@example.com"),
    ("Li Wei", "li.wei@example.net"),
    ("Zoë Müller", "zoe@example.de"),
    ("Ops Bot", "noreply@ops.example.org"),
]


# --- the messages ------------------------------------------------------------------


def _text(rng: random.Random, words: int) -> str:
    lines, line = [], []
    for _ in range(words):
        line.append(rng.choice(_WORDS))
        if len(line) >= 12:
            lines.append(" ".join(line).capitalize() + ".")
            line = []
    if line:
        lines.append(" ".join(line).capitalize() + ".")
    return "\n".join(lines)


def message(n: int, subject: str | None = None) -> bytes:
    """Message `n`, deterministic: 2-4 KB; every third multipart/alternative,
    every seventh with a small attachment."""
    rng = random.Random(n)
    name, addr = _PEOPLE[n % len(_PEOPLE)]
    msg = EmailMessage()
    msg["From"] = f"{name} <{addr}>"
    msg["To"] = "team@example.org"
    msg["Subject"] = subject or f"[{n}] {_text(rng, 6).rstrip('.')}"
    msg["Date"] = format_datetime(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=7 * n))
    msg["Message-ID"] = f"<bench-{n}-{rng.getrandbits(32):08x}@mail.example.org>"
    if n % 4 == 1:
        msg["In-Reply-To"] = f"<bench-{n - 1}@mail.example.org>"
    body = _text(rng, rng.randint(200, 420))
    msg.set_content(f"Hello team,\n\n{body}\n\n-- \n{name}\n")
    if n % 3 == 0:
        paragraphs = "".join(f"<p>{p}</p>" for p in body.split("\n")[:8])
        msg.add_alternative(f"<html><body>{paragraphs}<p><b>{name}</b></p></body></html>", "html")
    if n % 7 == 0:
        data = bytes(rng.getrandbits(8) for _ in range(600))
        msg.add_attachment(data, maintype="application", subtype="octet-stream",
                           filename=f"report-{n}.bin")  # fmt: skip
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def fill_maildir(dovecot: Any, user: str, folder: str, count: int) -> int:
    """Write `count` messages straight into `user`'s Maildir (before Dovecot
    first opens it); returns their total bytes."""
    root = dovecot.dir / "home" / user / "Maildir"
    target = root / f".{folder}"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (target / sub).mkdir(parents=True, exist_ok=True)
    total = 0
    stamp = 1_780_000_000
    for n in range(count):
        raw = message(n)
        total += len(raw)
        (target / "cur" / f"{stamp + n}.M{n}P1.bench,S={len(raw)}:2,").write_bytes(raw)
    for path in [dovecot.dir / "home" / user, *(dovecot.dir / "home" / user).rglob("*")]:
        shutil.chown(path, "nobody", "nogroup")
    return total


# --- 1. the floor -------------------------------------------------------------------


def floor_run(port: int, password: str, batch: int) -> Result:
    from imapclient import IMAPClient

    items = [b"RFC822.SIZE", f"BODY.PEEK[]<0.{CAP}>".encode()]
    started = time.perf_counter()
    client = IMAPClient("127.0.0.1", port, ssl=False, timeout=30)
    try:
        client.login("alice", password)
        client.select_folder(FOLDER, readonly=True)
        uids = sorted(client.search(["UID", "1:*"]))
        found = size = 0
        for start in range(0, len(uids), batch):
            got = client.fetch(uids[start : start + batch], items)
            found += len(got)
            size += sum(
                len(next(v for k, v in d.items() if k.startswith(b"BODY["))) for d in got.values()
            )
    finally:
        with contextlib.suppress(Exception):
            client.logout()
    return {"messages": found, "seconds": time.perf_counter() - started, "bytes": size}


# --- 2. Tidings ----------------------------------------------------------------------


def _source(port: int, folder: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "mail",
        "kind": "imap",
        "interval": "1h",
        "host": "127.0.0.1",
        "port": port,
        "tls": "none",
        "username": "alice",
        "password": f"env:{PASSWORD_ENV}",
        "folders": [folder],
        **extra,
    }


async def tidings_run(port: int, args: argparse.Namespace, profile: Path | None = None) -> Result:
    from aggregator.config import parse_config
    from aggregator.poller import Poller
    from aggregator.store import Store
    from connectors.imap import ImapConnector

    source = _source(port, FOLDER, batch_size=args.batch_size,
                     max_messages_per_poll=max(10_000, args.messages))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-imap-") as tmp:
        config = parse_config({"store": {"url": f"sqlite:///{tmp}/t.db"}, "sources": [source]})
        store = Store(config.store_url)
        store.sync_sources(config.sources, datetime.now(UTC))
        poller = Poller(config, store)
        try:
            await poller.start_workers()
            [config_source] = config.sources
            ctx = poller.context(config_source, datetime.now(UTC))
            started = time.perf_counter()
            alone = await ImapConnector(config_source.options).poll(None, ctx)  # type: ignore[arg-type]
            alone_seconds = time.perf_counter() - started
            profiler = None
            if profile is not None:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            cpu = time.process_time()
            started = time.perf_counter()
            [outcome] = await poller.poll_now()
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(str(profile))
        finally:
            await poller.aclose()
            store.close()
    if outcome.error:
        raise SystemExit(f"the poll failed: {outcome.error}")
    return {
        "messages": len(outcome.new_event_ids),
        "seconds": seconds,
        "main_cpu": cpu,
        "connector": {"messages": len(alone.events), "seconds": alone_seconds},
    }


async def sync_phase(port: int, password: str, args: argparse.Namespace) -> dict[str, list[Result]]:
    runs: dict[str, list[Result]] = {"floor": [], "tidings": []}
    await asyncio.to_thread(floor_run, port, password, args.batch_size)  # warm-up
    for n in range(args.runs):
        runs["floor"].append(await asyncio.to_thread(floor_run, port, password, args.batch_size))
        runs["tidings"].append(await tidings_run(port, args))
        for side, got in runs.items():
            if got[-1]["messages"] != args.messages:
                raise SystemExit(f"{side}: {got[-1]['messages']} messages, not {args.messages}")
        print(
            f"  run {n + 1}: floor {args.messages / runs['floor'][-1]['seconds']:,.0f}/s, "
            f"tidings {args.messages / runs['tidings'][-1]['seconds']:,.0f}/s",
            flush=True,
        )
    if args.profile is not None:  # an extra, untimed poll: the profiler slows it
        await tidings_run(port, args, args.profile)
    return runs


# --- 3. IDLE latency ----------------------------------------------------------------


def write_serve_config(directory: Path, port: int, idle_renew: float) -> Path:
    source = _source(port, PUSH_FOLDER, idle=True, idle_renew=idle_renew)
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in source.items() if k != "id")
    path = directory / "config.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\n'
        f'[store]\nurl = "sqlite:///{directory}/tidings.db"\n'
        f'[[sources]]\nid = "mail"\n{lines}audience = ["everyone"]\n'
    )
    return path


def schedule(count: int, rate: float, seed: int) -> list[float]:
    """When to start each APPEND, seconds after the first could go: cumulative
    gaps uniform in [0.5, 1.5]/rate (the same for both IDLE phases)."""
    rng = random.Random(seed)
    offsets, at = [], 0.0
    for _ in range(count):
        at += rng.uniform(0.5, 1.5) / rate
        offsets.append(at)
    return offsets


def push_messages(count: int) -> tuple[list[str], list[bytes]]:
    subjects = [f"Push {i:03d}" for i in range(count)]
    return subjects, [message(20_000_000 + i, s) for i, s in enumerate(subjects)]


def idle_floor_phase(dovecot: Any, args: argparse.Namespace) -> Result:
    """A bare IMAPClient in IDLE on FLOOR_FOLDER: APPEND start -> its EXISTS."""
    import threading

    from imapclient import IMAPClient

    from tests.integration.test_imap import idling

    dovecot.append("alice", FLOOR_FOLDER, message(10_000_000, "Push warm-up"))
    subjects, raws = push_messages(args.idle_messages)
    offsets = schedule(len(raws), args.rate, args.seed)
    seen: list[tuple[int, float]] = []  # (EXISTS count, arrival), in order of arrival
    highest = [0]
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    idler = IMAPClient("127.0.0.1", dovecot.port, ssl=False, timeout=30)
    idler.login("alice", os.environ[PASSWORD_ENV])
    base = int(idler.select_folder(FLOOR_FOLDER, readonly=True)[b"EXISTS"])
    highest[0] = base

    def note(responses: list[Any], now: float) -> None:
        for response in responses:
            count = response[0] if len(response) >= 2 and response[1] == b"EXISTS" else None
            if isinstance(count, int) and count > highest[0]:
                highest[0] = count
                seen.append((count, now))

    def watch() -> None:
        # Bounded: the schedule, plus a minute for the warm-up and the last EXISTS.
        deadline = time.monotonic() + (offsets[-1] if offsets else 0.0) + 60
        try:
            idler.idle()
            ready.set()
            renewed = time.monotonic()
            while not stop.is_set() and time.monotonic() < deadline:
                responses = idler.idle_check(timeout=0.2)
                note(responses, time.monotonic())
                if time.monotonic() - renewed >= args.idle_renew:
                    _, responses = idler.idle_done()
                    note(responses, time.monotonic())
                    idler.idle()
                    renewed = time.monotonic()
            idler.idle_done()
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)
        finally:
            ready.set()

    watcher = threading.Thread(target=watch, name="idle-floor", daemon=True)
    watcher.start()
    appender = dovecot.client("alice")
    sent: list[float] = []
    try:
        if not ready.wait(15) or failure:
            raise SystemExit(f"the floor's IDLE did not start: {failure}")
        idling("alice")
        # The warm-up: one APPEND that must arrive before the clock starts.
        appender.append(FLOOR_FOLDER, message(10_000_001, "Push warm-up 2"))
        deadline = time.monotonic() + 30
        while highest[0] < base + 1 and time.monotonic() < deadline and not failure:
            time.sleep(0.01)
        if highest[0] < base + 1:
            raise SystemExit(f"the floor's warm-up EXISTS never arrived: {failure}")
        base = highest[0]
        start = time.monotonic()
        for offset, raw in zip(offsets, raws, strict=True):
            time.sleep(max(0.0, start + offset - time.monotonic()))
            sent.append(time.monotonic())
            appender.append(FLOOR_FOLDER, raw)
        deadline = time.monotonic() + 15
        while highest[0] < base + len(raws) and time.monotonic() < deadline and not failure:
            time.sleep(0.01)
    finally:
        stop.set()
        watcher.join(10)
        for client in (appender, idler):
            with contextlib.suppress(Exception):
                client.logout()
    if failure:
        raise SystemExit(f"the floor's IDLE failed: {failure[0]!r}")
    # Message i is in once an EXISTS counts base + i + 1 (Dovecot may fold
    # several APPENDs into one EXISTS).
    latencies: list[float] = []
    samples = []
    for i, began in enumerate(sent):
        arrival = next((t for count, t in list(seen) if count >= base + i + 1), None)
        if arrival is not None:
            latencies.append(arrival - began)
            samples.append((i, began - sent[0], (arrival - began) * 1000))
    return {"latencies": latencies, "samples": samples, "lost": len(subjects) - len(latencies)}


async def idle_phase(dovecot: Any, args: argparse.Namespace, tmp: Path) -> Result:
    import websockets

    from tests.integration.test_imap import idling
    from tests.support import TidingsProcess

    dovecot.append("alice", PUSH_FOLDER, message(10_000_000, "Push warm-up"))
    appender = dovecot.client("alice")
    subjects, raws = push_messages(args.idle_messages)
    offsets = schedule(len(raws), args.rate, args.seed)
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    done, warm = asyncio.Event(), asyncio.Event()
    config = write_serve_config(tmp, dovecot.port, args.idle_renew)
    with TidingsProcess(config) as app:
        async with websockets.connect(app.ws_url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "subscribe", "stream": "s", "cursor": 0}))

            async def receive() -> None:
                while True:
                    msg = json.loads(await ws.recv())
                    if msg.get("type") == "event":
                        title = msg["event"]["title"]
                        arrived.setdefault(title, time.monotonic())
                        if title == "Push warm-up":
                            warm.set()
                        if len(arrived) > args.idle_messages:  # + the warm-up
                            done.set()

            receiver = asyncio.create_task(receive())
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(warm.wait(), 30)
                if not warm.is_set():
                    raise SystemExit(f"the first poll never arrived; see {app.log}")
                await asyncio.to_thread(idling, "alice")
                start = time.monotonic()
                for subject, offset, raw in zip(subjects, offsets, raws, strict=True):
                    await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
                    sent[subject] = time.monotonic()
                    await asyncio.to_thread(appender.append, PUSH_FOLDER, raw)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 15)
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await receiver
    with contextlib.suppress(Exception):
        appender.logout()
    latencies = [arrived[s] - sent[s] for s in subjects if s in arrived]
    first = sent[subjects[0]] if sent else 0.0
    samples = [
        (i, sent[s] - first, (arrived[s] - sent[s]) * 1000)
        for i, s in enumerate(subjects)
        if s in arrived
    ]
    return {"latencies": latencies, "samples": samples, "lost": len(subjects) - len(latencies)}


# --- figures -------------------------------------------------------------------------


def rate(results: Sequence[Result]) -> float:
    return statistics.median(r["messages"] / r["seconds"] for r in results)


def report(
    runs: dict[str, list[Result]],
    idle_floor: Result,
    idle: Result,
    args: argparse.Namespace,
    mb: float,
) -> None:
    floor, tidings = rate(runs["floor"]), rate(runs["tidings"])
    print(
        f"\ninitial sync: {args.messages:,} messages ({mb:.1f} MB) from Dovecot, FETCH batches "
        f"of {args.batch_size}, medians of {args.runs} run(s)"
    )
    labels = {
        "floor": "floor: bare IMAPClient fetch, nothing parsed",
        "connector": "Tidings connector alone: fetch, parse",
        "tidings": "Tidings poll: + sanitise, decide, store",
    }
    runs = {**runs, "connector": [r["connector"] for r in runs["tidings"]]}
    for side, label in labels.items():
        per_second = rate(runs[side])
        seconds = statistics.median(r["seconds"] for r in runs[side])
        ratio = "" if side == "floor" else f"  {per_second / floor:.2f}x the floor"
        print(f"  {label:<46} {per_second:>8,.0f} msgs/s  {seconds:6.2f} s{ratio}")
    for side in labels:
        every = ", ".join(f"{r['messages'] / r['seconds']:,.0f}" for r in runs[side])
        print(f"  ({side} msgs/s per run: {every})")
    main_cpu = statistics.median(r["main_cpu"] for r in runs["tidings"])
    print(f"  (Tidings main-process CPU per poll: {main_cpu:.2f} s; the parser pool's is apart)")
    lat = [s * 1000 for s in idle["latencies"]]
    p50, p99 = _pct(lat, 50), _pct(lat, 99)
    floor_lat = [s * 1000 for s in idle_floor["latencies"]]
    f50, f99 = _pct(floor_lat, 50), _pct(floor_lat, 99)
    print(
        f"\nIDLE: {args.idle_messages} APPENDs per phase, gaps uniform in "
        f"[{0.5 / args.rate:g}, {1.5 / args.rate:g}] s (mean rate {args.rate:g}/s, "
        f"seed {args.seed}); idle_renew {args.idle_renew:g} s"
    )
    print(f"  {'':<48} {'p50':>8} {'p99':>8} {'max':>8}  received")
    for label, got, values in (
        ("floor: bare IMAPClient, APPEND -> EXISTS", idle_floor, floor_lat),
        ("Tidings: APPEND -> websocket event", idle, lat),
    ):
        print(
            f"  {label:<48} {_pct(values, 50):6.1f}ms {_pct(values, 99):6.1f}ms "
            f"{max(values, default=float('nan')):6.1f}ms  {len(values)} ({got['lost']} lost)"
        )
    ratio50 = p50 / f50 if f50 > 0 else float("nan")
    print(
        f"  Tidings over the floor: p50 +{p50 - f50:.1f} ms ({ratio50:.2f}x), "
        f"p99 +{p99 - f99:.1f} ms"
    )
    for label, got in (("floor", idle_floor), ("Tidings", idle)):
        slow = sorted(got["samples"], key=lambda row: -row[2])[:5]
        print(
            f"  slowest ({label}): "
            + ", ".join(f"#{i} (+{t:.1f} s) {ms:.0f} ms" for i, t, ms in slow)
        )
    print(
        f"  over 1 s: floor {sum(ms > 1000 for ms in floor_lat)}, "
        f"Tidings {sum(ms > 1000 for ms in lat)}"
    )
    ratio = tidings / floor
    verdict = [
        ("initial sync", ratio >= TARGET_RATIO,
         f"{tidings:,.0f} msgs/s, {ratio:.2f}x the floor's {floor:,.0f}/s "
         f"(target >= {TARGET_RATIO:.0%})"),
        ("IDLE latency", p99 <= TARGET_P99_S * 1000 and idle["lost"] == 0,
         f"p99 {p99:.0f} ms (target <= {TARGET_P99_S * 1000:.0f} ms, none lost); "
         f"the bare IMAPClient floor's p99 {f99:.0f} ms"),
    ]  # fmt: skip
    print()
    for name, ok, detail in verdict:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {detail}")


# --- main ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages to sync")
    parser.add_argument("--runs", type=int, default=3, help="sync runs (medians)")
    parser.add_argument("--batch-size", type=int, default=50, help="messages per FETCH (both)")
    parser.add_argument("--idle-messages", type=int, default=100, help="APPENDs timed over IDLE")
    parser.add_argument(
        "--rate", type=float, default=1.0, help="APPENDs per second (mean; gaps jittered)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the jittered APPEND gaps")
    parser.add_argument(
        "--idle-renew", type=float, default=600.0,
        help="idle_renew, seconds (600: no renew in the phase; 20 shows what renews cost)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=Path, help="cProfile one extra, untimed Tidings poll to here"
    )
    args = parser.parse_args(argv)
    os.environ["TIDINGS_DISABLE_PLUGINS"] = "1"  # built-in connectors only, like the tests
    from tests.dovecot import USERS, Dovecot

    os.environ[PASSWORD_ENV] = USERS["alice"]
    libraries = f"imapclient {package_version('imapclient')}"
    print(environment(libraries), flush=True)
    total = time.perf_counter()
    busy0, wall0 = _machine_busy(), time.monotonic()
    dovecot = Dovecot()
    try:
        started = time.perf_counter()
        size = fill_maildir(dovecot, "alice", FOLDER, args.messages)
        dovecot.start()
        print(
            f"loaded {args.messages:,} messages ({size / 1e6:.1f} MB, "
            f"{size / args.messages / 1000:.1f} KB each) in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        runs = asyncio.run(sync_phase(dovecot.port, USERS["alice"], args))
        idle_floor = idle_floor_phase(dovecot, args)
        with tempfile.TemporaryDirectory(prefix="bench-imap-serve-") as tmp:
            idle = asyncio.run(idle_phase(dovecot, args, Path(tmp)))
    finally:
        dovecot.stop()
    report(runs, idle_floor, idle, args, size / 1e6)
    busy = (_machine_busy() - busy0) / (time.monotonic() - wall0) / (os.cpu_count() or 1)
    print(
        f"\n(machine {busy:.0%} busy on average during the run, this bench included; "
        f"total wall time {time.perf_counter() - total:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
