from pathlib import Path

import pytest

from aggregator.config import load_config, parse_config, parse_source
from aggregator.durations import parse_duration
from aggregator.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[2]


def feed(**kw: object) -> dict[str, object]:
    return {"id": "blog", "kind": "feed", "url": "https://e.org/feed", **kw}


def problems(data: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("/etc/tidings.toml"))
    return str(err.value)


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "config.example.toml")
    assert {s.id for s in config.sources} >= {"firm-news", "wiki", "builds", "demo"}
    assert config.server.port == 8000
    assert config.store_url == f"sqlite:///{REPO}/var/tidings.db"


def test_durations() -> None:
    assert parse_duration("5s") == 5
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("7d") == 7 * 86400
    for bad in ("", "10", "m", "5x", "1h 2"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_unknown_top_level_key() -> None:
    assert "/etc/tidings.toml: sevrer: unknown key" in problems({"sevrer": {}})


def test_unknown_nested_key_names_the_path() -> None:
    assert "server.prot: unknown key" in problems({"server": {"prot": 1}})


def test_unknown_source_option_names_source_and_key() -> None:
    assert "sources[0].ulr: unknown key" in problems({"sources": [feed(ulr="x")]})


def test_bad_values_are_explained() -> None:
    assert "sources[0].interval" in problems({"sources": [feed(interval="soon")]})
    assert "at least 5s" in problems({"sources": [feed(interval="1s")]})
    assert "sources[0].cron" in problems({"sources": [feed(cron="every day")]})
    assert "sources[0].id" in problems({"sources": [feed(id="has space")]})
    assert "sources[0].url: Field required" in problems({"sources": [{"id": "x", "kind": "feed"}]})
    assert "unknown source kind 'telepathy'" in problems({"sources": [feed(kind="telepathy")]})
    assert "not both" in problems({"sources": [feed(interval="5m", cron="* * * * *")]})


def test_duplicate_ids_and_all_problems_reported_at_once() -> None:
    text = problems({"sources": [feed(), feed(), feed(id="x", nope=1)], "server": {"port": -1}})
    assert "sources[1].id: duplicate source id 'blog'" in text
    assert "sources[2].nope: unknown key" in text
    assert "server.port" in text


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match=r"c\.toml: not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml")


def test_cli_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aggregator.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('[[sources]]\nid = "a"\nkind = "feed"\nurl = "x"\ninterval = "1s"\n')
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: sources[0].interval" in err
    assert main(["check-config", str(REPO / "config.example.toml")]) == 0


def test_sources_made_in_the_web_admin_may_not_run_a_token_command() -> None:
    raw = {"id": "mail", "kind": "imap", "host": "imap.example.org", "username": "u",
           "auth": "xoauth2", "token_command": ["/usr/local/bin/get-token"]}  # fmt: skip
    assert parse_source(raw, "sources[0]", "file").id == "mail"
    with pytest.raises(ConfigError, match=r"source\.token_command: runs a command on the server"):
        parse_source(raw, "source", "db")


def test_what_a_poll_would_refuse_is_refused_with_the_config() -> None:
    """A local file with no allowed directory, one outside them, and a
    protocol no connector speaks: refused when the file is read (check-config,
    start-up), each naming its key, not at the first poll."""
    said = problems(
        {
            "sources": [
                feed(url="file:///etc/passwd"),
                feed(id="gopher", url="gopher://e.org/1"),
                {"id": "mail", "kind": "maildir", "path": "/var/mail/x"},
            ]
        }
    )
    assert "sources[0].url: file:///etc/passwd: this source may not read local files" in said
    assert "sources[1].url: unsupported protocol 'gopher'" in said
    assert "sources[2].path: /var/mail/x: this source may not read local files" in said
    said = problems({"files": {"allowed_dirs": ["feeds"]}, "sources": [feed(url="../secret.xml")]})
    assert "sources[0].url: ../secret.xml: not under an allowed directory (/etc/feeds)" in said
    ok = parse_config(
        {"files": {"allowed_dirs": ["feeds"]}, "sources": [feed(url="feeds/a.xml")]},
        Path("/etc/tidings.toml"),
    )
    assert ok.sources[0].options.url == "feeds/a.xml"  # type: ignore[attr-defined]


def test_check_config_reports_every_problem_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cross-field checks run even while other keys are wrong: a bad cron, a
    non-string audience and an Authorization header are all three reported;
    interval + cron does not hide token + username, nor a bad field a
    model's own consistency check; a broken source's url is still checked."""
    from aggregator.cli import main

    path = tmp_path / "all.toml"
    path.write_text(
        """
[auth]
session_lifetime = "soon"
proxy_header = "X-Forwarded-User"

[[sources]]
id = "a"
kind = "feed"
url = "https://e.org/feed"
cron = "every day"
audience = [3]
headers = { Authorization = "Bearer abc" }

[[sources]]
id = "b"
kind = "feed"
url = "https://e.org/feed"
interval = "5m"
cron = "0 * * * *"
token = "env:T"
username = "u"
password = "env:P"

[[sources]]
id = "c"
kind = "html"
url = "https://e.org/"
items = ".entry"
watch = ".news"
date_format = "day"

[[sources]]
id = "c"
kind = "feed"
url = "gopher://e.org/1"
interval = "1s"
"""
    )
    assert main(["check-config", "--no-store", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    said = "\n".join(line.removeprefix("error: ").removeprefix(f"{path}: ") for line in lines)
    assert all(str(path) in line for line in lines), lines
    for expected in (
        "auth.session_lifetime",
        "auth: proxy_header needs trusted_proxies",
        "sources[0].cron: not a cron expression",
        "sources[0].audience[0]: Input should be a valid string",
        "sources[0].headers: Authorization cannot be set here",
        "sources[1]: give either interval or cron, not both",
        "sources[1].token: give either token or username and password, not both",
        "sources[2].date_format: a strptime format needs %-directives",
        "sources[2]: give either items or watch, not both",
        "sources[3].interval: must be at least 5s",
        "sources[3].id: duplicate source id 'c'",
        "sources[3].url: unsupported protocol 'gopher'",
    ):
        assert expected in said, f"{expected!r} not in:\n{said}"
    assert len(lines) == 12, said


def test_a_cross_field_check_is_silent_about_a_key_already_reported() -> None:
    """Re-run without a wrong key, a model's consistency check would blame
    its absence: that is not a second problem."""
    said = problems({"sources": [feed(username="bad:name", password="env:P")]})
    assert "sources[0].username: must be non-empty" in said
    assert "password" not in said
