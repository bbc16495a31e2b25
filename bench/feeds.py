"""Feed polling: Tidings against the `reader` library and feedparser's floor.

    python -m bench.feeds                      # 500 feeds, medians of 3 runs (make bench)
    python -m bench.feeds --feeds 50 --runs 1  # a quick look

One generator process (bench.feedgen) serves N deterministic RSS feeds on
127.0.0.1 with strong ETags. Each run measures, each side in a fresh
interpreter with a fresh temp dir and database:

- Tidings: `Poller.poll_now()` over N `feed` sources, twice. Round 1 stores
  every entry (entries/s); round 2 finds every feed unchanged (HTTP 304; polls/s).
- reader (lemon24), the peer: `update_feeds_iter(scheduled=False)`, twice.
- the floor: `feedparser.parse` over the same N bodies in one process, with
  `sanitize_html=False, resolve_relative_uris=False`, and with its defaults.

The generator's own counters show how many requests were conditional and got a
304, so neither side can pass the 304 round by skipping work. Setup (importing,
creating the store and its schema, adding the feeds) is outside the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.feedgen import fetch_stats, render_feeds, serve_feeds

TARGET = 3.0  # the issue: at least 3x reader on both rounds
REPEATS_304 = 3  # a 304 round lasts about a second: take the median of three per run
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
        self.server = {k: server1[k] - self.server0[k] for k in server1}
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
            {"id": f"feed{i:04d}", "kind": "feed", "url": f"{base}/{i}.xml"}
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


def _poller_process(raw: dict[str, Any], rounds: Any, done: Any) -> None:
    """An extra poller process (--pollers N): drains each round when told to."""
    os.environ["TIDINGS_DISABLE_PLUGINS"] = "1"
    from aggregator.config import parse_config
    from aggregator.store import Store

    config = parse_config(raw)
    store = Store(config.store_url)

    async def main() -> None:
        poller = await _warm_poller(config, store)
        try:
            for _ in range(1 + REPEATS_304):
                await asyncio.to_thread(rounds.get)
                outcomes = await poller.drain()
                done.put([(len(o.new_event_ids), o.not_modified, o.error) for o in outcomes])
        finally:
            await poller.aclose()

    asyncio.run(main())
    store.close()


def tidings_side(args: argparse.Namespace) -> Result:
    os.environ["TIDINGS_DISABLE_PLUGINS"] = "1"  # built-in connectors only, like the tests
    import multiprocessing

    from aggregator.config import parse_config
    from aggregator.store import Store

    raw = _tidings_config(args)
    config = parse_config(raw)
    store = Store(config.store_url)
    store.sync_sources(config.sources, datetime.now(UTC))
    ctx = multiprocessing.get_context("spawn")
    rounds, done = ctx.Queue(), ctx.Queue()
    extra = [
        ctx.Process(target=_poller_process, args=(raw, rounds, done))
        for _ in range(args.pollers - 1)
    ]
    for proc in extra:
        proc.start()

    async def one_round(poller: Any) -> list[tuple[int, bool, str | None]]:
        for _ in extra:
            rounds.put("go")
        mine = await poller.drain()
        theirs = [await asyncio.to_thread(done.get) for _ in extra]
        return [(len(o.new_event_ids), o.not_modified, o.error) for o in mine] + [
            x for share in theirs for x in share
        ]

    async def rounds_() -> Result:
        poller = await _warm_poller(config, store)
        await asyncio.sleep(1.0 if extra else 0)  # let the extra pollers start their pools
        try:
            with _Round(args.port) as first:
                outcomes = await one_round(poller)
            errors = [e for _, _, e in outcomes if e]
            one = first.report(
                entries=sum(n for n, _, _ in outcomes),
                errors=len(errors),
                first_error=errors[0] if errors else None,
            )
            reports = []
            for _ in range(REPEATS_304):
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
            two = _median_round(reports)
            memory = _memory()  # before aclose: the pool workers are still alive
        finally:
            await poller.aclose()
        return {"first": one, "second": two, **memory}

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
    for _ in range(REPEATS_304):
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
    return {"first": one, "second": two, **memory}


def floor_side(args: argparse.Namespace) -> Result:
    import feedparser

    bodies = render_feeds(args.feeds)  # the very bytes the generator serves (same seed)

    def rate(docs: list[bytes], **options: Any) -> tuple[int, float]:
        started = time.perf_counter()
        entries = sum(len(feedparser.parse(body, **options).entries) for body in docs)
        return entries, entries / (time.perf_counter() - started)

    entries, bare = rate(bodies, sanitize_html=False, resolve_relative_uris=False)
    # Defaults are 3x slower; every 4th feed gives the rate and saves a minute a run.
    _, default = rate(bodies[::4])
    return {
        "entries": entries,
        "bytes": sum(map(len, bodies)),
        "bare_eps": bare,
        "default_eps": default,
        "feedparser": feedparser.__version__,
        **_memory(),
    }


SIDES: dict[str, Callable[[argparse.Namespace], Result]] = {
    "tidings": tidings_side,
    "reader": reader_side,
    "floor": floor_side,
}


def run_side(side: str, args: argparse.Namespace, port: int) -> Result:
    """One side, one run: a fresh interpreter and a fresh temp dir."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable, "-m", "bench.feeds", "--side", side, "--port", str(port),
            "--dir", tmp, "--out", str(out), "--feeds", str(args.feeds),
            "--concurrency", str(args.concurrency), "--per-host", str(args.per_host),
            "--workers", str(args.workers), "--reader-workers", str(args.reader_workers),
            "--pollers", str(args.pollers),
        ]  # fmt: skip
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


