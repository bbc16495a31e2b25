"""No parser process outlives a crash of the process that started it.

`tidings serve` and `tidings poller` parse in worker processes (a forkserver
and its children). Killed by SIGKILL, the parent gets no chance to stop
them; they must notice and exit by themselves instead of living on under
init, one set more after every crash. They get 10 seconds.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support import FeedServer, TidingsProcess, feed_source, rss, write_config

pytestmark = pytest.mark.integration


def children_of(pid: int) -> list[int]:
    """The pids whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children_of(todo.pop())
        found += kids
        todo += kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; init reaps it


def parser_processes(proc: TidingsProcess, timeout: float = 30.0) -> list[int]:
    """Its descendants once a parser worker (a forkserver's child) runs."""
    assert proc.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.proc.poll() is None, proc.log.read_text()
        tree = descendants(proc.proc.pid)
        if any(children_of(child) for child in children_of(proc.proc.pid)):
            return tree
        time.sleep(0.05)
    raise AssertionError(f"no parser process started in {timeout}s:\n{proc.log.read_text()}")


@pytest.mark.parametrize("command", [("poller",), ("serve",)])
def test_parser_processes_exit_when_their_parent_is_killed(
    command: tuple[str, ...], feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.put("/f.xml", rss([{"guid": "a", "title": "a"}]))
    config = write_config(tmp_path, feed_source("f", feed_server.url("/f.xml")))
    proc = TidingsProcess(config, *command).start()
    try:
        tree = parser_processes(proc)
        proc.crash()
        killed = time.monotonic()
        while (left := [pid for pid in tree if alive(pid)]) and time.monotonic() < killed + 10:
            time.sleep(0.05)
        print(f"{command[0]}: {len(tree)} children gone {time.monotonic() - killed:.2f}s after")
        for pid in left:  # do not leave them to the next test
            os.kill(pid, signal.SIGKILL)
        assert not left, f"{len(left)} of {len(tree)} child processes outlived `{command[0]}`"
    finally:
        proc.kill()
