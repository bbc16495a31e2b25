"""Feed polling: Tidings against the `reader` library and feedparser's floor.

    python -m bench.feeds                      # 500 feeds, medians of 3 runs (make bench)
    python -m bench.feeds --feeds 50 --runs 1  # a quick look
    python -m bench.feeds --feeds 10000 --items 3-5 --sides tidings,reader --runs 1
                                               # the 10,000-source all-304 round

One generator process (bench.feedgen) serves N deterministic RSS feeds on
127.0.0.1 with strong ETags. Each run measures, each side in a fresh
interpreter with a fresh temp dir and database:

- Tidings: `Poller.drain()` over N `feed` sources: round 1 stores every entry
  (entries/s); then `--repeats` rounds find every feed unchanged (HTTP 304;
  polls/s). Once per `--pollers` value: 1 is one process (what `serve` does),
  2 is two processes draining one store (`tidings poller` twice).
- reader (lemon24), the peer: `update_feeds_iter(scheduled=False)`, the same rounds.
- the floor: `feedparser.parse` over the same N bodies with
  `sanitize_html=False, resolve_relative_uris=False`, in one process and split
  over `--floor-procs` processes (entries/s), and with its defaults.

The generator's own counters show how many requests were conditional and got a
304, so neither side can pass the 304 round by skipping work. Setup (importing,
creating the store and its schema, adding the feeds) is outside the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.feedgen import ITEMS, SEED, Items, fetch_stats, parse_items, render_feed, serve_feeds

TARGET_FIRST = 3.0  # the first issue: first round at least 3x reader's entries/s
TARGET_304 = 4.0  # "Feeds at production grade": all-304 round at least 4x reader's polls/s
TARGET_FLOOR = 0.7  # and the first round at least 70% of the two-core bare floor
Result = dict[str, Any]


# --- process-tree accounting (Linux /proc: cheap, and it sees pool workers) --


def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields after "(comm)": state, ppid, ...


def _tree() -> list[int]:
    """This process and all its descendants (a forkserver's workers are grandchildren)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _proc_stat(int(entry))):
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _cpu_ticks(pids: Sequence[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        if fields := _proc_stat(pid):
            out[pid] = int(fields[11]) + int(fields[12])  # utime + stime
    return out


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


_COUNTERS = ("requests", "ok", "not_modified", "conditional", "connections", "cpu")


class _Round:
    """Wall time, CPU of this process tree and of the generator, requests served."""

    def __init__(self, port: int) -> None:
        self.port = port

    def __enter__(self) -> _Round:
        self.server0 = fetch_stats(self.port)
        self.ticks0 = _cpu_ticks(_tree())
        self.busy0 = _machine_busy()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        busy = _machine_busy() - self.busy0
        # A process started during the round (a pool worker) counts in full.
        ticks = _cpu_ticks(_tree())
        used = sum(t - self.ticks0.get(pid, 0) for pid, t in ticks.items())
        self.cpu = used / os.sysconf("SC_CLK_TCK")
        server1 = fetch_stats(self.port)
        self.server = {k: server1[k] - self.server0[k] for k in _COUNTERS}
        # Not the round's: the /_stats request that read these counters.
        self.server["requests"] -= 1
        self.server["connections"] -= 1
        # Anything else running skews the figures; say how much there was.
        self.others = max(0.0, busy - self.cpu - self.server["cpu"])

    def report(self, **figures: Any) -> Result:
        return {
            "seconds": self.seconds,
            "cpu": self.cpu,
            "server_cpu": self.server["cpu"],
            "other_cpu": self.others,
            "requests": self.server["requests"],
            "conditional": self.server["conditional"],
            "served_304": self.server["not_modified"],
            "connections": self.server["connections"],
            **figures,
        }


def _median_round(reports: list[Result]) -> Result:
    return sorted(reports, key=lambda r: r["seconds"])[len(reports) // 2]


def _memory() -> Result:
    pids = _tree()
    me = os.getpid()
    return {
        "rss_main_mb": _peak_rss_mb(me),
        "rss_children_mb": [_peak_rss_mb(p) for p in pids if p != me],
    }


# --- the sides (each runs in its own fresh interpreter) ----------------------


def _tidings_config(args: argparse.Namespace) -> dict[str, Any]:
    base = f"http://127.0.0.1:{args.port}/feed"
    return {
        "store": {"url": f"sqlite:///{args.dir}/tidings.db"},
        "poller": {"concurrency": args.concurrency, "workers": args.workers},
        "http": {"per_host": args.per_host},
        "sources": [
            {"id": f"feed{i:05d}", "kind": "feed", "url": f"{base}/{i}.xml"}
            for i in range(args.feeds)
        ],
    }


async def _warm_poller(config: Any, store: Any) -> Any:
    """A Poller whose parser pool is up, as in a running server. Rounds use
    `Poller.drain`, as `serve` and `tidings poller` do (claims keep several
    pollers from taking the same feed)."""
    from aggregator.poller import Poller

    poller = Poller(config, store)
    await poller.start_workers()
    return poller


Outcomes = list[tuple[int, bool, str | None]]  # (new events, not modified, error) per poll


def _outcomes(found: list[Any]) -> Outcomes:
    return [(len(o.new_event_ids), o.not_modified, o.error) for o in found]


def _poller_process(raw: dict[str, Any], rounds: Any, done: Any, repeats: int) -> None:
    """An extra poller process (--pollers N): drains each round when told to."""
    os.environ["TIDINGS_DISABLE_PLUGINS"] = "1"
    from aggregator.config import parse_config
    from aggregator.store import Store

    config = parse_config(raw)
    store = Store(config.store_url)

    async def main() -> None:
        poller = await _warm_poller(config, store)
        done.put("ready")  # the pool is up: the first round may start
        try:
            for _ in range(1 + repeats):
                await asyncio.to_thread(rounds.get)
                done.put(_outcomes(await poller.drain()))
        finally:
            await poller.aclose()

    asyncio.run(main())
    store.close()


class _Profiler:
    """cProfile of the event loop's thread and of the threads `asyncio.to_thread`
    uses (claims, commits), which one cProfile.Profile cannot see. It counts
    each thread's CPU time (time.thread_time), not wall time, so threads idle
    in a queue or the loop idle in epoll cost nothing: it shows where the CPU goes."""

    def __init__(self) -> None:
        self.main = cProfile.Profile(time.thread_time)
        self.threads: list[cProfile.Profile] = []
        self.executor = ThreadPoolExecutor(initializer=self._thread_started)

    def _thread_started(self) -> None:
        profile = cProfile.Profile(time.thread_time)
        self.threads.append(profile)
        profile.enable()

    def start(self) -> None:
        asyncio.get_running_loop().set_default_executor(self.executor)
        self.main.enable()

    def stop(self, path: Path) -> None:
        self.main.disable()
        # A fresh executor for what follows (closing the poller uses threads too).
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor())
        self.executor.shutdown(wait=True)  # the threads' profiles are complete once they end
        stats = pstats.Stats(self.main)
        for profile in self.threads:
            stats.add(profile)
        stats.dump_stats(path)


def tidings_side(args: argparse.Namespace) -> Result:
    os.environ["TIDINGS_DISABLE_PLUGINS"] = "1"  # built-in connectors only, like the tests
    import multiprocessing

    from aggregator.config import parse_config
    from aggregator.store import Store

    pollers = _pollers(args)[0]
    raw = _tidings_config(args)
    config = parse_config(raw)
    store = Store(config.store_url)
    store.sync_sources(config.sources, datetime.now(UTC))
    ctx = multiprocessing.get_context("spawn")
    rounds, done = ctx.Queue(), ctx.Queue()
    extra = [
        ctx.Process(target=_poller_process, args=(raw, rounds, done, args.repeats))
        for _ in range(pollers - 1)
    ]
    for proc in extra:
        proc.start()

    async def one_round(poller: Any) -> Outcomes:
        for _ in extra:
            rounds.put("go")
        mine = _outcomes(await poller.drain())
        theirs = [await asyncio.to_thread(done.get) for _ in extra]
        return mine + [x for share in theirs for x in share]

    async def rounds_() -> Result:
        poller = await _warm_poller(config, store)
        for _ in extra:  # wait until every extra poller's pool is up
            await asyncio.to_thread(done.get, True, args.timeout)
        try:
            with _Round(args.port) as first:
                outcomes = await one_round(poller)
            errors = [e for _, _, e in outcomes if e]
            one = first.report(
                entries=sum(n for n, _, _ in outcomes),
                errors=len(errors),
                first_error=errors[0] if errors else None,
            )
            profiler = _Profiler() if args.profile else None
            if profiler:
                profiler.start()
            reports = []
            for _ in range(args.repeats):
                # Everything is due again, as if its interval had passed.
                store.set_next_poll([s.id for s in config.sources], datetime.now(UTC))
                with _Round(args.port) as second:
                    outcomes = await one_round(poller)
                errors = [e for _, _, e in outcomes if e]
                reports.append(
                    second.report(
                        polls=len(outcomes),
                        not_modified=sum(nm for _, nm, _ in outcomes),
                        entries=sum(n for n, _, _ in outcomes),
                        errors=len(errors),
                        first_error=errors[0] if errors else None,
                    )
                )
            if profiler:
                profiler.stop(Path(args.profile))
            two = _median_round(reports)
            memory = _memory()  # before aclose: the pool workers are still alive
        finally:
            await poller.aclose()
        return {"first": one, "second": two, "all_second": reports, **memory}

    try:
        return asyncio.run(rounds_())
    finally:
        for proc in extra:
            proc.join(30)
        store.close()


def reader_side(args: argparse.Namespace) -> Result:
    from reader import make_reader

    reader = make_reader(f"{args.dir}/reader.sqlite")
    for i in range(args.feeds):
        reader.add_feed(f"http://127.0.0.1:{args.port}/feed/{i}.xml")

    def update() -> list[Any]:
        return list(reader.update_feeds_iter(scheduled=False, workers=args.reader_workers))

    with _Round(args.port) as first:
        results = update()
    errors = [str(r.error) for r in results if r.error]
    before = reader.get_entry_counts().total or 0
    one = first.report(
        entries=before, errors=len(errors), first_error=errors[0] if errors else None
    )
    reports = []
    for _ in range(args.repeats):
        with _Round(args.port) as second:
            results = update()
        errors = [str(r.error) for r in results if r.error]
        reports.append(
            second.report(
                polls=len(results),
                not_modified=sum(r.not_modified for r in results),
                entries=(reader.get_entry_counts().total or 0) - before,
                errors=len(errors),
                first_error=errors[0] if errors else None,
            )
        )
    two = _median_round(reports)
    memory = _memory()
    reader.close()
    return {"first": one, "second": two, "all_second": reports, **memory}


def _bare_parse(bodies: Sequence[bytes]) -> int:
    """The floor's unit of work: entries feedparser finds, no sanitising, no URL joins."""
    import feedparser

    options = {"sanitize_html": False, "resolve_relative_uris": False}
    return sum(len(feedparser.parse(body, **options).entries) for body in bodies)


def _floor_share(indexes: range, items: Items, barrier: Any, results: Any) -> None:
    """One process of the multi-core floor: render its share, wait, parse it."""
    bodies = [render_feed(i, SEED, items) for i in indexes]
    _bare_parse(bodies[:1])  # imports and first-call costs are not the floor's
    barrier.wait()
    started = time.perf_counter()
    entries = _bare_parse(bodies)
    results.put((entries, time.perf_counter() - started))


def _parallel_floor(args: argparse.Namespace) -> Result:
    """feedparser on `--floor-procs` processes, each parsing every k-th body,
    all started together: entries over the wall time until the last is done."""
    import multiprocessing

    procs = args.floor_procs
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(procs + 1), ctx.Queue()
    workers = [
        ctx.Process(
            target=_floor_share, args=(range(k, args.feeds, procs), args.items, barrier, results)
        )
        for k in range(procs)
    ]
    for proc in workers:
        proc.start()
    barrier.wait(args.timeout)
    busy0, started = _machine_busy(), time.perf_counter()
    shares = [results.get(timeout=args.timeout) for _ in workers]
    seconds = time.perf_counter() - started
    busy = _machine_busy() - busy0
    cpu = sum(s for _, s in shares)  # each share is one single-threaded process at full tilt
    for proc in workers:
        proc.join(30)
    return {
        "procs": procs,
        "entries": sum(n for n, _ in shares),
        "seconds": seconds,
        "eps": sum(n for n, _ in shares) / seconds,
        "share_seconds": [s for _, s in shares],
        "other_cpu": max(0.0, busy - cpu),
    }


def floor_side(args: argparse.Namespace) -> Result:
    import feedparser

    bodies = [render_feed(i, SEED, args.items) for i in range(args.feeds)]  # the served bytes
    _bare_parse(bodies[:1])

    def rate(docs: list[bytes], **options: Any) -> tuple[int, float, float]:
        busy0, started = _machine_busy(), time.perf_counter()
        entries = sum(len(feedparser.parse(body, **options).entries) for body in docs)
        seconds = time.perf_counter() - started
        return entries, entries / seconds, max(0.0, _machine_busy() - busy0 - seconds)

    entries, bare, other = rate(bodies, sanitize_html=False, resolve_relative_uris=False)
    # Defaults are 3x slower; every 4th feed gives the rate and saves a minute a run.
    _, default, _ = rate(bodies[::4])
    parallel = _parallel_floor(args) if args.floor_procs > 1 else None
    return {
        "entries": entries,
        "bytes": sum(map(len, bodies)),
        "bare_eps": bare,
        "bare_other_cpu": other,
        "default_eps": default,
        "parallel": parallel,
        "feedparser": feedparser.__version__,
        **_memory(),
    }


SIDES: dict[str, Callable[[argparse.Namespace], Result]] = {
    "tidings": tidings_side,
    "reader": reader_side,
    "floor": floor_side,
}


def run_side(side: str, args: argparse.Namespace, port: int, pollers: int = 1) -> Result:
    """One side, one run: a fresh interpreter and a fresh temp dir."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable, "-m", "bench.feeds", "--side", side, "--port", str(port),
            "--dir", tmp, "--out", str(out), "--feeds", str(args.feeds),
            "--items", f"{args.items[0]}-{args.items[1]}", "--repeats", str(args.repeats),
            "--concurrency", str(args.concurrency), "--per-host", str(args.per_host),
            "--workers", str(args.workers), "--reader-workers", str(args.reader_workers),
            "--pollers", str(pollers), "--floor-procs", str(args.floor_procs),
            "--timeout", str(args.timeout),
        ]  # fmt: skip
        if args.profile and side == "tidings":
            args.profile.mkdir(parents=True, exist_ok=True)
            cmd += ["--profile", str(args.profile / f"tidings-p{pollers}.pstats")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, timeout=args.timeout)
        if proc.returncode != 0:
            raise SystemExit(f"the {side} side failed (exit {proc.returncode})")
        result: Result = json.loads(out.read_text())
        return result


# --- reporting ----------------------------------------------------------------


def _med(values: Sequence[float]) -> float:
    return statistics.median(values)


def _fmt(value: float) -> str:
    if float(value).is_integer() or value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"


def _label(key: str) -> str:
    """ "tidings-1" -> "Tidings", "tidings-2" -> "Tidings x2" (two poller processes)."""
    if key == "reader":
        return "reader"
    n = int(key.rsplit("-", 1)[1])
    return "Tidings" if n == 1 else f"Tidings x{n}"


def summarise(runs: dict[str, list[Result]], args: argparse.Namespace) -> Result:
    """Medians of every figure; ratios are of medians."""
    s: Result = {"feeds": args.feeds, "runs": args.runs, "items": list(args.items), "sides": {}}
    for side, rs in runs.items():
        if side == "floor" or not rs:
            continue
        one = [r["first"] for r in rs]
        two = [r["second"] for r in rs]
        every = [x for r in rs for x in r["all_second"]]  # every 304 round, not only medians
        s["sides"][side] = {
            "entries": _med([x["entries"] for x in one]),
            "first_s": _med([x["seconds"] for x in one]),
            "first_eps": _med([x["entries"] / x["seconds"] for x in one]),
            "first_cpu": _med([x["cpu"] for x in one]),
            "first_server_cpu": _med([x["server_cpu"] for x in one]),
            "first_other_cpu": _med([x["other_cpu"] for x in one]),
            "second_s": _med([x["seconds"] for x in two]),
            "second_pps": _med([x["polls"] / x["seconds"] for x in two]),
            "second_cpu": _med([x["cpu"] for x in two]),
            "second_cpu_ms": _med([1000 * x["cpu"] / x["polls"] for x in two]),
            "second_server_cpu": _med([x["server_cpu"] for x in two]),
            "second_other_cpu": _med([x["other_cpu"] for x in two]),
            "first_connections": _med([x["connections"] for x in one]),
            "second_connections": _med([x["connections"] for x in two]),
            "requests_max": max(x["requests"] for x in every),
            "requests_min": min(x["requests"] for x in every),
            "served_304": min(x["served_304"] for x in every),
            "conditional": min(x["conditional"] for x in every),
            "errors": max(x["errors"] for x in one + every),
            "rss_main_mb": _med([r["rss_main_mb"] for r in rs]),
            "rss_total_mb": _med([r["rss_main_mb"] + sum(r["rss_children_mb"]) for r in rs]),
            "all_first_eps": [x["entries"] / x["seconds"] for x in one],
            "all_second_pps": [x["polls"] / x["seconds"] for x in two],
            "all_second_other_cpu": [x["other_cpu"] for x in two],
        }
    if runs.get("floor"):
        fl = runs["floor"]
        par = [r["parallel"] for r in fl if r.get("parallel")]
        s["floor"] = {
            "entries": fl[0]["entries"],
            "mb": fl[0]["bytes"] / 1e6,
            "bare_eps": _med([r["bare_eps"] for r in fl]),
            "bare_other_cpu": _med([r["bare_other_cpu"] for r in fl]),
            "default_eps": _med([r["default_eps"] for r in fl]),
            "feedparser": fl[0]["feedparser"],
            "parallel_procs": par[0]["procs"] if par else 1,
            "parallel_eps": _med([p["eps"] for p in par]) if par else None,
            "parallel_other_cpu": _med([p["other_cpu"] for p in par]) if par else None,
            "all_parallel_eps": [p["eps"] for p in par],
        }
    return s


def print_table(s: Result, args: argparse.Namespace, generator_mb: float) -> None:
    sides: dict[str, Result] = s["sides"]
    f: Result | None = s.get("floor")
    r = sides.get("reader")
    ours = [k for k in sides if k != "reader"]
    n = args.feeds
    print()
    entries = next(iter(sides.values()), f or {}).get("entries", 0)
    size = f", {f['mb']:.1f} MB of RSS" if f else ""
    items = "-".join(map(str, sorted(set(args.items))))
    print(f"Feed polling: {n:,} loopback feeds of {items} items, {entries:,.0f} entries{size}; "
          f"{os.cpu_count()} cores; medians of {args.runs} run(s), each 304 figure the "
          f"median of {args.repeats} rounds; generator peak RSS {generator_mb:.0f} MB")  # fmt: skip
    head = [_label(k) for k in sides] + [f"{_label(k)}/reader" for k in ours if r]
    rows: list[list[str]] = []

    def row(label: str, key: str, ratio: bool = False) -> None:
        cells = [_fmt(d[key]) for d in sides.values()]
        if r:
            cells += [f"{sides[k][key] / r[key]:.2f}x" if ratio and r[key] else "" for k in ours]
        rows.append([label, *cells])

    row("first round: entries/s", "first_eps", ratio=True)
    row("first round: seconds", "first_s")
    row("first round: CPU s (process tree)", "first_cpu", ratio=True)
    row("first round: generator CPU s", "first_server_cpu")
    row("first round: other processes' CPU s", "first_other_cpu")
    row("304 round: polls/s", "second_pps", ratio=True)
    row("304 round: seconds", "second_s")
    row("304 round: CPU s (process tree)", "second_cpu", ratio=True)
    row("304 round: CPU ms per poll", "second_cpu_ms", ratio=True)
    row("304 round: generator CPU s", "second_server_cpu")
    row("304 round: other processes' CPU s", "second_other_cpu")
    row("304 round: requests, fewest of all rounds", "requests_min")
    row("304 round: conditional requests, fewest", "conditional")
    row("304 round: 304s served, fewest", "served_304")
    row("TCP connections opened, first round", "first_connections")
    row("TCP connections opened, 304 round", "second_connections")
    row("peak RSS, main process (MB)", "rss_main_mb")
    row("peak RSS, with its child processes (MB)", "rss_total_mb")
    if sides:
        width = max(len(x[0]) for x in rows)
        cols = [max(10, len(h)) for h in head]
        print(f"{'':{width}}  " + "  ".join(f"{h:>{w}}" for h, w in zip(head, cols, strict=True)))
        for label, *cells in rows:
            print(
                f"{label:{width}}  "
                + "  ".join(f"{c:>{w}}" for c, w in zip(cells, cols, strict=True))
            )
        print("(CPU ratios: lower is better)")
    if f:
        print(f"\nFloor, feedparser {f['feedparser']} on the same bodies:")
        print(f"  sanitize_html=False, resolve_relative_uris=False, one process: "
              f"{f['bare_eps']:,.0f} entries/s")  # fmt: skip
        if f["parallel_eps"]:
            print(f"  the same on {f['parallel_procs']} processes splitting the bodies: "
                  f"{f['parallel_eps']:,.0f} entries/s (runs: "
                  f"{', '.join(f'{v:,.0f}' for v in f['all_parallel_eps'])}; other processes "
                  f"{f['parallel_other_cpu']:.1f} CPU s)")  # fmt: skip
        print(f"  default options, one process (every 4th feed): {f['default_eps']:,.0f} entries/s")
        for k in ours:
            t = sides[k]
            print(f"  {_label(k)} first round / one-process bare floor: "
                  f"{t['first_eps'] / f['bare_eps']:.2f}x")  # fmt: skip
        if r:
            print(f"  reader first round / default floor: {r['first_eps'] / f['default_eps']:.2f}x")
    for side, d in sides.items():
        firsts = ", ".join(f"{v:,.0f}" for v in d["all_first_eps"])
        seconds = ", ".join(f"{v:,.0f}" for v in d["all_second_pps"])
        print(f"\n{_label(side)} runs: first round entries/s [{firsts}]; "
              f"304 round polls/s [{seconds}]")  # fmt: skip
        if d["errors"]:
            print(f"  {_label(side)}: {d['errors']} failed polls in some run (see above)")
        every = d["requests_max"] == d["requests_min"] == d["conditional"] == d["served_304"] == n
        verdict = "yes" if every else (
            f"NO: {d['requests_min']:.0f}-{d['requests_max']:.0f} requests, "
            f"{d['conditional']:.0f} conditional, {d['served_304']:.0f} 304s for {n} feeds"
        )  # fmt: skip
        print(f"  every 304-round request conditional and answered 304 (generator's "
              f"counters, every round): {verdict}")  # fmt: skip
    counts = {_label(k): d["entries"] for k, d in sides.items()}
    if f:
        counts["floor"] = f["entries"]
    if len(set(counts.values())) > 1:
        print(f"\nWARNING: the sides disagree on the number of entries: {counts}")
    cores = os.cpu_count() or 1
    for side, d in sides.items():
        for rnd, name in (("first", "first"), ("second", "304")):
            other = d[f"{rnd}_other_cpu"]
            if other > max(0.5, 0.1 * cores * d[f"{rnd}_s"]):
                print(
                    f"\nWARNING: other processes used {other:.1f} CPU s during the "
                    f"{_label(side)} {name} round (median): its figures are noisy"
                )
    if args.profile:
        print("\nNOTE: --profile: the Tidings 304 rounds ran under cProfile; their figures "
              "are slower than unprofiled ones")  # fmt: skip
    print()
    for k in ours:
        t = sides[k]
        checks = []
        if r:
            checks += [
                ("first round vs reader", t["first_eps"] / r["first_eps"], TARGET_FIRST),
                ("304 round vs reader", t["second_pps"] / r["second_pps"], TARGET_304),
            ]
        if f and f["parallel_eps"]:
            name = f"first round vs the {f['parallel_procs']}-process bare floor"
            checks.append((name, t["first_eps"] / f["parallel_eps"], TARGET_FLOOR))
        for name, ratio, target in checks:
            verdict = "met" if ratio >= target else f"MISSED by {target / ratio:.2f}x"
            print(f"Target {target:g}x, {_label(k)} {name}: {ratio:.2f}x -> {verdict}")


def _package(filename: str) -> str:
    """Where a profiled function lives: a site package, the stdlib module, ours."""
    parts = Path(filename).parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0].removesuffix(".py") if rest else filename
    for ours in ("aggregator", "connectors", "bench"):
        if ours in parts:
            return f"{ours}/{parts[-1]}"
    if filename.startswith("~") or filename == "<built-in>":
        return "builtins (C functions)"
    for i, part in enumerate(parts):
        if part.startswith("python3") and i + 1 < len(parts):  # .../lib/python3.11/asyncio/...
            return "stdlib " + parts[i + 1].removesuffix(".py")
    return filename


def profile_by_package(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Own (not cumulative) seconds per package, largest first."""
    totals: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = _package(filename)
        totals[key] = totals.get(key, 0.0) + tottime
    return sorted(totals.items(), key=lambda kv: -kv[1])


def print_profile(path: Path, top: int = 25) -> None:
    """The heaviest functions of a profiled 304 round, by own time and by
    cumulative time (so both the hot leaves and the costly callers show),
    and own time summed by package."""
    import io

    packages = profile_by_package(pstats.Stats(str(path)))
    total = sum(t for _, t in packages) or 1.0
    print(f"\nProfile of the Tidings 304 rounds ({path.name}): own time by package")
    for name, seconds in packages[:15]:
        print(f"  {seconds:8.2f} s  {100 * seconds / total:5.1f}%  {name}")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(str(path), stream=out).strip_dirs().sort_stats(order).print_stats(top)
        text = out.getvalue()
        body = text[text.index("   ncalls") :] if "   ncalls" in text else text
        print(f"\nProfile of the Tidings 304 rounds ({path.name}), top {top} by {order}:")
        print(body.rstrip())


def _pollers(args: argparse.Namespace) -> list[int]:
    return [int(x) for x in str(args.pollers).split(",") if x.strip()]


def _parsers(args: argparse.Namespace) -> int:
    return args.workers or os.cpu_count() or 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=500)
    parser.add_argument(
        "--items", type=parse_items, default=ITEMS, help="items per feed, N or MIN-MAX (20-50)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="304 rounds per run (median)")
    parser.add_argument("--sides", default="tidings,reader,floor",
                        help="comma-separated subset of tidings,reader,floor")  # fmt: skip
    # All feeds share one host here, so the per-host cap (default 4) would be the
    # whole story; raise it and the global cap to let the poller work.
    parser.add_argument("--concurrency", type=int, default=64, help="Tidings [poller] concurrency")
    parser.add_argument("--per-host", type=int, default=8, help="Tidings [http] per_host")
    parser.add_argument("--workers", type=int, default=0, help="Tidings [poller] workers")
    parser.add_argument(
        "--pollers",
        default="1,2",
        help="Tidings poller processes sharing the due-list; a list measures each (1,2)",
    )
    parser.add_argument("--reader-workers", type=int, default=1, help="reader update workers")
    parser.add_argument(
        "--floor-procs",
        type=int,
        default=os.cpu_count() or 1,
        help="processes of the multi-core bare floor (default: one per core)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per side per run")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--profile", type=Path, help="cProfile the Tidings 304 rounds; write DIR/tidings-pN.pstats"
    )
    parser.add_argument("--side", choices=sorted(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.side:  # a child: measure one side, write its figures, exit
        args.out.write_text(json.dumps(SIDES[args.side](args)))
        return 0

    sides = [x.strip() for x in args.sides.split(",") if x.strip()]
    if unknown := set(sides) - set(SIDES):
        parser.error(f"unknown side(s): {', '.join(sorted(unknown))}")
    pollers = _pollers(args)
    if not pollers or min(pollers) < 1:
        parser.error("--pollers: one or more positive numbers, e.g. 1,2")
    print(
        f"Tidings settings: {'/'.join(map(str, pollers))} poller process(es), "
        f"[poller] concurrency={args.concurrency} "
        f"workers={args.workers} ({_parsers(args)} parser processes each); "
        f"[http] per_host={args.per_host}; reader update_feeds workers={args.reader_workers}"
    )
    print(
        environment(
            ", ".join(f"{n} {package_version(n)}" for n in ("reader", "feedparser", "httpx2"))
        )
    )
    started = time.perf_counter()
    # Interleaved within each run (Tidings variants, reader, floor), so drift hits every side.
    order = [(f"tidings-{p}", "tidings", p) for p in pollers if "tidings" in sides]
    order += [(s, s, 1) for s in ("reader", "floor") if s in sides]
    runs: dict[str, list[Result]] = {key: [] for key, _, _ in order}
    print(f"starting the generator ({args.feeds:,} feeds) ...", flush=True)
    with serve_feeds(args.feeds, items=args.items, timeout=args.timeout) as server:
        for run in range(1, args.runs + 1):
            for key, side, n in order:
                t0 = time.perf_counter()
                result = run_side(side, args, server.port, n)
                runs[key].append(result)
                print(f"run {run}/{args.runs} {key}: {_brief(side, result)} "
                      f"[{time.perf_counter() - t0:.0f} s with setup]", flush=True)  # fmt: skip
        generator_mb = server.stats().get("rss_mb", 0.0)
    summary = summarise(runs, args)
    print_table(summary, args, generator_mb)
    if args.profile:
        for p in pollers:
            path = args.profile / f"tidings-p{p}.pstats"
            if path.exists():
                print_profile(path)
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    return 0


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def environment(libraries: str) -> str:
    """Versions, commit and how busy the machine is, for the record; every
    bench prints one. `libraries` names the versions that matter to it."""
    root = Path(__file__).resolve().parent.parent
    git = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True
    )
    busy0 = _machine_busy()
    time.sleep(1.0)  # a sampling window, not synchronisation
    busy = (_machine_busy() - busy0) / (os.cpu_count() or 1)
    return (
        f"Python {sys.version.split()[0]}, Tidings {git.stdout.strip() or '?'}, {libraries}; "
        f"{os.cpu_count()} cores, {busy:.0%} busy before the start"
        + (" (expect noise)" if busy > 0.1 else "")
    )


def _brief(side: str, r: Result) -> str:
    if side == "floor":
        text = (
            f"{r['entries']:,} entries; bare {r['bare_eps']:,.0f}/s, "
            f"defaults {r['default_eps']:,.0f}/s"
        )
        if par := r.get("parallel"):
            text += f"; bare on {par['procs']} processes {par['eps']:,.0f}/s"
        return text
    one, two = r["first"], r["second"]
    text = (
        f"first {one['entries']:,} entries in {one['seconds']:.2f} s "
        f"({one['entries'] / one['seconds']:,.0f}/s); 304 round {two['polls']} polls in "
        f"{two['seconds']:.2f} s ({two['polls'] / two['seconds']:,.0f}/s, "
        f"{two['served_304']:.0f} 304s served, other processes {two['other_cpu']:.1f} CPU s)"
    )
    for name, rnd in (("first", one), ("304", two)):
        if rnd["errors"]:
            text += f"; {rnd['errors']} errors in the {name} round, e.g. {rnd['first_error']}"
    return text


if __name__ == "__main__":
    sys.exit(main())
