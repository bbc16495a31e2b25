"""From MIME to event (connectors.mail.message_event): hand-written messages
for each rule, then every message of the shared mail corpus."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.decide import prepare
from connectors.mail import MailRules, message_event
from tests.corpus import corpus, files

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
ENCODED_WORD = re.compile(r"=\?[^?]+\?[bBqQ]\?")


def msg(headers: str, body: str = "Hello.\n", *, raw_body: bytes | None = None) -> bytes:
    head = headers.strip("\n").replace("\n", "\r\n").encode("utf-8", "surrogateescape")
    return head + b"\r\n\r\n" + (raw_body if raw_body is not None else body.encode())


BASIC = """\
From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <Juergen@Example.ORG>
To: "Ann" <ANN@example.org>, bob@example.org
Cc: Carol <carol@Example.org>
Subject: =?utf-8?B?w4RwZmVs?= und =?iso-8859-1?q?Birnen?=
Date: Tue, 07 May 2024 09:30:00 +0200
Message-ID: <abc.123@example.org>
List-Id: Dev list <dev.lists.example.org>
Content-Type: text/plain; charset=utf-8
"""


def test_headers_map_to_title_actor_date_recipients_tags() -> None:
    e = message_event(msg(BASIC, "Grüße <alle> & so\n"), MailRules(), NOW)
    assert e.title == "Äpfel und Birnen"
    assert (e.actor.name, e.actor.email) == ("Jürgen Müller", "juergen@example.org")
    assert e.published == datetime(2024, 5, 7, 7, 30, tzinfo=UTC)
    assert e.extra["to"] == ["ann@example.org", "bob@example.org"]
    assert e.extra["cc"] == ["carol@example.org"]
    assert e.tags == ("dev.lists.example.org",)
    assert e.extra["list_id"] == "dev.lists.example.org"
    assert (e.verb, e.object_type) == ("Create", "Message")
    assert e.external_id == "abc.123@example.org" == e.extra["message_id"]
    assert e.thread_id == "abc.123@example.org"  # a thread's root is itself
    assert e.content_html == ""  # store_bodies is off by default
    # the summary is HTML-escaped text: the pipeline reads it as HTML
    [ready] = prepare([e])
    assert ready.data.summary == "Grüße <alle> & so"


def test_an_address_alone_is_no_name() -> None:
    for sender in ("bob@example.org", '"bob@example.org" <bob@example.org>'):
        e = message_event(msg(f"From: {sender}\nSubject: x"), now=NOW)
        assert (e.actor.name, e.actor.email) == (None, "bob@example.org")


@pytest.mark.parametrize(
    "date",
    [None, "not a date at all", "Mon, 1 Jan 1900 00:00:00 +0000", "Fri, 1 Jan 2100 00:00:00 +0000"],
)
def test_missing_unparsable_or_absurd_dates_are_left_to_first_seen(date: str | None) -> None:
    head = "Subject: x" + (f"\nDate: {date}" if date else "")
    assert message_event(msg(head), now=NOW).published is None


def test_a_date_a_few_hours_ahead_is_believed() -> None:
    e = message_event(msg("Date: Sat, 1 Jun 2024 20:00:00 +0000"), now=NOW)
    assert e.published == datetime(2024, 6, 1, 20, 0, tzinfo=UTC)


def test_without_message_id_identity_is_the_bytes() -> None:
    one = message_event(msg("Subject: same", "one\n"), now=NOW)
    two = message_event(msg("Subject: same", "two\n"), now=NOW)
    again = message_event(msg("Subject: same", "one\n"), now=NOW)
    assert one.external_id and one.external_id.startswith("sha256:")
    assert one.external_id != two.external_id
    assert one.external_id == again.external_id
    assert one.thread_id is None


def test_thread_root_from_references_else_in_reply_to() -> None:
    refs = "Message-ID: <c@x>\nIn-Reply-To: <b@x>\nReferences: <a@x>\n <b@x>"
    assert message_event(msg(refs), now=NOW).thread_id == "a@x"
    assert message_event(msg("Message-ID: <c@x>\nIn-Reply-To: <b@x>"), now=NOW).thread_id == "b@x"


def test_a_message_id_the_policy_cuts_short_is_kept_whole() -> None:
    e = message_event(msg("Message-ID: <a b@c>"), now=NOW)
    assert e.external_id == "a b@c"  # the policy's parse says "<a"


def test_wrong_and_unknown_charsets_and_8bit_headers_decode() -> None:
    # declared utf-8, really latin-1; an unknown charset; raw 8-bit latin-1 in the subject
    latin = msg(
        "Subject: Ver\udce3o\nContent-Type: text/plain; charset=utf-8",
        raw_body="Ça va très bien".encode("latin-1"),
    )
    e = message_event(latin, now=NOW)
    assert e.title == "Verão"
    assert "Ça va très bien" in e.summary
    unknown = msg("Content-Type: text/plain; charset=x-no-such", raw_body="naïve".encode())
    assert message_event(unknown, now=NOW).summary == "naïve"
    # encoded words the policy cannot decode: unknown charset, iso-8859-8-i, cut off
    odd = "Subject: =?iso-8859-8-i?B?7vLw5A==?= =?x-nope?q?caf=C3=A9?= =?utf-8?q?end"
    title = message_event(msg(odd), now=NOW).title
    assert title.startswith("מענה")
    assert "café" in title and "end" in title
    assert not ENCODED_WORD.search(title)


def test_html_only_and_multipart_alternative() -> None:
    html_only = msg(
        "Content-Type: text/html; charset=utf-8",
        "<html><style>p{}</style><p>Hi <b>there</b> &amp; bye</p></html>",
    )
    e = message_event(html_only, MailRules(store_bodies=True), NOW)
    assert prepare([e])[0].data.summary == "Hi there & bye"
    assert "<b>there</b>" in e.content_html
    alternative = msg(
        'Content-Type: multipart/alternative; boundary="b"',
        "--b\r\nContent-Type: text/plain\r\n\r\nPlain words\r\n"
        "--b\r\nContent-Type: text/html\r\n\r\n<p>Rich <i>words</i></p>\r\n--b--\r\n",
    )
    kept = message_event(alternative, MailRules(store_bodies=True), NOW)
    assert kept.summary == "Plain words"
    assert kept.content_html.startswith("<p>Rich <i>words</i>")
    assert kept.extra["files"] == []
    short = message_event(alternative, MailRules(store_bodies=False), NOW)
    assert short.content_html == "" and short.summary == "Plain words"


def test_plain_text_becomes_paragraphs_only_when_bodies_are_stored() -> None:
    raw = msg("Subject: x", "line one\nline <two>\n\nsecond paragraph\n")
    e = message_event(raw, MailRules(store_bodies=True), NOW)
    assert e.content_html == "<p>line one<br>\nline &lt;two&gt;</p>\n<p>second paragraph</p>\n"
    assert message_event(raw, MailRules(store_bodies=False), NOW).content_html == ""


def test_summary_is_cut_to_summary_chars() -> None:
    raw = msg("Subject: x", "word " * 200)
    e = message_event(raw, MailRules(summary_chars=30), NOW)
    assert len(e.summary) <= 30 and e.summary.endswith("…")
    assert message_event(raw, MailRules(summary_chars=0), NOW).summary == ""


ATTACHED = (
    'Content-Type: multipart/mixed; boundary="m"',
    "--m\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
    "--m\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
    "Content-Disposition: attachment; filename*=utf-8''R%C3%A9sum%C3%A9.pdf\r\n\r\n"
    "AAECAwQFBgcICQ==\r\n"
    '--m\r\nContent-Type: text/csv; name="=?utf-8?q?d=C3=A4ten.csv?="\r\n'
    "Content-Disposition: attachment\r\n\r\na,b\r\n1,2\r\n"
    "--m\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--m--\r\n",
)


def test_attachments_are_listed_not_stored() -> None:
    e = message_event(msg(ATTACHED[0], ATTACHED[1]), MailRules(store_bodies=True), NOW)
    assert e.extra["files"][:2] == [
        {"name": "Résumé.pdf", "type": "application/pdf", "size": 10},
        {"name": "däten.csv", "type": "text/csv", "size": 8},
    ]
    assert e.extra["files"][2]["type"] == "message/rfc822"
    assert e.summary == "See attached."
    assert "AAECAwQF" not in e.content_html and "inner body" not in e.content_html


def test_space_between_encoded_words_in_two_charsets_is_dropped() -> None:
    # RFC 2047 6.2; php-mime-mail-parser's m0023 splits "you" like this
    subject = "=?ISO-8859-1?B?eW8=?=\n =?ISO-8859-2?B?dSBhbmQgbWU=?= =?utf-8?q?!?="
    assert message_event(msg(f"Subject: {subject}"), now=NOW).title == "you and me!"


def test_bare_addresses_without_commas_are_each_kept() -> None:
    e = message_event(msg("From: a@example.org b@example.org\nTo: c@x.org d@x.org"), now=NOW)
    assert e.actor.email == "a@example.org"
    assert e.extra["to"] == ["c@x.org", "d@x.org"]


def test_a_sender_without_address_is_a_name() -> None:
    e = message_event(msg("From: MAILER-DAEMON\nTo: @lists.example.org"), now=NOW)
    assert (e.actor.name, e.actor.email) == ("MAILER-DAEMON", None)
    assert e.extra["to"] == []


def test_an_inline_text_part_with_a_name_is_the_body_and_8bit_names_decode() -> None:
    raw = msg(
        "Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b",
        raw_body=(
            b'--b\r\nContent-Type: text/plain; charset=utf-8; name="notes.txt"\r\n'
            b"Content-Disposition: inline\r\n\r\nThe body.\r\n"
            b"--b\r\nContent-Type: text/plain\r\n"
            b"Content-Disposition: attachment; filename=ci\xc3\xablE.txt\r\n\r\nHi\r\n--b--\r\n"
        ),
    )
    e = message_event(raw, now=NOW)
    assert e.summary == "The body."
    assert [f["name"] for f in e.extra["files"]] == ["ciëlE.txt"]


def test_a_truncated_message_parses() -> None:
    whole = msg(ATTACHED[0], ATTACHED[1])
    for cut in (10, 60, 120, 200, 260, len(whole) - 30):
        e = message_event(whole[:cut], MailRules(store_bodies=True), NOW)
        assert e.object_type == "Message" and e.external_id


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"Subject: =?utf-8?b?####?=\r\nFrom: <<<@>>>\r\nTo: ,,,;;:\r\nDate: 99 Foo 99999\r\n\r\n",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary at all",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n"
        + b"--x\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n" * 300,
    ],
)
def test_junk_never_raises(raw: bytes) -> None:
    e = message_event(raw, MailRules(store_bodies=True), NOW)
    assert e.external_id and not ENCODED_WORD.search(e.title)


# The corpus


MAIL = [p for p in files("mail", "**/*") if p.is_file() and p.name != "manifest.tsv"]


@pytest.mark.corpus
def test_every_corpus_message_makes_one_clean_event() -> None:
    root = corpus("mail")
    assert len(MAIL) >= 300, "the mail corpus holds about 375 files"
    undecodable: list[str] = []
    for path in MAIL:
        raw = path.read_bytes()
        try:
            [ready] = prepare([message_event(raw, MailRules(store_bodies=True), NOW)])
        except Exception as err:  # pragma: no cover - the failure names the file
            pytest.fail(f"{path.relative_to(root)}: {err!r}")
        e = ready.data
        assert not ENCODED_WORD.search(e.title), f"{path.relative_to(root)}: {e.title!r}"
        assert e.object_type == "Message" and ready.external_id
        if "\ufffd" in e.title:
            undecodable.append(str(path.relative_to(root)))
    # The one subject that is U+FFFD in its own bytes (EF BF BD): nothing to decode.
    assert undecodable == ["ruby-mail/error_emails/must_supply_encoding.eml"]


@pytest.mark.corpus
def test_corpus_subjects_in_legacy_charsets_decode() -> None:
    root: Path = corpus("mail")
    cases = {
        "php-mime-mail-parser/issue149": "מענה 'אני לא נמצא': Invoice 02722027",
        "ruby-mail/error_emails/invalid_subject_characters.eml": "Formação FrenetikPolis",
        "spamassassin/nice/cjk/gb2312.1": "全新原装进口",
    }
    for name, expected in cases.items():
        assert expected in message_event((root / name).read_bytes(), now=NOW).title
