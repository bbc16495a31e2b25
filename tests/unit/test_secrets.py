"""Secret references (env:/file:) and the feed options that use them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from aggregator.config import parse_config
from aggregator.exceptions import ConfigError, ConnectorError
from aggregator.secrets import (
    MAX_SECRET_FILE_BYTES,
    REF_MESSAGE,
    SecretError,
    SecretRef,
    is_secret_field,
    resolve_secret,
)
from connectors.feed import FeedOptions

SECRET = "hunter2-Pasted-Secret"


class Options(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)

    required: SecretRef
    optional: SecretRef | None = None
    many: list[SecretRef] = []
    plain: str = ""


def feed(**options: object) -> dict[str, object]:
    return {"id": "intranet", "kind": "feed", "url": "https://wiki.intranet/feed", **options}


def problems(**options: object) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config({"sources": [feed(**options)]}, Path("/etc/tidings.toml"))
    return str(err.value)


# --- what a reference may look like -------------------------------------------


@pytest.mark.parametrize(
    "ref", ["env:IMAP_PASSWORD", "env:_x1", "file:/run/secrets/token", "file:secrets/t.txt"]
)
def test_references_are_accepted(ref: str) -> None:
    assert Options(required=ref, optional=ref).required == ref


@pytest.mark.parametrize(
    "value",
    [SECRET, "", "env:", "env:1ABC", "env:A-B", "env:A B", "ENV:A", " env:A", "env:A ",
     "file:", "file:  ", "file:a\0b", "secret:A", "https://user:pw@host/"],
)  # fmt: skip
def test_anything_else_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(ValidationError) as err:
        Options(required=value)
    assert err.value.errors()[0]["msg"] == REF_MESSAGE
    assert "input_value" not in str(err.value)
    if value.strip() not in REF_MESSAGE:
        assert value not in str(err.value)


def test_config_errors_name_the_key_and_never_the_value() -> None:
    message = problems(username="wiki", password=SECRET)
    assert f"sources[0].password: {REF_MESSAGE}" in message
    assert SECRET not in message
    message = problems(token=SECRET)
    assert f"sources[0].token: {REF_MESSAGE}" in message and SECRET not in message


def test_feed_options_errors_do_not_print_the_input() -> None:
    with pytest.raises(ValidationError) as err:
        FeedOptions.model_validate({"url": "https://e.org/f", "token": SECRET})
    assert SECRET not in str(err.value) and SECRET not in repr(err.value)


def test_secret_fields_are_marked_for_the_admin_ui() -> None:
    assert is_secret_field(Options, "required") and is_secret_field(Options, "optional")
    assert is_secret_field(Options, "many")
    assert not is_secret_field(Options, "plain") and not is_secret_field(Options, "nope")
    assert is_secret_field(FeedOptions, "password") and is_secret_field(FeedOptions, "token")
    for name in ("url", "headers", "username"):
        assert not is_secret_field(FeedOptions, name)
    schema = FeedOptions.model_json_schema()["properties"]
    assert {"type": "string", "secret": True} in schema["token"]["anyOf"]
    assert "secret" not in schema["username"]["anyOf"][0]


# --- resolving ------------------------------------------------------------------


def test_env_references_read_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIDINGS_TEST_SECRET", f"  {SECRET}\n")
    assert resolve_secret("env:TIDINGS_TEST_SECRET", tmp_path) == SECRET


def test_a_missing_or_empty_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TIDINGS_TEST_ABSENT", raising=False)
    with pytest.raises(SecretError, match=r"^environment variable TIDINGS_TEST_ABSENT is not set$"):
        resolve_secret("env:TIDINGS_TEST_ABSENT", tmp_path)
    monkeypatch.setenv("TIDINGS_TEST_EMPTY", " \n")
    with pytest.raises(SecretError, match=r"^environment variable TIDINGS_TEST_EMPTY is empty$"):
        resolve_secret("env:TIDINGS_TEST_EMPTY", tmp_path)


def test_file_references_are_relative_to_the_base_dir(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(SECRET + "\n")
    assert resolve_secret("file:secrets/token", tmp_path) == SECRET
    absolute = tmp_path / "secrets" / "token"
    assert resolve_secret(f"file:{absolute}", Path("/nonexistent")) == SECRET


def test_file_errors_name_the_file_and_never_the_value(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(SecretError) as err:
        resolve_secret("file:missing", tmp_path)
    assert str(err.value) == f"cannot read secret file {missing}: No such file or directory"

    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretError, match=r"^secret file .*/empty is empty$"):
        resolve_secret("file:empty", tmp_path)

    with pytest.raises(SecretError, match="Is a directory"):
        resolve_secret(f"file:{tmp_path}", tmp_path)

    (tmp_path / "huge").write_text(SECRET * (MAX_SECRET_FILE_BYTES // len(SECRET) + 1))
    with pytest.raises(SecretError, match="is larger than") as err:
        resolve_secret("file:huge", tmp_path)
    assert SECRET not in str(err.value)

    (tmp_path / "binary").write_bytes(SECRET.encode() + b"\xff\xfe")
    with pytest.raises(SecretError, match="is not UTF-8 text") as err:
        resolve_secret("file:binary", tmp_path)
    assert SECRET not in str(err.value)


def test_resolving_a_non_reference_never_echoes_it(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as err:
        resolve_secret(SECRET, tmp_path)
    assert SECRET not in str(err.value) and REF_MESSAGE in str(err.value)


def test_a_secret_error_is_a_poll_failure() -> None:
    assert issubclass(SecretError, ConnectorError)


# --- feed options -----------------------------------------------------------------


def test_feed_credentials_are_accepted() -> None:
    basic = FeedOptions.model_validate(
        {"url": "https://e.org/f", "username": "tidings", "password": "env:WIKI_PASSWORD"}
    )
    assert basic.password == "env:WIKI_PASSWORD"
    bearer = FeedOptions.model_validate({"url": "https://e.org/f", "token": "file:/run/t"})
    assert bearer.token == "file:/run/t" and bearer.username is None
    headers = FeedOptions.model_validate({"url": "https://e.org/f", "headers": {"X-Team": "a"}})
    assert headers.headers == {"X-Team": "a"}


def test_feed_credential_combinations_are_checked_and_name_the_key() -> None:
    assert "sources[0].password: required when username is set" in problems(username="u")
    assert "sources[0].password: needs username" in problems(password="env:P")
    both = problems(username="u", password="env:P", token="env:T")
    assert "sources[0].token: give either token or username and password, not both" in both
    assert "sources[0].username: must be non-empty" in problems(username="a:b", password="env:P")


def test_credentials_never_go_into_headers_or_the_url() -> None:
    for name in ("Authorization", "authorization", "Cookie", "Proxy-Authorization"):
        message = problems(headers={name: SECRET})
        assert f"sources[0].headers: {name} cannot be set here" in message
        assert SECRET not in message
    assert "use token, or username and password" in problems(headers={"Authorization": SECRET})
    assert "comes from url" in problems(headers={"Host": "elsewhere"})
    assert "not a valid header name" in problems(headers={"Bad Name": "x"})
    assert "line break" in problems(headers={"X-A": "a\r\nInjected: 1"})
    message = problems(url=f"https://me:{SECRET}@wiki.intranet/feed")
    assert "sources[0].url: credentials do not belong in the URL" in message
    assert SECRET not in message


def test_credentials_are_only_for_http_sources() -> None:
    assert "sources[0].token: only for http(s) URLs" in problems(url="feeds/a.xml", token="env:T")
    local = problems(url="file:///srv/a.xml", username="u", password="env:P")
    assert "sources[0].username: only for http(s) URLs" in local


def test_web_made_sources_only_reach_tidings_secret_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from aggregator.config import parse_source
    from aggregator.exceptions import ConfigError
    from aggregator.secrets import WEB_REF_MESSAGE

    base = {"id": "s", "kind": "feed", "url": "https://e.org/f", "username": "u"}
    for ref in ("env:HOME", "file:/etc/passwd", "file:token"):
        with pytest.raises(ConfigError) as caught:
            parse_source({**base, "password": ref}, "source", "db")
        assert str(caught.value) == f"source.password: {WEB_REF_MESSAGE}"
        parse_source({**base, "password": ref}, "source", "file")  # the operator's file may
    parse_source({**base, "password": "env:TIDINGS_SECRET_WIKI"}, "source", "db")

    monkeypatch.setenv("HOME_SECRET", "s3cret")
    with pytest.raises(SecretError, match="TIDINGS_SECRET_"):
        resolve_secret("env:HOME_SECRET", tmp_path, web_made=True)
    monkeypatch.setenv("TIDINGS_SECRET_WIKI", "w1k1")
    assert resolve_secret("env:TIDINGS_SECRET_WIKI", tmp_path, web_made=True) == "w1k1"


def test_web_made_sources_fetch_http_only() -> None:
    from aggregator.config import parse_source

    for url in ("file:///etc/passwd", "notes/feed.xml", "ftp://e.org/f"):
        with pytest.raises(ConfigError, match=r"source\.url: .*http\(s\) URLs only"):
            parse_source({"id": "s", "kind": "feed", "url": url}, "source", "db")
    parse_source({"id": "s", "kind": "feed", "url": "HTTPS://e.org/f"}, "source", "db")
    with pytest.raises(ConfigError, match=r"source\.allow_link_local: only sources in the config"):
        parse_source(
            {"id": "s", "kind": "feed", "url": "https://e.org/f", "allow_link_local": True},
            "source",
            "db",
        )