def summarise(runs: dict[str, list[Result]], args: argparse.Namespace) -> Result:
    """Medians of every figure; ratios are of medians."""
    s: Result = {"feeds": args.feeds, "runs": args.runs}
    for side in ("tidings", "reader"):
        rs = runs.get(side) or []
        if not rs:
            continue
        one = [r["first"] for r in rs]
        two = [r["second"] for r in rs]
        s[side] = {
            "entries": _med([x["entries"] for x in one]),
            "first_s": _med([x["seconds"] for x in one]),
            "first_eps": _med([x["entries"] / x["seconds"] for x in one]),
            "first_cpu": _med([x["cpu"] for x in one]),
            "first_server_cpu": _med([x["server_cpu"] for x in one]),
            "second_s": _med([x["seconds"] for x in two]),
            "second_pps": _med([x["polls"] / x["seconds"] for x in two]),
            "second_cpu": _med([x["cpu"] for x in two]),
            "second_server_cpu": _med([x["server_cpu"] for x in two]),
            "first_other_cpu": _med([x["other_cpu"] for x in one]),
            "second_other_cpu": _med([x["other_cpu"] for x in two]),
            "first_connections": _med([x["connections"] for x in one]),
            "second_connections": _med([x["connections"] for x in two]),
            "served_304": min(x["served_304"] for x in two),
            "conditional": min(x["conditional"] for x in two),
            "errors": max(x["errors"] for x in one + two),
            "rss_main_mb": _med([r["rss_main_mb"] for r in rs]),
            "rss_total_mb": _med([r["rss_main_mb"] + sum(r["rss_children_mb"]) for r in rs]),
            "all_first_eps": [x["entries"] / x["seconds"] for x in one],
            "all_second_pps": [x["polls"] / x["seconds"] for x in two],
        }
    if runs.get("floor"):
        fl = runs["floor"]
        s["floor"] = {
            "entries": fl[0]["entries"],
            "mb": fl[0]["bytes"] / 1e6,
            "bare_eps": _med([r["bare_eps"] for r in fl]),
            "default_eps": _med([r["default_eps"] for r in fl]),
            "feedparser": fl[0]["feedparser"],
        }
    return s


