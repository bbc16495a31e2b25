import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from aggregator.humanize import file_name, file_size, relative_time

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_relative_time() -> None:
    assert relative_time(NOW - timedelta(hours=3, minutes=2), NOW) == "3h ago"
    assert relative_time(NOW + timedelta(seconds=55), NOW) == "in 55s"
    assert relative_time(NOW, NOW) == "0s ago"
    assert relative_time(NOW - timedelta(seconds=10), NOW, just_now=45) == "just now"
    assert relative_time(NOW - timedelta(days=2), NOW, just_now=45) == "2d ago"


def test_file_sizes_and_names_as_the_dashboard_shows_them() -> None:
    assert [file_size(n) for n in (0, 999, 1000, 2_500, 28_000_000, 3 * 10**15)] == [
        "", "999 B", "1.0 kB", "2.5 kB", "28 MB", "3000 TB",
    ]  # fmt: skip
    assert file_size(None) == file_size("12") == file_size(True) == ""
    assert file_name("https://e.org/media/ep%201.mp3?x=1") == "ep 1.mp3"
    assert file_name("https://e.org/") == "e.org"


# Spoofing marks that percent-decoding would put into a name: bidi embeddings
# and overrides, isolates, LRM/RLM, the Arabic letter mark, zero-width and BOM,
# and control characters.
INVISIBLE = [
    *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C,
    0x200B, 0xFEFF, 0x00AD, 0x0000, 0x001B, 0x000A,
]  # fmt: skip
NAMES = [
    ("https://e.org/invoice%E2%80%AEgpj.exe", "invoicegpj.exe"),
    ("https://e.org/a/%E2%81%A6report%E2%81%A9.pdf?x=1", "report.pdf"),
    ("https://e.org/%E2%80%8Fnote%E2%80%8E.txt", "note.txt"),
    ("https://e.org/%E2%80%AE/", "e.org"),  # nothing visible left: the host
    ("https://e.org/caf%C3%A9%20menu.pdf", "café menu.pdf"),
    ("https://e.org/%ZZ.bin", "%ZZ.bin"),  # not an escape: shown as it is
    ("https://e.org/raw\u202egpj.exe", "rawgpj.exe"),  # not even escaped
    ("https://e.org/media/ep%201.mp3?x=1", "ep 1.mp3"),
    ("https://e.org/", "e.org"),
]


def test_file_names_drop_invisible_format_characters() -> None:
    for code in INVISIBLE:
        url = f"https://e.org/a{quote(chr(code))}b.pdf"
        assert file_name(url) == "ab.pdf", hex(code)
    for url, name in NAMES:
        assert file_name(url) == name, url


def _js_file_name() -> str:
    """app.js's `fileName` and the regex it uses, cut out of the script."""
    script = (Path(__file__).parents[2] / "web/static/app.js").read_text()
    regex = re.search(r"^  const INVISIBLE = .*;$", script, re.MULTILINE)
    body = re.search(r"^  function fileName\(href\) \{$.*?^  \}$", script, re.MULTILINE | re.S)
    assert regex and body, "app.js no longer has INVISIBLE and fileName as expected"
    return f"{regex.group(0)}\n{body.group(0)}\n"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run app.js's fileName")
def test_the_dashboard_script_names_files_as_the_server_does() -> None:
    urls = [url for url, _ in NAMES]
    urls += [f"https://e.org/a{quote(chr(code))}b.pdf" for code in INVISIBLE]
    program = (
        _js_file_name()
        + "const urls = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        + "process.stdout.write(JSON.stringify(urls.map(fileName)));\n"
    )
    run = subprocess.run(
        ["node", "-e", program], input=json.dumps(urls), capture_output=True, text=True,
        timeout=30, check=True,
    )  # fmt: skip
    assert json.loads(run.stdout) == [file_name(url) for url in urls]
