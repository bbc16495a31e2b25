"""A third-party connector, end to end: examples/tidings-example-connector is
installed with pip into a temporary directory and found through its
`tidings.connectors` entry point by a `tidings` run in a subprocess (so this
process's entry-point cache and its TIDINGS_DISABLE_PLUGINS=1 play no part)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.store import Store
from tests.stores import store_url
from tests.support import FeedServer, write_config

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tidings-example-connector"
INCIDENTS = "/api/v2/incidents.json"


def _require_build_tools() -> None:
    """pip and a setuptools that builds wheels by itself (70.1 and later;
    before that it needs the `wheel` package), in this interpreter."""
    missing = [name for name in ("pip", "setuptools") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not importable in {sys.executable}: "
                    "the plugin test installs the example package with pip")  # fmt: skip
    version = importlib.metadata.version("setuptools")
    major, minor = (int(p) for p in version.split(".")[:2])
    if (major, minor) < (70, 1) and importlib.util.find_spec("wheel") is None:
        pytest.fail(f"setuptools {version} in {sys.executable} cannot build wheels without "
                    "the wheel package: install setuptools>=70.1 (or wheel) there")  # fmt: skip


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed example plugin and its dist-info."""
    _require_build_tools()
    work = tmp_path_factory.mktemp("plugin")
    source = work / "source"  # a copy: building in place would leave build/ in the repo
    shutil.copytree(
        EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    site = work / "site"
    # No index and no config files: nothing is downloaded, nothing else is read.
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--no-cache-dir", "--disable-pip-version-check", "--target", str(site),
         str(source)],
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"pip could not install {EXAMPLE.name}:\n{proc.stdout}{proc.stderr}")
    (dist_info,) = site.glob("tidings_example_connector-0.1.0.dist-info")
    entry_points = (dist_info / "entry_points.txt").read_text()
    assert "statuspage = tidings_example.connector:StatusPageConnector" in entry_points
    return site


def tidings(
    *args: str, site: Path | None, cwd: Path, plugins: bool = True
) -> subprocess.CompletedProcess[str]:
    """`tidings ARGS` in a new interpreter, with `site` first on its path."""
    env = {k: v for k, v in os.environ.items() if k != "TIDINGS_DISABLE_PLUGINS"}
    if not plugins:
        env["TIDINGS_DISABLE_PLUGINS"] = "1"
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "aggregator.cli", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def statuspage_source(sid: str, url: str, extra: str = "") -> str:
    return f'\n[[sources]]\nid = "{sid}"\nkind = "statuspage"\nurl = "{url}"\n{extra}'


def incidents(*items: dict[str, object]) -> str:
    return json.dumps({"page": {"id": "p1", "name": "Example"}, "incidents": list(items)})


def incident(ident: str, name: str, status: str, body: str) -> dict[str, object]:
    return {
        "id": ident,
        "name": name,
        "status": status,
        "created_at": "2026-11-02T09:30:00.000+01:00",
        "updated_at": "2026-11-02T10:05:00.000+01:00",
        "shortlink": f"https://stspg.example/{ident}",
        "incident_updates": [{"body": body}, {"body": "an older update"}],
    }


def test_check_config_accepts_the_kind_and_names_a_bad_key(
    plugin_site: Path, tmp_path: Path
) -> None:
    url = "http://127.0.0.1:9/api/v2/incidents.json"
    good = write_config(tmp_path, statuspage_source("status", url, "resolved = false\n"))
    run = tidings("check-config", str(good), site=plugin_site, cwd=tmp_path)
    assert (run.returncode, run.stdout.strip()) == (0, f"{good}: ok (1 sources)"), run.stderr

    bad = write_config(tmp_path, statuspage_source("status", url, 'colour = "red"\n'))
    run = tidings("check-config", str(bad), site=plugin_site, cwd=tmp_path)
    assert run.returncode == 2
    assert "sources[0].colour: unknown key" in run.stderr, run.stderr

    bad = write_config(tmp_path, statuspage_source("status", "ftp://127.0.0.1/x.json"))
    run = tidings("check-config", str(bad), site=plugin_site, cwd=tmp_path)
    assert run.returncode == 2
    assert "sources[0].url: must be an http(s) URL" in run.stderr, run.stderr


def test_poll_stores_incidents_and_revisits_with_the_etag(
    plugin_site: Path, feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.put(
        INCIDENTS,
        incidents(
            incident("inc1", "Mail delayed", "investigating", "We are looking into it."),
            incident("inc2", "VPN down", "resolved", "Fixed."),
            {"name": "no id: left out"},
        ),
        content_type="application/json",
        etag='"v1"',
    )
    feed_server.put("/broken.json", b"<html>not json</html>", content_type="text/html")
    config = write_config(
        tmp_path,
        statuspage_source("status", feed_server.url(INCIDENTS))
        + statuspage_source("broken", feed_server.url("/broken.json")),
    )
    run = tidings("poll", "--config", str(config), site=plugin_site, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "status: 2 new" in run.stdout, run.stdout
    assert "broken: error: not JSON" in run.stdout, run.stdout

    store = Store(store_url(tmp_path, "tidings"))
    try:
        stored = {e.external_id: e for e in store.latest_events(viewer=None)}
        assert set(stored) == {"inc1", "inc2"}
        mail = stored["inc1"]
        assert (mail.kind, mail.source_id, mail.title) == ("statuspage", "status", "Mail delayed")
        assert mail.summary == "investigating: We are looking into it."
        assert mail.url == "https://stspg.example/inc1"
        assert mail.tags == ("investigating",)
        assert mail.published.isoformat() == "2026-11-02T08:30:00+00:00"
        statuses = {s.id: s for s in store.source_statuses(viewer=None)}
        assert statuses["status"].last_warning is not None
        assert "left out 1 incident(s) without an id or a name" in statuses["status"].last_warning
        assert "not JSON" in (statuses["broken"].last_error or "")
        assert store.source_state("status")[0] == {"etag": '"v1"', "last_modified": None}
    finally:
        store.close()

    run = tidings("poll", "--config", str(config), "status", site=plugin_site, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "status: 0 new (not modified)" in run.stdout, run.stdout
    assert feed_server.requests[-1][1].get("If-None-Match") == '"v1"'


def test_the_kind_comes_from_the_installed_dist_info_and_obeys_disable_plugins(
    plugin_site: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, statuspage_source("status", "http://127.0.0.1:9/i.json"))
    for site, plugins in ((plugin_site, False), (None, True)):
        run = tidings("check-config", str(config), site=site, cwd=tmp_path, plugins=plugins)
        assert run.returncode == 2
        assert "sources[0].kind: unknown source kind 'statuspage' (known: " in run.stderr
        known = run.stderr.split("(known: ", 1)[1].split(")", 1)[0].split(", ")
        assert "feed" in known and "statuspage" not in known, run.stderr
