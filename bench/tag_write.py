"""What the tags' index (`event_tags`, migration 0010) costs a write.

    python -m bench.tag_write

bench.history's first 20,000 generated events (0-3 tags each) go into a
fresh migrated SQLite store, 10,000 per transaction as the history bench
loads them (FTS5 triggers firing), three times with the index's trigger and
three times with it dropped, alternating; the figure is the median CPU time
of each and their difference per event.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench.history import INSERT_EVENTS, add_sources, generate_rows

EVENTS = 20_000
BATCH = 10_000


def insert_all(rows: list[tuple[object, ...]], *, with_index: bool) -> tuple[float, int]:
    """CPU seconds to insert `rows` into a fresh store, and the tag rows made."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "store.db"
        add_sources(f"sqlite:///{path}")
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            if not with_index:
                conn.execute("DROP TRIGGER event_tags_insert")
            start = time.process_time()
            for at in range(0, len(rows), BATCH):
                with conn:
                    conn.executemany(INSERT_EVENTS, rows[at : at + BATCH])
            spent = time.process_time() - start
            return spent, conn.execute("SELECT count(*) FROM event_tags").fetchone()[0]
        finally:
            conn.close()


def main() -> None:
    rows = [row for batch in generate_rows(EVENTS, batch=BATCH) for row in batch]
    spent: dict[bool, list[float]] = {True: [], False: []}
    for run in range(6):
        with_index = run % 2 == 0
        seconds, tag_rows = insert_all(rows, with_index=with_index)
        spent[with_index].append(seconds)
        print(
            f"with the index: {with_index}: {seconds:.2f} CPU s"
            + (f", {tag_rows / EVENTS:.2f} tags an event" if with_index else "")
        )
    on, off = statistics.median(spent[True]), statistics.median(spent[False])
    cost = on - off
    print(
        f"{EVENTS:,} events, median CPU s: {on:.2f} with the index, {off:.2f} without; "
        f"it costs {cost / EVENTS * 1e6:.1f} us per event ({cost / off:.0%} of the insert)"
    )


if __name__ == "__main__":
    main()
