"""`tidings users|groups|tokens|audit`, and `tidings poll` of a web-admin source."""

from __future__ import annotations

import getpass
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.accounts import token_hash, verify_password
from aggregator.cli import main
from aggregator.store import Store
from tests.stores import store_url
from tests.support import CliRun as Run
from tests.support import FeedServer, rss, write_config

PASSWORD = "correct horse battery"


@pytest.fixture
def tidings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Run:
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nurl = "{store_url(tmp_path)}"\n')
    monkeypatch.setenv("TIDINGS_TEST_PW", PASSWORD)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal, unless a test says so
    monkeypatch.setattr(getpass, "getuser", lambda: "ops-person")
    return Run(config, capsys)


@pytest.fixture
def store(tidings: Run) -> Iterator[Store]:
    s = tidings.store()
    yield s
    s.close()


def create(tidings: Run, name: str, *extra: str) -> None:
    assert tidings("users", "create", name, "--password-env", "TIDINGS_TEST_PW", *extra) == 0


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def typed(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    """Make stdin a terminal where `answers` are typed at the password prompts."""
    prompts: list[str] = []
    replies = iter(answers)

    def fake_getpass(prompt: str = "Password: ") -> str:
        prompts.append(prompt)
        return next(replies)

    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    return prompts


# --- users -------------------------------------------------------------------


def test_create_admin_with_password_env_and_groups(tidings: Run, store: Store) -> None:
    args = ("users", "create", "alice", "--admin", "--group", "legal", "--group", "ops")
    assert tidings(*args, "--password-env", "TIDINGS_TEST_PW") == 0
    assert tidings.out.strip() == "created admin alice (groups: legal, ops)"
    assert PASSWORD not in tidings.out + tidings.err
    assert tidings.err == ""
    user = store.people.user("alice")
    assert user is not None and user.is_admin and user.groups == {"legal", "ops"}
    assert verify_password(store.people.password_hash("alice"), PASSWORD)
    assert not verify_password(store.people.password_hash("alice"), "TIDINGS_TEST_PW")
    assert store.people.groups() == {"legal": ["alice"], "ops": ["alice"]}


def test_create_member_prompts_twice_on_a_terminal(
    tidings: Run, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = typed(monkeypatch, PASSWORD, PASSWORD)
    assert tidings("users", "create", "bob") == 0
    assert tidings.out.strip() == "created member bob (no groups)"
    assert "no admin" in tidings.err and "set-role bob admin" in tidings.err
    assert len(prompts) == 2 and "bob" in prompts[0]
    assert verify_password(store.people.password_hash("bob"), PASSWORD)


def test_two_different_passwords_create_nobody(
    tidings: Run, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    typed(monkeypatch, PASSWORD, PASSWORD + "!")
    assert tidings("users", "create", "bob") == 2
    assert "differ" in tidings.err
    assert PASSWORD not in tidings.out + tidings.err
    assert store.people.user("bob") is None


def test_duplicate_user_is_refused_naming_the_user(tidings: Run) -> None:
    create(tidings, "alice", "--admin")
    assert tidings("users", "create", "alice", "--password-env", "TIDINGS_TEST_PW") == 2
    assert "error:" in tidings.err and "'alice' already exists" in tidings.err
    assert tidings("users", "create", "ALICE", "--password-env", "TIDINGS_TEST_PW") == 2
    assert "'ALICE' already exists as 'alice'" in tidings.err


def test_short_password_is_refused(
    tidings: Run, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHORT_PW", "1234567")
    assert tidings("users", "create", "alice", "--password-env", "SHORT_PW") == 2
    assert "at least 8 characters" in tidings.err
    assert "1234567" not in tidings.out + tidings.err
    assert store.people.count_users() == 0


def test_no_terminal_and_no_password_env_is_refused(tidings: Run, store: Store) -> None:
    assert tidings("users", "create", "alice", "--admin") == 2
    assert "no terminal" in tidings.err and "--password-env" in tidings.err
    assert tidings("users", "create", "alice", "--password-env", "TIDINGS_UNSET_VAR") == 2
    assert "TIDINGS_UNSET_VAR is not set" in tidings.err
    assert store.people.count_users() == 0


def test_users_list_is_the_default_and_shows_state_and_tokens(tidings: Run) -> None:
    assert tidings("users") == 0
    assert "tidings users create NAME --admin" in tidings.out
    create(tidings, "alice", "--admin", "--group", "legal")
    create(tidings, "bob")
    assert tidings("tokens", "create", "bob") == 0
    assert tidings("users", "disable", "bob") == 0
    assert tidings("users") == 0
    listed = tidings.out
    assert tidings("users", "list") == 0
    assert tidings.out == listed
    header, alice, bob = listed.splitlines()
    assert header.split() == ["NAME", "ROLE", "GROUPS", "STATE", "TOKENS", "CREATED"]
    assert alice.split()[:5] == ["alice", "admin", "legal", "active", "0"]
    assert bob.split()[:5] == ["bob", "member", "-", "disabled", "1"]


def test_config_may_come_before_or_after_the_action(tidings: Run, store: Store) -> None:
    config = str(tidings.config)
    env = ("--password-env", "TIDINGS_TEST_PW")
    assert main(["users", "--config", config, "create", "alice", "--admin", *env]) == 0
    assert main(["users", "create", "bob", "--config", config, *env]) == 0
    assert {u.name for u in store.people.users()} == {"alice", "bob"}


def test_set_password_disable_enable_sign_out(
    tidings: Run, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(tidings, "alice", "--admin")
    create(tidings, "bob")
    bob_id = store.people.user("bob").id  # type: ignore[union-attr]

    def sessions_of_bob() -> int:
        return sum(uid == bob_id for uid, _ in store.people.snapshot().sessions.values())

    def signed_in() -> None:
        store.people.create_session(bob_id, now=datetime.now(UTC), lifetime=timedelta(days=1))
        assert sessions_of_bob() == 1

    signed_in()

    monkeypatch.setenv("NEW_PW", "another long password")
    assert tidings("users", "set-password", "bob", "--password-env", "NEW_PW") == 0
    assert "another long password" not in tidings.out + tidings.err
    assert verify_password(store.people.password_hash("bob"), "another long password")
    assert not verify_password(store.people.password_hash("bob"), PASSWORD)
    assert sessions_of_bob() == 0  # a new password ends every session

    signed_in()
    assert tidings("users", "sign-out", "bob") == 0
    assert sessions_of_bob() == 0
    signed_in()
    assert tidings("users", "disable", "bob") == 0
    assert sessions_of_bob() == 0
    bob = store.people.user("bob")
    assert bob is not None and bob.disabled
    assert tidings("users", "enable", "bob") == 0
    assert not store.people.user("bob").disabled  # type: ignore[union-attr]

    assert tidings("users", "set-role", "bob", "admin") == 0
    assert store.people.user("bob").is_admin  # type: ignore[union-attr]
    with pytest.raises(SystemExit) as exit_:  # argparse: not a role
        tidings("users", "set-role", "bob", "boss")
    assert exit_.value.code == 2

    assert tidings("users", "delete", "bob") == 0
    assert store.people.user("bob") is None
    assert tidings("users", "disable", "bob") == 2
    assert "no user 'bob'" in tidings.err


def test_the_last_admin_cannot_be_disabled_demoted_or_deleted(tidings: Run, store: Store) -> None:
    create(tidings, "alice", "--admin")
    create(tidings, "bob")
    for action in (("disable", "alice"), ("delete", "alice"), ("set-role", "alice", "member")):
        assert tidings("users", *action) == 2
        assert "last admin" in tidings.err
    alice = store.people.user("alice")
    assert alice is not None and alice.is_admin and not alice.disabled

    assert tidings("users", "set-role", "bob", "admin") == 0
    assert tidings("users", "disable", "alice") == 0
    assert tidings("users", "delete", "bob") == 2  # alice is disabled: bob is the last
    assert "last admin" in tidings.err


# --- groups ------------------------------------------------------------------


def test_groups_add_remove_create_delete(tidings: Run, store: Store) -> None:
    create(tidings, "alice", "--admin")
    create(tidings, "bob")
    assert tidings("groups") == 0
    assert "no groups" in tidings.out

    assert tidings("groups", "add", "legal", "alice", "bob") == 0  # creates the group
    snapshot = store.people.snapshot()
    assert snapshot.user_named("bob").groups == {"legal"}  # type: ignore[union-attr]
    assert store.people.groups() == {"legal": ["alice", "bob"]}

    assert tidings("groups", "remove", "legal", "bob") == 0
    assert store.people.snapshot().user_named("bob").groups == frozenset()  # type: ignore[union-attr]
    assert tidings("groups", "remove", "nope", "bob") == 2
    assert "no group 'nope'" in tidings.err
    assert tidings("groups", "add", "legal", "nobody") == 2
    assert "no user 'nobody'" in tidings.err

    assert tidings("groups", "create", "ops") == 0
    assert tidings("groups", "create", "ops") == 2
    assert "'ops' already exists" in tidings.err
    assert tidings("groups", "create", "everyone") == 2
    assert tidings("groups", "list") == 0
    lines = tidings.out.splitlines()
    assert lines[0].split() == ["GROUP", "MEMBERS"]
    assert lines[1].split() == ["legal", "alice"] and lines[2].split() == ["ops", "-"]

    assert tidings("groups", "delete", "legal") == 0
    assert set(store.people.groups()) == {"ops"}
    assert store.people.user("alice").groups == frozenset()  # type: ignore[union-attr]


# --- tokens ------------------------------------------------------------------


def test_token_is_alone_on_the_last_line_and_authenticates(tidings: Run, store: Store) -> None:
    create(tidings, "alice", "--admin")
    assert tidings("tokens", "create", "alice") == 0
    token = tidings.out.splitlines()[-1]
    assert token == token.strip() and " " not in token and len(token) > 40
    token_id, user_id = store.people.snapshot().tokens[token_hash(token)]
    assert store.people.snapshot().users[user_id].name == "alice"
    [listed] = store.people.tokens("alice")
    assert listed.id == token_id and listed.name == "cli"

    assert tidings("tokens", "create", "alice", "--name", "nightly export") == 0
    second = tidings.out.splitlines()[-1]
    assert second != token

    for args in (("tokens",), ("tokens", "list"), ("tokens", "list", "--user", "alice")):
        assert tidings(*args) == 0
        assert token not in tidings.out and second not in tidings.out
        assert "nightly export" in tidings.out and "never" in tidings.out
    assert tidings("tokens", "--user", "nobody") == 2
    assert "no user 'nobody'" in tidings.err

    assert tidings("tokens", "revoke", str(token_id)) == 0
    assert token_hash(token) not in store.people.snapshot().tokens
    assert token_hash(second) in store.people.snapshot().tokens
    assert tidings("tokens", "revoke", str(token_id)) == 2
    assert f"no token {token_id}" in tidings.err


def test_token_for_unknown_user_is_refused(tidings: Run) -> None:
    assert tidings("tokens", "create", "ghost") == 2
    assert "no user 'ghost'" in tidings.err
    assert tidings.out == ""


# --- audit -------------------------------------------------------------------


def test_audit_names_the_cli_actor_newest_first(
    tidings: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(tidings, "alice", "--admin")
    assert tidings("tokens", "create", "alice") == 0
    token = tidings.out.splitlines()[-1]

    def no_login_name() -> str:
        raise OSError("no user name")

    monkeypatch.setattr(getpass, "getuser", no_login_name)
    assert tidings("groups", "add", "legal", "alice") == 0

    assert tidings("audit") == 0
    lines = tidings.out.splitlines()
    assert lines[0].split() == ["AT", "ACTOR", "ACTION", "TARGET", "DETAIL"]
    rows = [line.split()[2:5] for line in lines[1:]]
    assert rows[0] == ["cli", "group.add_member", "legal"]
    assert ["cli:ops-person", "token.create", "alice"] in rows
    assert rows[-1] == ["cli:ops-person", "user.create", "alice"]
    assert token not in tidings.out and PASSWORD not in tidings.out

    assert tidings("audit", "--limit", "1") == 0
    assert len(tidings.out.splitlines()) == 2
    with pytest.raises(SystemExit) as exit_:
        tidings("audit", "--limit", "0")
    assert exit_.value.code == 2
    assert "positive" in tidings.capsys.readouterr().err


# --- poll --------------------------------------------------------------------


def test_poll_of_an_unknown_source_names_it(tidings: Run) -> None:
    assert tidings("poll", "no-such-source") == 2
    assert "'no-such-source'" in tidings.err


@pytest.mark.integration
def test_poll_accepts_a_source_made_in_the_web_admin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], feed_server: FeedServer
) -> None:
    feed_server.put("/feed.xml", rss([{"guid": "a", "title": "A"}, {"guid": "b", "title": "B"}]))
    config = write_config(tmp_path, "")
    run = Run(config, capsys)
    store = Store(store_url(tmp_path, "tidings"))
    try:
        raw = {"id": "web-made", "kind": "feed", "url": feed_server.url("/feed.xml")}
        store.create_source(raw, actor="test", now=datetime.now(UTC))
    finally:
        store.close()
    assert run("poll", "web-made") == 0, run.err
    assert "web-made: 2 new" in run.out
    assert feed_server.hits("/feed.xml") == 1
