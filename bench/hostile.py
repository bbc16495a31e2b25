"""Hostile round: one real `tidings poll` over real-world feeds and hostile sources.

    python -m bench.hostile                       # the issue's round: a 10-minute drip
    python -m bench.hostile --drip-seconds 20     # a quick look
    python -m bench.hostile --total-timeout 30    # written into the config's [http] table

A loopback server in its own process serves the real-world feeds of the shared
corpus (TIDINGS_CORPUS, default ../shared/corpus beside the checkout; read in
place, never copied) and six hostile sources, each on a port of its own, as
if each were its own site (the fetcher limits connections per host and port):

- entity-bomb: one 50 KB entity referenced 50,000 times (2.5 GB if expanded);
- billion-laughs: ten nested entities of ten references each (10^9 "lol"s);
- gzip-bomb: 2 GiB of zeros, gzipped twice, sent as a few KB with
  `Content-Encoding: gzip, gzip` (one gzip layer cannot shrink more than
  about 1,000:1, so a few KB that decode to GBs takes two);
- redirect-loop: /a redirects to /b and /b to /a, for ever;
- drip: a valid RSS body sent one byte a second (`--drip-seconds`, 600);
- garbage: 256 KB of random bytes as `application/rss+xml`.

Two rounds, each a fresh store and one `tidings poll --config FILE` process,
the CLI as a user runs it: the real feeds alone (the baseline), then the real
feeds with the hostile sources. Reported: each round's wall time; per hostile
source its requests, its time (its first request to its failure in the CLI's
log, or to its last byte when it did not fail) and its recorded error (the
store's `last_error`, as `tidings sources` shows it); the events stored per
real feed, which must equal the baseline's; and peak memory, VmHWM of every
process in the CLI's tree (main, forkserver, parser workers), sampled every
0.1 s. `--solo` also polls each hostile source alone, in a CLI of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gzip
import json
import os
import random
import re
import select
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.feeds import _machine_busy, environment, package_version

ROOT = Path(__file__).resolve().parent.parent
CORPUS_ENV = "TIDINGS_CORPUS"
BESIDE = ROOT.parent / "shared" / "corpus"
# The corpus folders holding real-world feeds (others are parser test suites'
# synthetic cases); only feed documents, by the manifest's kind column.
REAL_FOLDERS = (
    "rowanmanning-sample-feeds/real-world/", "lemon24-reader/", "feed-rs/", "atoma/",
    "feed-io/", "feedkit/", "laminas-feed/",
)  # fmt: skip
FEED_KINDS = {"rss": "application/rss+xml", "atom": "application/atom+xml",
              "rdf": "application/rdf+xml", "jsonfeed": "application/feed+json"}  # fmt: skip
HOSTILE = ("entity-bomb", "billion-laughs", "gzip-bomb", "redirect-loop", "drip", "garbage")
LATE = "entity-bomb-late"  # --late-doctype: the entity bomb behind a 5 KB comment
TARGET_MB = 600.0  # the issue: peak memory of the process tree under 600 MB
DEFAULT_TOTAL_TIMEOUT = 60.0  # [http] total_timeout's default (docs/configuration.md)
GRACE = 2.0  # seconds past the deadline a failure may take to be recorded and logged
SAMPLE = 0.1  # seconds between memory samples
Result = dict[str, Any]


def corpus_root() -> Path:
    configured = os.environ.get(CORPUS_ENV)
    path = Path(configured) if configured else BESIDE
    if not path.is_dir():
        raise SystemExit(f"no corpus at {path}: set {CORPUS_ENV} to the shared corpus")
    return path


@dataclass(frozen=True)
class RealFeed:
    path: str  # inside corpus/feeds
    content_type: str


def real_feeds(corpus: Path) -> list[RealFeed]:
    """The corpus's real-world feed documents, by its manifest (path, kind)."""
    manifest = corpus / "feeds" / "manifest.tsv"
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    out = []
    for row in rows:
        kind = row["notes"].split(";")[0].strip()
        if row["local_path"].startswith(REAL_FOLDERS) and kind in FEED_KINDS:
            out.append(RealFeed(row["local_path"], FEED_KINDS[kind]))
    return out


