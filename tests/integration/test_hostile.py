"""One `tidings poll` round over good feeds and six hostile sources, through
the real CLI against a loopback server: it ends within the total per-fetch
deadline, the good feeds are stored as if the others were not there, every
hostile source gets its own recorded error, and memory stays bounded.

bench/hostile.py runs the same kind of round at full size (real-world feeds,
the default 60 s deadline, a ten-minute drip) and records the figures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from tests.support import FeedServer, feed_source, rss, write_config

pytestmark = pytest.mark.integration

TOTAL = 3.0  # [http] total_timeout for this round

# Runs a command and prints the peak RSS of its process tree (the largest
# process in it), from wait4. Forked from this small process, not from pytest:
# a child keeps the RSS high-water mark of the process it was forked from.
MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stderr=subprocess.STDOUT)
_, status, usage = os.wait4(proc.pid, 0)
print(f"peak-rss-kb:{usage.ru_maxrss}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def gzip_zeros(megabytes: int) -> bytes:
    """A gzip body of that many megabytes of zeros, made without holding them."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    return b"".join(packer.compress(chunk) for _ in range(megabytes)) + packer.flush()


def hostile(server: FeedServer) -> dict[str, str]:
    """Six hostile sources on `server`; their ids and what each is."""
    lol = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10 if i else "lol"}">' for i in range(10))
    server.put(
        "/laughs.xml",
        f'<?xml version="1.0"?><!DOCTYPE rss [{lol}]><rss version="2.0"><channel>'
        "<title>t</title><item><guid>1</guid><title>&l9;</title></item></channel></rss>",
    )
    big = "a" * 100_000
    server.put(
        "/quadratic.xml",
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "{big}">]><rss version="2.0">'
        f"<channel><title>t</title><item><guid>1</guid><title>{'&a;' * 20_000}</title>"
        "</item></channel></rss>",
    )
    # 1 GB of zeros in about a megabyte: refused once 16 MB (the default cap) are decoded.
    server.put("/bomb.xml", gzip_zeros(1000), headers={"Content-Encoding": "gzip"})
    server.put("/loop.xml", b"", status=301, headers={"Location": server.url("/loop.xml")})
    server.put("/drip.xml", rss([{"guid": "d", "title": "never ends"}]), drip=1.0)
    server.put("/garbage.xml", os.urandom(2_000_000))
    return {
        "laughs": "/laughs.xml",
        "quadratic": "/quadratic.xml",
        "bomb": "/bomb.xml",
        "loop": "/loop.xml",
        "drip": "/drip.xml",
        "garbage": "/garbage.xml",
    }


def test_a_hostile_round_is_bounded_and_spares_the_good_feeds(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    good = {f"good{i}": f"/good{i}.xml" for i in range(5)}
    for i, path in enumerate(good.values()):
        feed_server.put(path, rss([{"guid": f"{i}-{n}", "title": f"Item {n}"} for n in range(3)]))
    bad = hostile(feed_server)
    sources = "".join(feed_source(sid, feed_server.url(p)) for sid, p in {**good, **bad}.items())
    config = write_config(tmp_path, sources)
    # write_config's [http] table gets the deadline under test.
    text = config.read_text().replace(
        "read_timeout = 2\n", f"read_timeout = 2\ntotal_timeout = {TOTAL:g}\n"
    )
    config.write_text(text)

    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, sys.executable, "-m", "aggregator.cli", "poll",
         "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    took = time.monotonic() - started
    output = run.stdout
    assert run.returncode == 0, output + run.stderr
    lines = {line.split(":")[0]: line for line in output.splitlines() if ": " in line}
    for sid in good:
        assert lines[sid] == f"{sid}: 3 new", output
    # The slowest hostile source costs one total deadline; start-up is the rest.
    assert took < TOTAL + 12, f"the round took {took:.1f}s"
    assert "no complete response within 3s" in lines["drip"]
    assert "larger than 16777216 bytes" in lines["bomb"]
    assert "too many redirects" in lines["loop"]
    assert "not an RSS/Atom/JSON feed" in lines["garbage"]
    # Entity bombs are defused, not expanded: an item at most, with no blown-up title.
    for sid in ("laughs", "quadratic"):
        assert "error" in lines[sid] or lines[sid] in (f"{sid}: 1 new", f"{sid}: 0 new")
        assert "lollollol" not in output and "a" * 1000 not in output
    peak_mb = int(run.stderr.rsplit("peak-rss-kb:", 1)[1]) / 1024
    assert peak_mb < 600, f"peak RSS {peak_mb:.0f} MB"
