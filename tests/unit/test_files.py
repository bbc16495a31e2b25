"""Local files: only config-file sources, only under allowed directories."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aggregator.connector import HttpSettings, PollContext, Resources
from aggregator.exceptions import FetchError
from connectors.files import local_path, read_local


def ctx(base: Path, allowed: tuple[Path, ...], cap: int = 1000) -> PollContext:
    async def run_cpu(fn: Any, *args: Any) -> Any:
        return fn(*args)

    return PollContext(
        source_id="s", now=datetime.now(UTC), resources=Resources(), run_cpu=run_cpu,
        http=HttpSettings(max_body_bytes=cap), local_dirs=allowed, base_dir=base,
    )  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "a.xml").write_bytes(b"<rss/>")
    (tmp_path / "secret.txt").write_bytes(b"password")
    (tmp_path / "feeds" / "link.xml").symlink_to(tmp_path / "secret.txt")
    return tmp_path


def test_paths_and_file_urls() -> None:
    assert local_path("file:///srv/a%20b.xml") == Path("/srv/a b.xml")
    assert local_path("feeds/a.xml") == Path("feeds/a.xml")
    assert local_path("https://e.org/feed") is None


async def test_reads_allowed_files_and_reports_unchanged_ones(tree: Path) -> None:
    c = ctx(tree, ((tree / "feeds").resolve(),))
    version, body = await read_local(Path("feeds/a.xml"), None, c)
    assert body == b"<rss/>"
    assert await read_local(Path("feeds/a.xml"), version, c) == (version, None)


@pytest.mark.parametrize("path", ["secret.txt", "feeds/../secret.txt", "feeds/link.xml"])
async def test_nothing_outside_the_allowed_directories(tree: Path, path: str) -> None:
    with pytest.raises(FetchError, match="not under an allowed directory"):
        await read_local(Path(path), None, ctx(tree, ((tree / "feeds").resolve(),)))


async def test_sources_without_allowed_directories_read_nothing(tree: Path) -> None:
    with pytest.raises(FetchError, match="may not read local files"):
        await read_local(Path("feeds/a.xml"), None, ctx(tree, ()))


async def test_the_size_cap_holds(tree: Path) -> None:
    (tree / "feeds" / "big.xml").write_bytes(b"x" * 2000)
    with pytest.raises(FetchError, match="larger than 1000 bytes"):
        await read_local(Path("feeds/big.xml"), None, ctx(tree, ((tree / "feeds").resolve(),)))