# --- the hostile bodies --------------------------------------------------------


def entity_bomb(n: int = 50_000) -> bytes:
    """Quadratic blow-up: one n-byte entity used n times (n*n bytes expanded)."""
    return (
        '<?xml version="1.0"?>\n'
        f'<!DOCTYPE rss [\n<!ENTITY a "{"a" * n}">\n]>\n'
        '<rss version="2.0"><channel><title>entity bomb</title><item><title>bomb</title>'
        f"<guid>entity-bomb-1</guid><description>{'&a;' * n}</description></item>"
        "</channel></rss>\n"
    ).encode()


def late_entity_bomb(n: int = 10_000, comment: int = 5_000) -> bytes:
    """The entity bomb with its DOCTYPE after a long comment: a prolog may be
    any length, so a look for the DOCTYPE in the first 4 KB misses it, and
    feedparser re-declares an entity without '&' in its value as safe
    (n*n bytes, 100 MB here, expanded by its loose parser)."""
    bomb = entity_bomb(n)
    prolog, rest = bomb.split(b"\n", 1)
    return prolog + b"\n<!--" + b" " * comment + b"-->\n" + rest


def billion_laughs(levels: int = 10) -> bytes:
    """Nested entities: each of ten levels holds ten references to the one below."""
    decls = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, levels)
    ]
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE rss [\n' + "\n".join(decls) + "\n]>\n"
        '<rss version="2.0"><channel><title>billion laughs</title><item><title>lol</title>'
        f"<guid>billion-laughs-1</guid><description>&lol{levels - 1};</description></item>"
        "</channel></rss>\n"
    ).encode()


def gzip_bomb(mib: int = 2048) -> bytes:
    """`mib` MiB of zeros (2 GiB), gzipped twice. The inner stream is one
    compressed MiB repeated (a full flush makes each copy independent), so
    making it costs a second, not the minute of compressing GiBs."""
    zeros = b"\0" * (1 << 20)
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = raw.compress(zeros) + raw.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block
    size = (mib << 20) & 0xFFFFFFFF  # gzip keeps the size modulo 2**32
    inner = (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        + segment * mib
        + end
        + crc.to_bytes(4, "little")
        + size.to_bytes(4, "little")
    )
    return gzip.compress(inner, 9, mtime=0)


def drip_body(seconds: int) -> bytes:
    """A valid feed of one item, padded with whitespace to `seconds` bytes (or
    cut to them, when a quick look drips less than the document)."""
    doc = (
        b'<?xml version="1.0"?>\n<rss version="2.0"><channel><title>drip</title>'
        b"<item><title>dripped</title><guid>drip-1</guid></item></channel></rss>\n"
    )
    return doc.ljust(seconds)[:seconds]


def garbage(size: int = 256 * 1024) -> bytes:
    return random.Random("tidings-hostile").randbytes(size)


