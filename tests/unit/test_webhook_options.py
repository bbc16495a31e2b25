"""Webhook options, and the pure checks web/hooks.py runs with them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from aggregator.config import SourceConfig, parse_source
from aggregator.exceptions import ConfigError
from aggregator.secrets import REF_MESSAGE, WEB_REF_MESSAGE
from connectors.mapping import MappingError
from connectors.webhook import (
    MAX_BYTES_CAP,
    PayloadError,
    WebhookConnector,
    WebhookOptions,
    delivery_id,
    event_type,
    map_payload,
    parse_payload,
    verify,
)

SECRET = "s3cret-Pasted-Value"
BODY = b'{"action": "opened", "issue": {"number": 7, "title": "Broken build"}}'


def hook(**options: Any) -> dict[str, Any]:
    table = {
        "id": "ci",
        "kind": "webhook",
        "secret": "env:TIDINGS_SECRET_CI",
        "fields": {"title": "issue.title"},
    }
    return {**table, **options}


def options_of(**options: Any) -> WebhookOptions:
    source = parse_source(hook(**options), "source", "file")
    assert isinstance(source.options, WebhookOptions)
    return source.options


def problems(origin: str = "file", **options: Any) -> str:
    with pytest.raises(ConfigError) as err:
        parse_source(hook(**options), "source", origin)  # type: ignore[arg-type]
    return str(err.value)


# --- validation ----------------------------------------------------------------------


def test_defaults() -> None:
    opts = options_of()
    assert opts.signature == "github"
    assert opts.signature_header_name == "x-hub-signature-256"
    assert opts.max_bytes == 1024 * 1024
    assert (opts.event_header, opts.delivery_header, opts.preset) == (None, None, None)


def test_a_secret_is_required_unless_signature_is_none() -> None:
    table = hook()
    del table["secret"]
    with pytest.raises(ConfigError) as err:
        parse_source(table, "source", "file")
    assert 'source.secret: required unless signature = "none"' in str(err.value)
    del table["fields"]
    table |= {"signature": "none", "fields": {"title": "title"}}
    source: SourceConfig = parse_source(table, "source", "file")
    assert isinstance(source.options, WebhookOptions) and source.options.secret is None
    assert 'source.secret: not used with signature = "none"' in problems(signature="none")


def test_the_secret_is_a_reference_never_echoed() -> None:
    message = problems(secret=SECRET)
    assert f"source.secret: {REF_MESSAGE}" in message and SECRET not in message


def test_web_made_sources_use_only_tidings_secret_variables() -> None:
    assert WEB_REF_MESSAGE in problems("db", secret="env:GITHUB_TOKEN")
    assert WEB_REF_MESSAGE in problems("db", secret="file:/etc/shadow")
    assert parse_source(hook(), "source", "db").origin == "db"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"signature": "md5"}, "source.signature: Input should be 'github'"),
        ({"max_bytes": MAX_BYTES_CAP + 1}, "source.max_bytes: Input should be less than"),
        ({"max_bytes": 10}, "source.max_bytes: Input should be greater than or equal to 1024"),
        ({"event_header": "X Event"}, "source.event_header: not an HTTP header name"),
        ({"delivery_header": ""}, "source.delivery_header: not an HTTP header name"),
        ({"signature": "bearer", "signature_header": "X-Auth"}, "source.signature_header: only"),
        ({"fields": {"title": "issue.["}}, "fields.title: invalid JMESPath"),
        ({"fields": {}}, "fields.title: required"),
        ({"preset": "no-such-preset"}, "preset: no webhook preset 'no-such-preset'"),
        ({"url": "https://x"}, "source.url: unknown key"),
    ],
)
def test_bad_options_are_errors_naming_the_key(options: dict[str, Any], expected: str) -> None:
    assert expected in problems(**options)


def test_header_names_are_kept_lower_case() -> None:
    opts = options_of(
        signature="hmac",
        signature_header="X-Gitea-Signature",
        event_header="X-GitHub-Event",
        delivery_header="X-GitHub-Delivery",
    )
    assert opts.signature_header_name == "x-gitea-signature"
    assert (opts.event_header, opts.delivery_header) == ("x-github-event", "x-github-delivery")


# --- who sent it -----------------------------------------------------------------------


def _mac(body: bytes, key: str = SECRET) -> bytes:
    return hmac.new(key.encode(), body, hashlib.sha256).digest()


def test_github_signature() -> None:
    opts = options_of(signature="github")
    good = "sha256=" + _mac(BODY).hex()
    assert verify(opts, SECRET, {"x-hub-signature-256": good}, BODY)
    assert not verify(opts, SECRET, {"x-hub-signature-256": good}, BODY + b" ")
    assert not verify(opts, "other", {"x-hub-signature-256": good}, BODY)
    assert not verify(opts, SECRET, {"x-hub-signature-256": _mac(BODY).hex()}, BODY)
    assert not verify(opts, SECRET, {}, BODY)
    assert not verify(opts, None, {"x-hub-signature-256": good}, BODY)
    assert not verify(opts, SECRET, {"x-hub-signature-256": "sha256=é"}, BODY)


def test_generic_hmac_takes_hex_prefixed_hex_or_base64() -> None:
    opts = options_of(signature="hmac")
    digest = _mac(BODY)
    for value in (digest.hex(), digest.hex().upper(), "sha256=" + digest.hex(),
                  base64.b64encode(digest).decode()):  # fmt: skip
        assert verify(opts, SECRET, {"x-signature": value}, BODY), value
    assert not verify(opts, SECRET, {"x-signature": _mac(b"other").hex()}, BODY)
    assert not verify(opts, SECRET, {"x-signature": "not base64 or hex!"}, BODY)


@pytest.mark.parametrize(
    ("signature", "header", "value"),
    [("gitlab", "x-gitlab-token", SECRET), ("token", "x-webhook-token", SECRET),
     ("bearer", "authorization", f"Bearer {SECRET}"),
     ("bearer", "authorization", f"bearer  {SECRET} ")],
)  # fmt: skip
def test_shared_tokens(signature: str, header: str, value: str) -> None:
    opts = options_of(signature=signature)
    assert verify(opts, SECRET, {header: value}, BODY)
    assert not verify(opts, SECRET, {header: value.replace(SECRET, SECRET[:-1])}, BODY)
    assert not verify(opts, SECRET, {header: value + "x"}, BODY)
    assert not verify(opts, SECRET, {}, BODY)


def test_signature_none_lets_anything_in() -> None:
    table = hook(signature="none")
    del table["secret"]
    opts = parse_source(table, "source", "file").options
    assert isinstance(opts, WebhookOptions)
    assert verify(opts, None, {}, b"anything")


# --- what it carries ---------------------------------------------------------------------


def test_event_type_and_delivery_id() -> None:
    opts = options_of(event_header="X-GitHub-Event", delivery_header="X-GitHub-Delivery")
    headers = {"x-github-event": " issues ", "x-github-delivery": "abc-1"}
    assert event_type(opts, headers) == "issues"
    assert delivery_id(opts, headers, BODY) == "abc-1"
    plain = options_of()
    assert event_type(plain, headers) is None
    assert delivery_id(plain, {"x-delivery-id": "d-9"}, BODY) == "d-9"
    # No id sent: the body's hash, so a resent body is the same delivery.
    by_body = delivery_id(plain, {}, BODY)
    assert by_body == "sha256:" + hashlib.sha256(BODY).hexdigest()
    assert delivery_id(plain, {}, BODY + b" ") != by_body
    # Too long for the column (200): hashed, still stable.
    long = {"x-delivery-id": "x" * 500}
    assert delivery_id(plain, long, BODY) == delivery_id(plain, long, b"")
    assert len(delivery_id(plain, long, BODY)) < 200


def test_payloads_are_json_or_a_form_holding_json() -> None:
    assert parse_payload(BODY, "application/json")["issue"]["number"] == 7
    form = b"payload=" + json.dumps({"a": 1}).encode().replace(b" ", b"+")
    assert parse_payload(form, "application/x-www-form-urlencoded; charset=utf-8") == {"a": 1}
    for body, ctype, why in [
        (b"{nope", "application/json", "the body is not JSON"),
        (b"", None, "the body is empty"),
        (b"other=1", "application/x-www-form-urlencoded", "no `payload` field"),
        (b"[" * 100_000, None, "the body is not JSON"),
    ]:
        with pytest.raises(PayloadError, match=why):
            parse_payload(body, ctype)


def test_events_without_a_mapped_id_take_the_delivery_id() -> None:
    one = map_payload(options_of(), json.loads(BODY), event=None, delivery="d1")
    assert [e.external_id for e in one.events] == ["d1"]
    assert one.events[0].title == "Broken build"
    mapped_id = options_of(fields={"id": "issue.number", "title": "issue.title"})
    [event] = map_payload(mapped_id, json.loads(BODY), event=None, delivery="d1").events
    assert event.external_id == "7"
    several = options_of(items="commits", fields={"title": "message"})
    doc = {"commits": [{"message": "a"}, {"message": "b"}]}
    got = map_payload(several, doc, event=None, delivery="d2").events
    assert [(e.external_id, e.title) for e in got] == [("d2#1", "a"), ("d2#2", "b")]
    with pytest.raises(MappingError, match="items: 'commits' matched nothing"):
        map_payload(several, {}, event=None, delivery="d3")


def test_the_last_payload_outlives_new_options() -> None:
    state = {"last_payload": {"body": {"a": 1}, "event": "push"}, "other": 1}
    assert WebhookConnector.carry_state(state) == {"last_payload": state["last_payload"]}
    assert WebhookConnector.carry_state(None) is None
    assert WebhookConnector.carry_state({"last_payload": "junk"}) is None