def print_table(s: Result, args: argparse.Namespace) -> None:
    t, r, f = s.get("tidings"), s.get("reader"), s.get("floor")
    n = args.feeds
    print()
    entries = (t or r or f or {}).get("entries", 0)
    size = f", {f['mb']:.1f} MB of RSS" if f else ""
    print(f"Feed polling: {n} loopback feeds, {entries:,.0f} entries{size}; "
          f"{os.cpu_count()} cores; medians of {args.runs} run(s)")  # fmt: skip
    rows: list[tuple[str, str, str, str]] = []

    def row(label: str, key: str, ratio: bool = False) -> None:
        tv = t[key] if t else None
        rv = r[key] if r else None
        rows.append((
            label,
            _fmt(tv) if tv is not None else "-",
            _fmt(rv) if rv is not None else "-",
            f"{tv / rv:.2f}x" if ratio and tv and rv else "",
        ))  # fmt: skip

    row("first round: entries/s", "first_eps", ratio=True)
    row("first round: seconds", "first_s")
    row("first round: CPU s (process tree)", "first_cpu")
    row("first round: generator CPU s", "first_server_cpu")
    row("first round: other processes' CPU s", "first_other_cpu")
    row("304 round: polls/s", "second_pps", ratio=True)
    row("304 round: seconds", "second_s")
    row("304 round: CPU s (process tree)", "second_cpu")
    row("304 round: other processes' CPU s", "second_other_cpu")
    row("304 round: 304s served", "served_304")
    row("TCP connections opened, first round", "first_connections")
    row("TCP connections opened, 304 round", "second_connections")
    row("peak RSS, main process (MB)", "rss_main_mb")
    row("peak RSS, with its child processes (MB)", "rss_total_mb")
    width = max(len(x[0]) for x in rows)
    if t or r:
        print(f"{'':{width}}  {'Tidings':>10}  {'reader':>10}  {'Tidings/reader':>14}")
        for label, a, b, c in rows:
            print(f"{label:{width}}  {a:>10}  {b:>10}  {c:>14}")
    if f:
        print(f"\nFloor, feedparser {f['feedparser']} on the same bodies, one process:")
        print(f"  sanitize_html=False, resolve_relative_uris=False: {f['bare_eps']:,.0f} entries/s")
        print(
            f"  default options (every 4th feed):                 {f['default_eps']:,.0f} entries/s"
        )
        if t:
            ratio = t["first_eps"] / f["bare_eps"]
            print(
                f"  Tidings first round / bare floor: {ratio:.2f}x (Tidings parses on "
                f"{_parsers(args)} processes, and also fetches, sanitises and stores)"
            )
        if r:
            print(f"  reader first round / default floor: {r['first_eps'] / f['default_eps']:.2f}x")
    for side, d in (("Tidings", t), ("reader", r)):
        if d:
            firsts = ", ".join(f"{v:,.0f}" for v in d["all_first_eps"])
            seconds = ", ".join(f"{v:,.0f}" for v in d["all_second_pps"])
            print(f"\n{side} runs: first round entries/s [{firsts}]; 304 round polls/s [{seconds}]")
            if d["errors"]:
                print(f"  {side}: {d['errors']} failed polls in some run (see above)")
            if d["conditional"] < n or d["served_304"] < n:
                print(f"  {side}: only {d['conditional']:.0f} conditional requests and "
                      f"{d['served_304']:.0f} 304s for {n} feeds in the 304 round")  # fmt: skip
    counts = {name: d["entries"] for name, d in (("Tidings", t), ("reader", r), ("floor", f)) if d}
    if len(set(counts.values())) > 1:
        print(f"\nWARNING: the sides disagree on the number of entries: {counts}")
    cores = os.cpu_count() or 1
    for side, d in (("Tidings", t), ("reader", r)):
        if not d:
            continue
        for rnd, name in (("first", "first"), ("second", "304")):
            other = d[f"{rnd}_other_cpu"]
            if other > max(0.5, 0.1 * cores * d[f"{rnd}_s"]):
                print(
                    f"\nWARNING: other processes used {other:.1f} CPU s during the {side} "
                    f"{name} round (median): its figures are noisy"
                )
    if t and r:
        print()
        for label, key in (("first round", "first_eps"), ("304 round", "second_pps")):
            ratio = t[key] / r[key]
            verdict = "met" if ratio >= TARGET else f"MISSED by {TARGET / ratio:.2f}x"
            print(f"Target {TARGET:g}x reader, {label}: {ratio:.2f}x -> {verdict}")