# --- the server (runs in its own process) --------------------------------------


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class _Server:
    """What the server serves, and its log: (source, path, start, end, bytes,
    completed) per request, times as time.time() so the parent can set them
    beside the CLI's log lines."""

    real: dict[str, tuple[bytes, str]]  # path -> (body, content type)
    bodies: dict[str, bytes]
    drip_seconds: int
    log: list[dict[str, Any]] = field(default_factory=list)

    async def handle(
        self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:  # keep-alive: one request after another until the client leaves
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                parts = head.split(b"\r\n", 1)[0].split()
                path = parts[1].decode("latin-1") if len(parts) == 3 else ""
                if path == "/_log":
                    body = json.dumps({"cpu": time.process_time(), "log": self.log}).encode()
                    writer.write(_head("200 OK", {"Content-Length": str(len(body))}) + body)
                    await writer.drain()
                    continue
                entry = {"source": name, "path": path, "start": time.time(), "bytes": 0}
                self.log.append(entry)
                try:
                    await self._respond(name, path, writer, entry)
                    entry["completed"] = True
                finally:
                    entry["end"] = time.time()
        except (ConnectionError, OSError):
            return  # the client gave up (a deadline, a cap): the log says when
        finally:
            writer.close()

    async def _respond(
        self, name: str, path: str, writer: asyncio.StreamWriter, entry: dict[str, Any]
    ) -> None:
        if name == "real":
            found = self.real.get(path.removeprefix("/real/"))
            body, ctype = found or (b"not found", "text/plain")
            status = "200 OK" if found else "404 Not Found"
            await self._send(writer, status, {"Content-Type": ctype}, body, entry)
        elif name == "redirect-loop":
            target = "/b" if path == "/a" else "/a"
            await self._send(writer, "302 Found", {"Location": target}, b"", entry)
        elif name == "drip":
            await self._drip(writer, entry)
        else:
            headers = {"Content-Type": "application/rss+xml"}
            if name == "gzip-bomb":
                headers["Content-Encoding"] = "gzip, gzip"
            await self._send(writer, "200 OK", headers, self.bodies[name], entry)

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter,
        status: str,
        headers: dict[str, str],
        body: bytes,
        entry: dict[str, Any],
    ) -> None:
        writer.write(_head(status, {**headers, "Content-Length": str(len(body))}) + body)
        entry["bytes"] = len(body)  # handed to the socket, at least
        await writer.drain()

    async def _drip(self, writer: asyncio.StreamWriter, entry: dict[str, Any]) -> None:
        body = self.bodies["drip"]
        headers = {"Content-Type": "application/rss+xml", "Content-Length": str(len(body))}
        writer.write(_head("200 OK", headers))
        for i in range(len(body)):  # bounded: one byte a second, then done
            writer.write(body[i : i + 1])
            await writer.drain()
            if writer.transport.is_closing():
                return  # the client hung up
            entry["bytes"] = i + 1
            await asyncio.sleep(1.0)  # the pace of the drip, not synchronisation


def _serve(corpus: Path, drip_seconds: int) -> None:
    feeds = {f.path: ((corpus / "feeds" / f.path).read_bytes(), f.content_type)
             for f in real_feeds(corpus)}  # fmt: skip
    bodies: dict[str, bytes] = {
        "entity-bomb": entity_bomb(),
        LATE: late_entity_bomb(),
        "billion-laughs": billion_laughs(),
        "gzip-bomb": gzip_bomb(),
        "drip": drip_body(drip_seconds),
        "garbage": garbage(),
    }
    server = _Server(feeds, bodies, drip_seconds)

    async def run() -> None:
        ports = {}
        listeners = []
        for name in ("real", *HOSTILE, LATE):

            async def on_connect(
                r: asyncio.StreamReader, w: asyncio.StreamWriter, name: str = name
            ) -> None:
                await server.handle(name, r, w)

            listener = await asyncio.start_server(on_connect, "127.0.0.1", 0, backlog=256)
            listeners.append(listener)
            ports[name] = listener.sockets[0].getsockname()[1]
        print(json.dumps(ports), flush=True)  # the parent waits for this line
        await asyncio.gather(*(s.serve_forever() for s in listeners))

    asyncio.run(run())


@contextlib.contextmanager
def serve_hostile(corpus: Path, drip_seconds: int, timeout: float = 60) -> Iterator[dict[str, int]]:
    """The server in a child process; yields its ports by source name."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, sys.path)])}
    cmd = [sys.executable, "-m", "bench.hostile", "--serve", "--corpus", str(corpus),
           "--drip-seconds", str(drip_seconds)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        if not line.startswith(b"{"):
            raise RuntimeError(f"the hostile server did not start within {timeout}s")
        yield json.loads(line)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def server_log(port: int) -> dict[str, Any]:
    """The server's request log ("log") and its CPU seconds so far ("cpu")."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_log", timeout=10) as resp:
        found: dict[str, Any] = json.load(resp)
        return found


