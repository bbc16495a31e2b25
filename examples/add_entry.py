"""Append an entry to the demo feed so it shows up live in the dashboard.

    .venv/bin/python examples/add_entry.py "Your title" ["Optional text"]

`make run` copies examples/feeds/demo.xml to var/demo.xml; the example config
polls that file every 5 seconds.
"""

import html
import shutil
import sys
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
FEED = HERE.parent / "var" / "demo.xml"


def main() -> None:
    title = sys.argv[1] if len(sys.argv) > 1 else "Something happened"
    text = sys.argv[2] if len(sys.argv) > 2 else "Added with examples/add_entry.py."
    if not FEED.exists():
        FEED.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(HERE / "feeds" / "demo.xml", FEED)
    item = (
        f"    <item><title>{html.escape(title)}</title>"
        f"<guid isPermaLink=\"false\">demo-{uuid.uuid4()}</guid>"
        f"<pubDate>{format_datetime(datetime.now(UTC), usegmt=True)}</pubDate>"
        f"<description>{html.escape('<p>' + html.escape(text) + '</p>')}</description></item>\n"
    )
    body = FEED.read_text(encoding="utf-8")
    FEED.write_text(body.replace("  </channel>", item + "  </channel>", 1), encoding="utf-8")
    print(f"added {title!r} to {FEED}")


if __name__ == "__main__":
    main()
