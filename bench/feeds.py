"""Feed polling: Tidings against the `reader` library and floors on the same work.

    python -m bench.feeds                      # 500 feeds, medians of 3 runs (make bench)
    python -m bench.feeds --feeds 50 --runs 1  # a quick look
    python -m bench.feeds --feeds 10000 --items 3-5 --sides tidings,reader --runs 1
                                               # the 10,000-source all-304 round

One generator process (bench.feedgen) serves N deterministic RSS feeds on
127.0.0.1 with strong ETags. Each run measures every side below once, in this
order, each in a fresh interpreter with a fresh temp dir and database:

- Tidings: `Poller.drain()` over N `feed` sources, its parser pool up before
  the clock starts. Once per `--pollers` value: 1 is one poller process with
  its pool of parser processes (`--workers`, default one per core: three
  processes on a two-core machine), as `serve` runs; 2 is two such pollers
  draining one store (`tidings poller` twice).
- reader (lemon24), the peer: `update_feeds_iter(scheduled=False, workers=W)`
  once per `--reader-workers` value, by default 1 ("reader") and one per core
  ("reader w2" on two cores). reader's workers are threads that fetch; it
  parses (feedparser with its own sanitiser) and stores in the calling thread.
- the floors, on the bodies the generator serves, read from memory (no HTTP,
  no store):
  - same work as Tidings: `feedparser.parse` with its sanitiser and URL joins
    off, then Tidings' own `aggregator.sanitize.sanitize_html` (nh3) on each
    entry's HTML (the content, else the description, against the entry's
    link), on a process pool of `--floor-procs` workers (default one per
    core); once every worker is up and warm, the clock runs from sending the
    first chunk of bodies to the last chunk's result;
  - bare: the same parse without sanitising, less work than either side, in
    one process and on the same kind of pool (kept for the floor target);
  - feedparser's defaults (its own sanitiser and URL joins, what reader's
    parse does), one process, over every 4th body: fewer bodies than the
    sides, a sample for the rate.

A side's rounds: round 1 finds and stores every entry (entries/s); then
`--repeats` rounds (3) find every feed unchanged (HTTP 304; polls/s), and
their median round stands for the run. What is timed is the round's wall
time (perf_counter) and its CPU: user+sys of the side's process and all its
descendants (parser workers, extra pollers, threads included), from /proc
before and after the round; the generator's CPU and every other process's
(the machine's busy time less those two) are counted apart, and CPU over
wall time is the cores the side kept busy. A floor is timed the same way over
its work. Setup (importing, creating the store, adding the feeds, starting
pools, rendering bodies) is outside every timing.

The report gives medians over `--runs` runs (3) of each figure, and ratios of
those medians: each Tidings variant over each reader variant (entries/s,
polls/s and entries per CPU second: higher is better; CPU seconds and CPU ms
per poll: lower is better); every side's first round over the same-work
floor, in entries/s and in CPU seconds for the same entries; reader's first
round over the defaults floor. The targets compare Tidings with the faster
reader variant and with the pooled bare floor. A run (or 304 round) during
which other processes used over half a CPU second and over a tenth of the
machine is named in a warning; nothing is run again. The generator's
counters show how many requests were conditional and got a 304, so no side
can pass the 304 round by skipping work.
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

from bench.feedgen import ITEMS, SEED, fetch_stats, parse_items, render_feed, serve_feeds

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
    """Wall time, CPU of this process tree and of the generator (none for a
    floor: `port` None), requests served."""

    def __init__(self, port: int | None) -> None:
        self.port = port

    def _stats(self) -> dict[str, float]:
        return fetch_stats(self.port) if self.port else dict.fromkeys(_COUNTERS, 0.0)

    def __enter__(self) -> _Round:
        self.server0 = self._stats()
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
        server1 = self._stats()
        self.server = {k: server1[k] - self.server0[k] for k in _COUNTERS}
        if self.port:  # not the round's: the /_stats request that read these counters
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
        workers = _reader_workers(args)[0]
        return list(reader.update_feeds_iter(scheduled=False, workers=workers))

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


def _floor_work(bodies: Sequence[bytes], sanitise: bool) -> int:
    """The floors' unit of work: the entries feedparser finds in `bodies` with
    its own sanitiser and URL joins off, as Tidings parses. With `sanitise`,
    each entry's HTML then goes through Tidings' own `sanitize_html` (nh3),
    as Tidings stores it: the content, else the description, resolved
    against the entry's link."""
    import feedparser

    from aggregator.sanitize import sanitize_html

    entries = 0
    for body in bodies:
        parsed = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
        for e in parsed.entries:
            entries += 1
            if sanitise:
                content = e.get("content")
                html = (content[0].get("value", "") if content else "") or e.get("summary", "")
                sanitize_html(html, e.get("link"))
    return entries