# --- the CLI, as a user runs it ------------------------------------------------


def _toml(value: Any) -> str:
    return json.dumps(value)  # a JSON string or number is a valid TOML one here


def write_config(
    path: Path,
    ports: dict[str, int],
    feeds: Sequence[RealFeed],
    hostile: Sequence[str],
    total_timeout: float | None,
) -> None:
    lines = ["[store]", f"url = {_toml(f'sqlite:///{path.parent}/tidings.db')}"]
    if total_timeout is not None:
        lines += ["", "[http]", f"total_timeout = {total_timeout:g}"]
    for i, feed in enumerate(feeds):
        url = f"http://127.0.0.1:{ports['real']}/real/{feed.path}"
        lines += ["", "[[sources]]", f'id = "real-{i:03d}"', 'kind = "feed"',
                  f"title = {_toml(feed.path)}", f"url = {_toml(url)}"]  # fmt: skip
    for name in hostile:
        start = "/a" if name == "redirect-loop" else f"/{name}.xml"
        lines += ["", "[[sources]]", f'id = "hostile-{name}"', 'kind = "feed"',
                  f'url = "http://127.0.0.1:{ports[name]}{start}"']  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def tidings_command() -> list[str]:
    """The installed `tidings` script beside this interpreter, as a user runs it."""
    script = Path(sys.executable).parent / "tidings"
    return [str(script)] if script.exists() else [sys.executable, "-m", "aggregator.cli"]


def _children() -> tuple[dict[int, list[int]], dict[int, int]]:
    """Every process's children, and its CPU ticks (utime + stime)."""
    out: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    raw = f.read()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2 :].split()
            out.setdefault(int(fields[1]), []).append(int(entry))
            ticks[int(entry)] = int(fields[11]) + int(fields[12])
    return out, ticks