def _parsers(args: argparse.Namespace) -> int:
    return args.workers or os.cpu_count() or 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sides", default="tidings,reader,floor",
                        help="comma-separated subset of tidings,reader,floor")  # fmt: skip
    # All feeds share one host here, so the per-host cap (default 4) would be the
    # whole story; raise it and the global cap to let the poller work.
    parser.add_argument("--concurrency", type=int, default=64, help="Tidings [poller] concurrency")
    parser.add_argument("--per-host", type=int, default=8, help="Tidings [http] per_host")
    parser.add_argument("--workers", type=int, default=0, help="Tidings [poller] workers")
    parser.add_argument(
        "--pollers", type=int, default=1, help="Tidings poller processes sharing the due-list"
    )
    parser.add_argument("--reader-workers", type=int, default=1, help="reader update workers")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per side per run")
    parser.add_argument("--json", type=Path, help="also write every figure here")
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
    print(
        f"Tidings settings: {args.pollers} poller process(es), "
        f"[poller] concurrency={args.concurrency} "
        f"workers={args.workers} ({_parsers(args)} parser processes); "
        f"[http] per_host={args.per_host}; reader update_feeds workers={args.reader_workers}"
    )
    print(
        environment(
            ", ".join(f"{n} {package_version(n)}" for n in ("reader", "feedparser", "httpx2"))
        )
    )
    started = time.perf_counter()
    runs: dict[str, list[Result]] = {side: [] for side in sides}
    print(f"starting the generator ({args.feeds} feeds) ...", flush=True)
    with serve_feeds(args.feeds) as server:
        for run in range(1, args.runs + 1):
            for side in sides:  # interleaved, so drift hits every side alike
                result = run_side(side, args, server.port)
                runs[side].append(result)
                print(f"run {run}/{args.runs} {side}: {_brief(side, result)}", flush=True)
    summary = summarise(runs, args)
    print_table(summary, args)
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
    time.sleep(1.0)
    busy = (_machine_busy() - busy0) / (os.cpu_count() or 1)
    return (
        f"Python {sys.version.split()[0]}, Tidings {git.stdout.strip() or '?'}, {libraries}; "
        f"{os.cpu_count()} cores, {busy:.0%} busy before the start"
        + (" (expect noise)" if busy > 0.1 else "")
    )


def _brief(side: str, r: Result) -> str:
    if side == "floor":
        return (
            f"{r['entries']:,} entries; bare {r['bare_eps']:,.0f}/s, "
            f"defaults {r['default_eps']:,.0f}/s"
        )
    one, two = r["first"], r["second"]
    text = (
        f"first {one['entries']:,} entries in {one['seconds']:.2f} s "
        f"({one['entries'] / one['seconds']:,.0f}/s); 304 round {two['polls']} polls in "
        f"{two['seconds']:.2f} s ({two['polls'] / two['seconds']:,.0f}/s, "
        f"{two['served_304']:.0f} 304s served)"
    )
    for name, rnd in (("first", one), ("304", two)):
        if rnd["errors"]:
            text += f"; {rnd['errors']} errors in the {name} round, e.g. {rnd['first_error']}"
    return text


if __name__ == "__main__":
    sys.exit(main())