def _floor_worker_ready(barrier: Any, sample: bytes) -> None:
    """A pool worker's start: imports and first-call costs are not the floor's."""
    _floor_work([sample], sanitise=True)
    barrier.wait()


def _pool_floor(bodies: list[bytes], procs: int, sanitise: bool, timeout: float) -> Result:
    """`_floor_work` over `bodies` on a pool of `procs` processes, every worker
    up and warm before the clock starts: entries over the wall time until the
    last chunk is back, and the CPU of this process and the workers."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs + 1)
    chunk = max(1, len(bodies) // (procs * 16))  # small enough that the workers finish together
    with ProcessPoolExecutor(
        procs, mp_context=ctx, initializer=_floor_worker_ready, initargs=(barrier, bodies[0])
    ) as pool:
        # Under spawn a submit starts a worker while none is idle, and none is
        # idle before the barrier: `procs` submits start them all.
        for _ in range(procs):
            pool.submit(int)
        barrier.wait(timeout)
        with _Round(None) as span:
            chunks = [
                pool.submit(_floor_work, bodies[i : i + chunk], sanitise)
                for i in range(0, len(bodies), chunk)
            ]
            entries = sum(f.result(timeout) for f in chunks)
    return {"procs": procs, **span.report(entries=entries, eps=entries / span.seconds)}


def floor_side(args: argparse.Namespace) -> Result:
    import feedparser

    bodies = [render_feed(i, SEED, args.items) for i in range(args.feeds)]  # the served bytes
    _floor_work(bodies[:1], sanitise=True)  # imports and first-call costs
    with _Round(None) as bare:
        entries = _floor_work(bodies, sanitise=False)
    # Defaults are 3x slower; every 4th feed gives the rate and saves a minute a run.
    with _Round(None) as default:
        sample = sum(len(feedparser.parse(body).entries) for body in bodies[::4])
    procs = args.floor_procs
    return {
        "entries": entries,
        "bytes": sum(map(len, bodies)),
        "bare_eps": entries / bare.seconds,
        "bare_seconds": bare.seconds,
        "bare_cpu": bare.cpu,
        "bare_other_cpu": bare.others,
        "default_eps": sample / default.seconds,
        "default_seconds": default.seconds,
        "default_other_cpu": default.others,
        "same_work": _pool_floor(bodies, procs, True, args.timeout),
        "parallel": _pool_floor(bodies, procs, False, args.timeout) if procs > 1 else None,
        "feedparser": feedparser.__version__,
        "nh3": package_version("nh3"),
        **_memory(),
    }


SIDES: dict[str, Callable[[argparse.Namespace], Result]] = {
    "tidings": tidings_side,
    "reader": reader_side,
    "floor": floor_side,
}


def run_side(side: str, args: argparse.Namespace, port: int, n: int = 1) -> Result:
    """One side, one run: a fresh interpreter and a fresh temp dir. `n` is the
    Tidings side's poller processes, the reader side's update workers."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as tmp:
        out = Path(tmp) / "result.json"
        pollers, reader_workers = (n, 1) if side == "tidings" else (1, n)
        cmd = [
            sys.executable, "-m", "bench.feeds", "--side", side, "--port", str(port),
            "--dir", tmp, "--out", str(out), "--feeds", str(args.feeds),
            "--items", f"{args.items[0]}-{args.items[1]}", "--repeats", str(args.repeats),
            "--concurrency", str(args.concurrency), "--per-host", str(args.per_host),
            "--workers", str(args.workers), "--reader-workers", str(reader_workers),
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
    """ "tidings-1" -> "Tidings", "tidings-2" -> "Tidings x2" (two poller processes);
    "reader" -> "reader", "reader-w2" -> "reader w2" (`update_feeds(workers=2)`)."""
    if key.startswith("reader"):
        return key.replace("-", " ")
    n = int(key.rsplit("-", 1)[1])
    return "Tidings" if n == 1 else f"Tidings x{n}"


def _noisy(spans: Sequence[Result]) -> list[tuple[int, float]]:
    """(1-based index, other CPU s) of the timed spans during which other
    processes used over half a CPU second and over a tenth of the machine."""
    cores = os.cpu_count() or 1
    limit = [max(0.5, 0.1 * cores * x["seconds"]) for x in spans]
    return [(i, x["other_cpu"]) for i, (x, y) in enumerate(zip(spans, limit, strict=True), 1)
            if x["other_cpu"] > y]  # fmt: skip


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
            "first_cores": _med([x["cpu"] / x["seconds"] for x in one]),
            "first_epc": _med([x["entries"] / x["cpu"] if x["cpu"] else 0.0 for x in one]),
            "first_server_cpu": _med([x["server_cpu"] for x in one]),
            "first_other_cpu": _med([x["other_cpu"] for x in one]),
            "second_s": _med([x["seconds"] for x in two]),
            "second_pps": _med([x["polls"] / x["seconds"] for x in two]),
            "second_cpu": _med([x["cpu"] for x in two]),
            "second_cores": _med([x["cpu"] / x["seconds"] for x in two]),
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
            "all_first_cpu": [x["cpu"] for x in one],
            "all_second_pps": [x["polls"] / x["seconds"] for x in two],
            "all_second_other_cpu": [x["other_cpu"] for x in two],
            "noisy_first": _noisy(one),
            "noisy_second": _noisy(every),
            "second_rounds": len(every),
        }
    if runs.get("floor"):
        fl = runs["floor"]
        par = [r["parallel"] for r in fl if r.get("parallel")]
        same = [r["same_work"] for r in fl if r.get("same_work")]
        # Each floor's timed spans, by run, for the noise warnings.
        spans: dict[str, list[Result]] = {"one-process bare floor": [], "defaults floor": []}
        for r in fl:
            if "bare_seconds" in r:
                spans["one-process bare floor"].append(
                    {"seconds": r["bare_seconds"], "other_cpu": r["bare_other_cpu"]}
                )
                spans["defaults floor"].append(
                    {"seconds": r["default_seconds"], "other_cpu": r["default_other_cpu"]}
                )
        spans["same-work floor"] = same
        spans["pooled bare floor"] = [p for p in par if "seconds" in p]
        s["floor"] = {
            "entries": fl[0]["entries"],
            "mb": fl[0]["bytes"] / 1e6,
            "bare_eps": _med([r["bare_eps"] for r in fl]),
            "bare_other_cpu": _med([r["bare_other_cpu"] for r in fl]),
            "default_eps": _med([r["default_eps"] for r in fl]),
            "feedparser": fl[0]["feedparser"],
            "nh3": fl[0].get("nh3", "?"),
            "same_procs": same[0]["procs"] if same else None,
            "same_entries": same[0]["entries"] if same else None,
            "same_eps": _med([p["eps"] for p in same]) if same else None,
            "same_cpu": _med([p["cpu"] for p in same]) if same else None,
            "same_cores": _med([p["cpu"] / p["seconds"] for p in same]) if same else None,
            "all_same_eps": [p["eps"] for p in same],
            "parallel_procs": par[0]["procs"] if par else 1,
            "parallel_eps": _med([p["eps"] for p in par]) if par else None,
            "parallel_other_cpu": _med([p["other_cpu"] for p in par]) if par else None,
            "all_parallel_eps": [p["eps"] for p in par],
            "noisy": {name: _noisy(x) for name, x in spans.items() if x},
        }
    return s