def _status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS in KB (empty once the process is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    out[line[:5]] = int(line.split()[1])
    except OSError:
        pass
    return out


@dataclass
class TreeWatch:
    """Peaks of a process tree, from /proc samples: each process's VmHWM (its
    own peak, kept by the kernel), the largest sum of VmRSS at one sample, and
    each process's CPU (the last sample's: a process's final 0.1 s may be lost)."""

    root: int
    peaks: dict[int, int] = field(default_factory=dict)  # pid -> VmHWM, KB
    names: dict[int, str] = field(default_factory=dict)
    cpu_ticks: dict[int, int] = field(default_factory=dict)
    together_kb: int = 0

    def sample(self) -> None:
        children, ticks = _children()
        todo, rss = [(self.root, 0)], 0
        while todo:
            pid, depth = todo.pop()
            todo.extend((child, depth + 1) for child in children.get(pid, ()))
            status = _status(pid)
            if not status:
                continue
            self.peaks[pid] = max(self.peaks.get(pid, 0), status.get("VmHWM", 0))
            self.cpu_ticks[pid] = max(self.cpu_ticks.get(pid, 0), ticks.get(pid, 0))
            rss += status.get("VmRSS", 0)
            # The forkserver (and the resource tracker) are the CLI's children;
            # the parser workers are forked from the forkserver.
            self.names.setdefault(pid, ("main", "helpers", "worker")[min(depth, 2)])
        self.together_kb = max(self.together_kb, rss)

    def report(self) -> Result:
        by_name: dict[str, list[float]] = {}
        for pid, kb in self.peaks.items():
            by_name.setdefault(self.names.get(pid, "?"), []).append(kb / 1024)
        return {
            "main_mb": self.peaks.get(self.root, 0) / 1024,
            "by_process_mb": {k: sorted(v, reverse=True) for k, v in by_name.items()},
            "sum_of_peaks_mb": sum(self.peaks.values()) / 1024,
            "together_mb": self.together_kb / 1024,
        }

    def cpu_seconds(self) -> float:
        return sum(self.cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")


_LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: source ([A-Za-z0-9._-]+): (.*)$"
)


def failures_logged(stderr: str) -> dict[str, float]:
    """When the CLI logged each failed source (its log's asctime, local time)."""
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        if m := _LOG_LINE.match(line):
            when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.setdefault(m.group(2), when)
    return out


def run_cli(config: Path, timeout: float) -> Result:
    """`tidings poll --config FILE`: its wall time, output, logged failures and
    peak memory."""
    cmd = [*tidings_command(), "poll", "--config", str(config)]
    started_at, started = time.time(), time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        watch = TreeWatch(proc.pid)
        deadline = started + timeout
        while proc.poll() is None:  # bounded by the deadline below
            watch.sample()
            if time.perf_counter() > deadline:
                proc.kill()
                proc.wait()
                raise SystemExit(f"`{' '.join(cmd)}` did not finish within {timeout:g}s")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(SAMPLE)  # returns at once when the process ends
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{stderr[-2000:]}")
    return {
        "seconds": seconds,
        "started_at": started_at,
        "stdout": stdout,
        "failed_at": failures_logged(stderr),
        "memory": watch.report(),
        "cpu": watch.cpu_seconds(),
    }


def read_store(db: Path) -> dict[str, Result]:
    """Per source: events stored, failures in a row and the recorded error."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        counts = dict(conn.execute("SELECT source_id, count(*) FROM events GROUP BY source_id"))
        rows = conn.execute(
            "SELECT id, title, consecutive_failures, last_error FROM sources"
        ).fetchall()
    return {
        sid: {"events": counts.get(sid, 0), "title": title, "failures": failures, "error": error}
        for sid, title, failures, error in rows
    }


def sources_table(config: Path, ids: Sequence[str]) -> list[str]:
    """The rows of `tidings sources` for these sources, as an admin sees them."""
    cmd = [*tidings_command(), "sources", "--config", str(config)]
    lines = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout.splitlines()
    return lines[:1] + [line for line in lines[1:] if line.split(" ", 1)[0] in ids]


# --- one round, and the whole bench ---------------------------------------------


def one_round(
    workdir: Path,
    ports: dict[str, int],
    feeds: Sequence[RealFeed],
    hostile: Sequence[str],
    args: argparse.Namespace,
) -> Result:
    workdir.mkdir()
    config = workdir / "config.toml"
    write_config(config, ports, feeds, hostile, args.total_timeout)
    server0, busy0 = server_log(ports["real"])["cpu"], _machine_busy()
    cli = run_cli(config, args.timeout)
    busy = _machine_busy() - busy0
    served = server_log(ports["real"])
    # Whatever else ran meanwhile (others' work on a shared machine) skews the times.
    other = max(0.0, busy - cli["cpu"] - (served["cpu"] - server0))
    store = read_store(workdir / "tidings.db")
    log = [e for e in served["log"] if e["start"] >= cli["started_at"]]
    per_source: dict[str, Result] = {}
    for name in hostile:
        sid = f"hostile-{name}"
        mine = [e for e in log if e["source"] == name]
        first = min((e["start"] for e in mine), default=None)
        last = max((e.get("end", e["start"]) for e in mine), default=None)
        failed_at = cli["failed_at"].get(sid)
        end = failed_at if failed_at is not None else last
        per_source[name] = {
            "requests": len(mine),
            "bytes_sent": sum(e["bytes"] for e in mine),
            "seconds": (end - first) if first is not None and end is not None else None,
            "timed_by": "CLI log" if failed_at is not None else "server (last byte)",
            **store.get(sid, {}),
        }
    return {
        "seconds": cli["seconds"],
        "cpu": cli["cpu"],
        "other_cpu": other,
        "memory": cli["memory"],
        "real": {sid: v for sid, v in store.items() if sid.startswith("real-")},
        "hostile": per_source,
        "sources_table": sources_table(config, [f"hostile-{n}" for n in hostile]),
    }


def solo(
    workdir: Path,
    ports: dict[str, int],
    feeds: Sequence[RealFeed],
    hostile: Sequence[str],
    args: argparse.Namespace,
) -> Result:
    """One source in a `tidings poll` of its own, in a fresh store."""
    workdir.mkdir()
    config = workdir / "config.toml"
    write_config(config, ports, feeds, hostile, args.total_timeout)
    cli = run_cli(config, args.timeout)
    return {"seconds": cli["seconds"], "memory": cli["memory"]}


def _mb(value: float) -> str:
    return f"{value:,.0f} MB"


def print_report(
    base: Result, hostile: Result, solos: dict[str, Result], args: argparse.Namespace
) -> bool:
    deadline = args.total_timeout or DEFAULT_TOTAL_TIMEOUT
    peak = _mb(base["memory"]["sum_of_peaks_mb"])
    print(f"\nBaseline round (real feeds only): {base['seconds']:.1f} s wall, "
          f"{base['cpu']:.1f} CPU s of the CLI's tree, other processes "
          f"{base['other_cpu']:.1f} CPU s; peak memory {peak} (sum of VmHWM over "
          "the tree)")  # fmt: skip
    print(f"Hostile round (real feeds + {len(hostile['hostile'])} hostile): "
          f"{hostile['seconds']:.1f} s wall, {hostile['cpu']:.1f} CPU s, other processes "
          f"{hostile['other_cpu']:.1f} CPU s; [http] total_timeout {deadline:g} s")  # fmt: skip
    print()
    width = max(len(n) for n in hostile["hostile"])
    print(f"{'source':{width}}  {'requests':>8}  {'bytes sent':>10}  {'seconds':>8}  "
          f"{'solo s':>7}  {'events':>6}  recorded error (timed by)")  # fmt: skip
    slowest = 0.0
    for name, h in hostile["hostile"].items():
        secs = h["seconds"]
        slowest = max(slowest, secs or 0.0)
        solo_s = solos.get(name, {}).get("seconds")
        print(
            f"{name:{width}}  {h['requests']:>8}  {h['bytes_sent']:>10,}  "
            f"{secs if secs is not None else float('nan'):>8.1f}  "
            f"{solo_s if solo_s is not None else float('nan'):>7.1f}  {h.get('events', 0):>6}  "
            f"{(h.get('error') or '(none)')[:120]} ({h['timed_by']})"
        )
    if solos:
        cli = solos["_cli"]["seconds"]
        print(f"(solo s: a `tidings poll` of that source alone, wall time including the CLI's "
              f"start-up: {cli:.1f} s for the smallest real feed)")  # fmt: skip
    print("\n`tidings sources` for them:")
    for line in hostile["sources_table"]:
        print("  " + line)

    mem = hostile["memory"]
    print("\nPeak memory of the hostile round, VmHWM per process (MB): " + "; ".join(
        f"{k} {', '.join(f'{v:.0f}' for v in vs)}" for k, vs in mem["by_process_mb"].items()
    ))  # fmt: skip
    print(f"  sum of the peaks {_mb(mem['sum_of_peaks_mb'])}; largest sum of RSS at one "
          f"sample {_mb(mem['together_mb'])}")  # fmt: skip

    base_real, now_real = base["real"], hostile["real"]
    same_events = {k: v["events"] for k, v in base_real.items()} == {
        k: v["events"] for k, v in now_real.items()
    }
    same_errors = {k: v["error"] is None for k, v in base_real.items()} == {
        k: v["error"] is None for k, v in now_real.items()
    }
    events = sum(v["events"] for v in now_real.values())
    failing = sorted(k for k, v in now_real.items() if v["error"])
    print(f"\nReal feeds: {len(now_real)} sources, {events:,} events stored (baseline "
          f"{sum(v['events'] for v in base_real.values()):,}); failing: "
          f"{len(failing)} in the hostile round, "
          f"{sum(1 for v in base_real.values() if v['error'])} in the baseline")  # fmt: skip
    for sid in failing:
        print(f"  {sid} ({now_real[sid].get('title', '')}): {(now_real[sid]['error'] or '')[:110]}")
    checks = [
        (f"slowest hostile source within the {deadline:g} s deadline (+{GRACE:g} s)",
         slowest <= deadline + GRACE, f"{slowest:.1f} s"),
        ("real feeds unaffected (same events and failures per feed as the baseline)",
         same_events and same_errors, "yes" if same_events and same_errors else "NO"),
        (f"peak memory under {TARGET_MB:g} MB (sum of VmHWM over the tree)",
         mem["sum_of_peaks_mb"] < TARGET_MB, _mb(mem["sum_of_peaks_mb"])),
    ]  # fmt: skip
    print()
    for text, ok, figure in checks:
        print(f"Target: {text}: {figure} -> {'met' if ok else 'MISSED'}")
    return all(ok for _, ok, _ in checks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drip-seconds", type=int, default=600,
                        help="how long the drip source drips, one byte a second (600)")  # fmt: skip
    parser.add_argument("--total-timeout", type=float,
                        help="write [http] total_timeout into the config (default: not set, "
                             f"so Tidings' own default, {DEFAULT_TOTAL_TIMEOUT:g} s)")  # fmt: skip
    parser.add_argument("--no-solo", dest="solo", action="store_false",
                        help="skip polling each hostile source (but the drip) alone")  # fmt: skip
    parser.add_argument("--late-doctype", action="store_true",
                        help=f"add {LATE}: the entity bomb behind a 5 KB comment")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=900, help="seconds per CLI run")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:  # the child: serve until terminated
        _serve(args.corpus, args.drip_seconds)
        return 0

    corpus = corpus_root()
    feeds = real_feeds(corpus)
    print(environment(", ".join(f"{n} {package_version(n)}" for n in ("feedparser", "httpx2"))))
    deadline = args.total_timeout or f"default ({DEFAULT_TOTAL_TIMEOUT:g} s)"
    print(f"corpus {corpus}: {len(feeds)} real-world feeds; drip {args.drip_seconds} s; "
          f"total_timeout {deadline}")  # fmt: skip
    started = time.perf_counter()
    with serve_hostile(corpus, args.drip_seconds) as ports, \
            tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:  # fmt: skip
        print("baseline round ...", flush=True)
        base = one_round(Path(tmp, "base"), ports, feeds, [], args)
        print(f"  {base['seconds']:.1f} s; hostile round ...", flush=True)
        names = (*HOSTILE, LATE) if args.late_doctype else HOSTILE
        hostile = one_round(Path(tmp, "hostile"), ports, feeds, names, args)
        print(f"  {hostile['seconds']:.1f} s", flush=True)
        solos: dict[str, Result] = {}
        if args.solo:
            # The CLI's own cost (start-up, the parser pool, the store): the smallest real feed.
            small = min(feeds, key=lambda f: (corpus / "feeds" / f.path).stat().st_size)
            solos["_cli"] = solo(Path(tmp, "solo-cli"), ports, [small], [], args)
            for name in names:
                if name != "drip":  # its cost is its deadline, seen in the round
                    print(f"solo: {name} ...", flush=True)
                    solos[name] = solo(Path(tmp, f"solo-{name}"), ports, [], [name], args)
    print_report(base, hostile, solos, args)
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"baseline": base, "hostile": hostile, "solo": solos},
                                        indent=2, default=str))  # fmt: skip
    return 0  # like the other benches: the verdicts are printed, `make bench` goes on


if __name__ == "__main__":
    sys.exit(main())