def _runs(values: Sequence[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def _noise_warning(what: str, noisy: list[tuple[int, float]], of: int) -> str:
    """One line for the `noisy` ones of `of` timed spans (runs, or 304 rounds)."""
    worst = max(cpu for _, cpu in noisy)
    where = ", ".join(str(i) for i, _ in noisy)
    return (
        f"WARNING: other processes were busy during {what} {where} (of {of}; up to "
        f"{worst:.1f} CPU s): those figures are noisy"
    )


def print_table(s: Result, args: argparse.Namespace, generator_mb: float) -> None:
    sides: dict[str, Result] = s["sides"]
    f: Result | None = s.get("floor")
    readers = [k for k in sides if k.startswith("reader")]
    ours = [k for k in sides if k not in readers]
    n = args.feeds
    print()
    entries = next(iter(sides.values()), f or {}).get("entries", 0)
    size = f", {f['mb']:.1f} MB of RSS" if f else ""
    items = "-".join(map(str, sorted(set(args.items))))
    print(f"Feed polling: {n:,} loopback feeds of {items} items, {entries:,.0f} entries{size}; "
          f"{os.cpu_count()} cores; medians of {args.runs} run(s), each 304 figure the "
          f"median of {args.repeats} rounds; generator peak RSS {generator_mb:.0f} MB")  # fmt: skip
    for k in readers:
        if k != "reader":
            w = k.removeprefix("reader-w")
            print(f"{_label(k)}: reader's update_feeds_iter(workers={w}): {w} threads fetch; "
                  "reader parses and stores in the calling thread")  # fmt: skip
    pairs = [(k, rk) for k in ours for rk in readers]
    head = [_label(k) for k in sides] + [f"{_label(k)}/{_label(rk)}" for k, rk in pairs]
    rows: list[list[str]] = []

    def row(label: str, key: str, ratio: bool = False) -> None:
        cells = [_fmt(d[key]) for d in sides.values()]
        for k, rk in pairs:
            theirs = sides[rk][key]
            cells.append(f"{sides[k][key] / theirs:.2f}x" if ratio and theirs else "")
        rows.append([label, *cells])

    row("first round: entries/s", "first_eps", ratio=True)
    row("first round: seconds", "first_s")
    row("first round: CPU s (process tree)", "first_cpu", ratio=True)
    row("first round: cores busy (CPU s / s)", "first_cores")
    row("first round: entries per CPU s", "first_epc", ratio=True)
    row("first round: generator CPU s", "first_server_cpu")
    row("first round: other processes' CPU s", "first_other_cpu")
    row("304 round: polls/s", "second_pps", ratio=True)
    row("304 round: seconds", "second_s")
    row("304 round: CPU s (process tree)", "second_cpu", ratio=True)
    row("304 round: cores busy (CPU s / s)", "second_cores")
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
        print("(CPU: user+sys of the side's process and all its descendants. Ratios of medians: "
              "for rates higher is better, for CPU s and ms lower is better)")  # fmt: skip
    if f:
        print(f"\nFloors: the same bodies, read from memory with no HTTP and no store "
              f"(feedparser {f['feedparser']}, nh3 {f['nh3']}):")  # fmt: skip
        if f["same_eps"]:
            print(f"  same work as Tidings (feedparser with its sanitiser off, then Tidings' "
                  f"sanitize_html on each entry's HTML), a pool of {f['same_procs']} process(es): "
                  f"{f['same_eps']:,.0f} entries/s, {f['same_cpu']:.2f} CPU s, "
                  f"{f['same_cores']:.2f} cores busy "
                  f"(runs: {_runs(f['all_same_eps'])})")  # fmt: skip
            for k, d in sides.items():
                cpu = f"{d['first_cpu'] / f['same_cpu']:.2f}x" if f["same_cpu"] else "-"
                print(f"    {_label(k)} first round / this floor: "
                      f"{d['first_eps'] / f['same_eps']:.2f}x its entries/s, "
                      f"{cpu} its CPU s")  # fmt: skip
        print(f"  bare (parsing only, no sanitising: less work than either side), one process: "
              f"{f['bare_eps']:,.0f} entries/s")  # fmt: skip
        if f["parallel_eps"]:
            print(
                f"  bare, a pool of {f['parallel_procs']} process(es): "
                f"{f['parallel_eps']:,.0f} entries/s (runs: {_runs(f['all_parallel_eps'])})"
            )
        print(f"  feedparser's defaults (its own sanitiser and URL joins, as reader parses), "
              f"one process, every 4th feed (a sample of the bodies): "
              f"{f['default_eps']:,.0f} entries/s")  # fmt: skip
        for k in readers:
            print(f"    {_label(k)} first round / this floor: "
                  f"{sides[k]['first_eps'] / f['default_eps']:.2f}x")  # fmt: skip
    for side, d in sides.items():
        print(f"\n{_label(side)} runs: first round entries/s [{_runs(d['all_first_eps'])}], "
              f"CPU s [{', '.join(f'{v:.2f}' for v in d['all_first_cpu'])}]; "
              f"304 round polls/s [{_runs(d['all_second_pps'])}]")  # fmt: skip
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
        if f["same_entries"] is not None:
            counts["same-work floor"] = f["same_entries"]
    if len(set(counts.values())) > 1:
        print(f"\nWARNING: the sides disagree on the number of entries: {counts}")
    warnings = []
    for side, d in sides.items():
        if d["noisy_first"]:
            what = f"the {_label(side)} first round of run"
            warnings.append(_noise_warning(what, d["noisy_first"], s["runs"]))
        if d["noisy_second"]:
            what = f"{_label(side)} 304 rounds (every round of every run)"
            warnings.append(_noise_warning(what, d["noisy_second"], d["second_rounds"]))
    for name, noisy in (f or {}).get("noisy", {}).items():
        if noisy:
            warnings.append(_noise_warning(f"the {name} of run", noisy, s["runs"]))
    if warnings:
        print("\n" + "\n".join(warnings))
    if args.profile:
        print("\nNOTE: --profile: the Tidings 304 rounds ran under cProfile; their figures "
              "are slower than unprofiled ones")  # fmt: skip
    print()
    for k in ours:
        t = sides[k]
        checks = []
        # Against reader at its best: the faster of its variants, figure by figure.
        for name, key, target in (("first round", "first_eps", TARGET_FIRST),
                                  ("304 round", "second_pps", TARGET_304)):  # fmt: skip
            if readers:
                fast = max(readers, key=lambda rk: sides[rk][key])
                checks.append((f"{name} vs {_label(fast)}", t[key] / sides[fast][key], target, ""))
        if f and f["parallel_eps"]:
            name = f"first round vs the {f['parallel_procs']}-process bare floor"
            note = " (bare: parsing only, less work than Tidings)"
            checks.append((name, t["first_eps"] / f["parallel_eps"], TARGET_FLOOR, note))
        for name, ratio, target, note in checks:
            verdict = "met" if ratio >= target else f"MISSED by {target / ratio:.2f}x"
            print(f"Target {target:g}x, {_label(k)} {name}: {ratio:.2f}x -> {verdict}{note}")


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


def _reader_workers(args: argparse.Namespace) -> list[int]:
    return list(dict.fromkeys(int(x) for x in str(args.reader_workers).split(",") if x.strip()))


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
    parser.add_argument(
        "--reader-workers",
        default=f"1,{os.cpu_count() or 1}",
        help="reader update_feeds workers (threads that fetch); a list measures each "
        "(default: 1 and one per core)",
    )
    parser.add_argument(
        "--floor-procs",
        type=int,
        default=os.cpu_count() or 1,
        help="processes of the pooled floors (default: one per core)",
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
    reader_workers = _reader_workers(args)
    if not reader_workers or min(reader_workers) < 1:
        parser.error("--reader-workers: one or more positive numbers, e.g. 1,2")
    if args.floor_procs < 1:
        parser.error("--floor-procs: a positive number")
    print(
        f"Tidings settings: {'/'.join(map(str, pollers))} poller process(es), "
        f"[poller] concurrency={args.concurrency} "
        f"workers={args.workers} ({_parsers(args)} parser processes each); "
        f"[http] per_host={args.per_host}; reader update_feeds workers="
        f"{'/'.join(map(str, reader_workers))}; floors on {args.floor_procs} process(es)"
    )
    print(
        environment(
            ", ".join(f"{n} {package_version(n)}" for n in ("reader", "feedparser", "httpx2"))
        )
    )
    started = time.perf_counter()
    # Interleaved within each run (Tidings variants, reader variants, floor), so drift hits
    # every side.
    order = [(f"tidings-{p}", "tidings", p) for p in pollers if "tidings" in sides]
    order += [
        ("reader" if w == 1 else f"reader-w{w}", "reader", w)
        for w in reader_workers
        if "reader" in sides
    ]
    order += [("floor", "floor", 1)] if "floor" in sides else []
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
        same = r["same_work"]
        text = (
            f"{r['entries']:,} entries; same work as Tidings on {same['procs']} processes "
            f"{same['eps']:,.0f}/s ({same['cpu']:.2f} CPU s, other processes "
            f"{same['other_cpu']:.1f} CPU s); bare {r['bare_eps']:,.0f}/s"
        )
        if par := r.get("parallel"):
            text += f", on {par['procs']} processes {par['eps']:,.0f}/s"
        return text + f"; defaults {r['default_eps']:,.0f}/s"
    one, two = r["first"], r["second"]
    text = (
        f"first {one['entries']:,} entries in {one['seconds']:.2f} s "
        f"({one['entries'] / one['seconds']:,.0f}/s, {one['cpu']:.2f} CPU s, other processes "
        f"{one['other_cpu']:.1f} CPU s); 304 round {two['polls']} polls in "
        f"{two['seconds']:.2f} s ({two['polls'] / two['seconds']:,.0f}/s, {two['cpu']:.2f} CPU s, "
        f"{two['served_304']:.0f} 304s served, other processes {two['other_cpu']:.1f} CPU s)"
    )
    for name, rnd in (("first", one), ("304", two)):
        if rnd["errors"]:
            text += f"; {rnd['errors']} errors in the {name} round, e.g. {rnd['first_error']}"
    return text


if __name__ == "__main__":
    sys.exit(main())
