"""The html connector's options and parsing, without I/O: lists of entries
picked out with CSS selectors, watched regions and their diffs, hostile
pages, and every page of the shared HTML corpus (tests/corpus.py says
where it is)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aggregator.config import parse_source
from aggregator.decide import prepare, settle_identities
from aggregator.exceptions import ConfigError, ParseError
from connectors.html import (
    MAX_DEPTH,
    MAX_DIFF_LINES,
    MAX_ITEMS,
    MAX_WATCH_TEXT,
    HtmlOptions,
    Pick,
    change_event,
    decode_html,
    diff_text,
    parse_list,
    parse_page,
    parse_pick,
    read_region,
    readable_lines,
)
from tests.corpus import corpus, files

URL = "https://intranet.example/news/index.html"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

NEWS = """<!DOCTYPE html><html><head><title>Firm  news</title><base href="/pub/">
<script>var x = "<li>not an entry</li>";</script></head><body>
<ul class="news">
 <li class="entry">
  <h2><a class="title" href="2026/merger.html">Merger &amp; more</a></h2>
  <time datetime="2026-03-01T10:00:00+01:00">1 March</time>
  <a class="by" href="../people/jane">Jane  Doe</a>
  <p class="lead">The <b>merger</b> closed.</p>
  <div class="body"><p>Full text <img src="img/chart.png"> here.</p>
   <script>steal(document.cookie)</script><a href="files/terms.pdf">terms</a></div>
 </li>
 <li class="entry">
  <h2><a class="title" href="javascript:alert(1)">Office move</a></h2>
  <span class="when">3 March 2026</span>
  <p class="lead">We move on Friday.</p>
 </li>
 <li class="entry"> </li>
</ul>
<div id="status"><h1>Status</h1><p>Mail is  <b>up</b></p></div>
<footer>Visitors today: 41</footer>
</body></html>"""


def options(**kw: Any) -> HtmlOptions:
    return HtmlOptions(**{"url": URL, **kw})


def listed(page: str | bytes, items: str, **fields: str) -> list[Any]:
    """The entries of `page` with these `fields` selectors."""
    return entries(page, items=items, fields=fields)


def entries(page: str | bytes, **kw: Any) -> list[Any]:
    body = page.encode() if isinstance(page, str) else page
    return parse_list(body, URL, "text/html", options(**kw), "news").events


def region(page: str, selector: str = "#status") -> Any:
    return read_region(page.encode(), URL, "text/html", selector, "news")


# --- options ---------------------------------------------------------------------


def source_problems(**table: Any) -> list[str]:
    raw = {"id": "news", "kind": "html", "url": URL, **table}
    with pytest.raises(ConfigError) as caught:
        parse_source(raw, "sources[0]", "file")
    return caught.value.problems


def test_a_source_gives_items_or_watch_and_not_both() -> None:
    assert "give items" in source_problems()[0]
    assert "give either items or watch, not both" in source_problems(items="li", watch="main")[0]
    assert options(items="li").watch is None and options(watch="main").items is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("items", "ul >"), ("watch", "#"), ("fields.content_html", "div@id"),
     ("fields.title", "h2[@href"), ("fields.url", "a::before@href"),
     ("fields.published", ":contains(x)")],
)  # fmt: skip
def test_an_invalid_selector_is_a_config_error_naming_the_key(key: str, value: str) -> None:
    table: dict[str, Any] = {key: value}
    if key.startswith("fields."):
        table = {"items": "li", "fields": {key.removeprefix("fields."): value}}
    [problem] = source_problems(**table)
    assert problem.startswith(f"sources[0].{key}: not a valid CSS selector")


def test_fields_are_the_event_fields() -> None:
    [problem] = source_problems(items="li", fields={"link": "a"})
    assert problem == "sources[0].fields.link: unknown key"


def test_list_options_belong_to_items_and_watch_title_to_watch() -> None:
    [problem] = source_problems(watch="main", fields={"title": "h2"}, max_items=5)
    assert "fields, max_items: only with items" in problem
    [problem] = source_problems(items="li", watch_title="Changed")
    assert "watch_title: only with watch" in problem
    assert source_problems(items="li@href")[0].startswith("sources[0].items: not a valid")


@pytest.mark.parametrize("value", [0, MAX_ITEMS + 1])
def test_max_items_is_bounded(value: int) -> None:
    assert source_problems(items="li", max_items=value)[0].startswith("sources[0].max_items:")


def test_a_date_format_must_be_a_strptime_format() -> None:
    assert source_problems(items="li", date_format="%Q")[0].startswith("sources[0].date_format:")
    assert source_problems(items="li", date_format="dd/mm/yyyy")[0].startswith(
        "sources[0].date_format:"
    )
    assert options(items="li", date_format="%d/%m/%Y %H:%M").date_format == "%d/%m/%Y %H:%M"


def test_an_attribute_follows_the_last_at_sign_that_names_one() -> None:
    assert parse_pick("a.title@href") == Pick("a.title", "href")
    assert parse_pick("@data-id") == Pick(None, "data-id")
    assert parse_pick('a[title="x@y.org"]@href') == Pick('a[title="x@y.org"]', "href")
    assert parse_pick('a[href$="@y.org"]') == Pick('a[href$="@y.org"]', None)
    assert parse_pick(r".md\@flex") == Pick(r".md\@flex", None)  # an escaped @ in a class
    assert parse_pick("time") == Pick("time", None)


# --- list mode -------------------------------------------------------------------


def test_entries_take_their_fields_from_selectors_with_links_resolved() -> None:
    first, second = listed(
        NEWS, "li.entry", title="a.title", url="a.title@href", published="time, .when",
        author="a.by", summary="p.lead", content_html="div.body", tags="b, i",
    )  # fmt: skip
    assert first.title == "Merger & more"
    assert first.url == "https://intranet.example/pub/2026/merger.html"  # <base href> counts
    assert first.published == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert (first.actor.name, first.actor.url) == (
        "Jane Doe",
        "https://intranet.example/people/jane",
    )
    assert first.summary == "The merger closed."
    assert first.content_html.startswith('<div class="body">')
    assert "<script>" in first.content_html  # raw: the pipeline sanitises
    assert first.extra == {"content_base": "https://intranet.example/pub/"}
    assert (first.verb, first.object_type, first.external_id) == ("Create", "Article", None)
    assert first.tags == ("merger",) and second.tags == ()
    assert second.title == "Office move" and second.url is None  # javascript: is no link
    assert second.published == datetime(2026, 3, 3, tzinfo=UTC)


def test_defaults_first_line_first_link_first_time_and_the_whole_entry() -> None:
    first, second = entries(NEWS, items="li.entry")
    assert first.title == "Merger & more"
    assert first.url == "https://intranet.example/pub/2026/merger.html"
    assert first.published == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert first.content_html.lstrip().startswith("<h2>") and first.summary == ""
    assert second.title == "Office move" and second.published is None
    # An entry that is itself a link is its own link and title.
    links = entries(NEWS, items="h2 > a")
    assert [(e.title, e.url) for e in links] == [
        ("Merger & more", "https://intranet.example/pub/2026/merger.html"),
        ("Office move", None),
    ]


def test_selectors_match_inside_an_entry_not_the_entry_itself() -> None:
    page = '<div class="e"><div>Inner title</div><a href="/x">x</a></div>'
    [entry] = listed(page, "div.e", title="div")
    assert entry.title == "Inner title"
    [entry] = listed('<a class="e" href="/y" data-id="7">Y</a>', "a.e", id="@data-id")
    assert (entry.external_id, entry.url) == ("7", "https://intranet.example/y")


def test_after_the_pipeline_scripts_are_gone_and_content_links_resolve_against_the_page() -> None:
    found = listed(NEWS, "li.entry", content_html="div.body")
    settled, _ = settle_identities(found, None)
    first, second = (p.data for p in prepare(settled))
    assert "script" not in first.content_html and "steal" not in first.content_html
    assert 'src="https://intranet.example/pub/img/chart.png"' in first.content_html
    assert 'href="https://intranet.example/pub/files/terms.pdf"' in first.content_html
    assert first.external_id == "https://intranet.example/pub/2026/merger.html"
    assert second.external_id.startswith("hash:")  # no link: title and date


def test_dates_in_common_written_forms_and_by_date_format() -> None:
    page = "".join(f"<p><b>{t}</b><i>{d}</i></p>" for t, d in [
        ("a", "2026-03-04"), ("b", "4 March 2026"), ("c", "March 4, 2026"),
        ("d", "Wed, 04 Mar 2026 10:00:00 +0200"), ("e", "04.03.2026"),
    ])  # fmt: skip
    dates = [e.published for e in listed(page, "p", title="b", published="i")]
    assert dates[:3] == [datetime(2026, 3, 4, tzinfo=UTC)] * 3
    assert dates[3] == datetime(2026, 3, 4, 8, 0, tzinfo=UTC)
    assert dates[4] == datetime(2026, 3, 4, tzinfo=UTC)
    page = "<p><b>x</b><i>03/04/2026 17:30</i><u>2026-05-01T00:00Z</u><s>4 May 2026</s></p>"
    fields = {"published": "i", "updated": "u", "tags": "s"}
    [us] = entries(page, items="p", fields=fields, date_format="%m/%d/%Y %H:%M")
    assert us.published == datetime(2026, 3, 4, 17, 30, tzinfo=UTC)
    assert us.updated == datetime(2026, 5, 1, tzinfo=UTC)  # ISO 8601 is never ambiguous
    [uk] = entries(page, items="p", fields={**fields, "published": "s"}, date_format="%d/%m/%Y")
    assert uk.published is None  # with a format, no guessing at written forms


def test_an_items_selector_that_matches_nothing_is_an_error_naming_source_option_and_url() -> None:
    with pytest.raises(ParseError) as caught:
        entries(NEWS, items="ul.articles > li")
    message = str(caught.value)
    assert message.startswith("news: items selector 'ul.articles > li' matched nothing on ")
    assert URL in message and "JavaScript" in message


def test_field_selectors_that_find_nothing_and_unreadable_dates_are_reported() -> None:
    parsed = parse_list(
        NEWS.encode(), URL, "text/html",
        options(items="li.entry", fields={"author": ".writer", "published": ".when"}), "news",
    )  # fmt: skip
    assert len(parsed.events) == 2
    assert parsed.problems == [
        "fields.author selector '.writer' matched nothing in any of the 3 entries"
    ]
    parsed = parse_list(
        b"<p><i>yesterday</i></p><p><i>4 March 2026</i></p>", URL, "",
        options(items="p", fields={"published": "i"}), "news",
    )  # fmt: skip
    assert parsed.problems == ["could not read 1 date(s), e.g. 'yesterday'; set date_format"]


def test_a_page_of_many_entries_is_read_up_to_max_items() -> None:
    page = "<ul>" + "".join(f'<li><a href="/n/{i}">N{i}</a></li>' for i in range(12_000)) + "</ul>"
    started = time.monotonic()
    parsed = parse_list(page.encode(), URL, "text/html", options(items="li"), "news")
    assert len(parsed.events) == 500 and parsed.events[-1].title == "N499"
    assert parsed.problems == ["items matched 12,000 entries; the first 500 were read (max_items)"]
    most = parse_list(page.encode(), URL, "", options(items="li", max_items=MAX_ITEMS), "news")
    assert len(most.events) == MAX_ITEMS and len({e.url for e in most.events}) == MAX_ITEMS
    assert time.monotonic() - started < 30


# --- hostile and broken pages ----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00\xff\xfe garbage <<< >>> &#xffffffff; &bogus;", b"<li><a href=x>open <b><i>",
     b"<table><li><a href='//[x'>bad url</a><td>cell</table></li>", "<li>\ud800</li>".encode(
        "utf-8", "surrogatepass"), b"<li>" + "<a href='/a'>é</a>".encode("utf-16")],
)  # fmt: skip
def test_broken_pages_give_entries_or_a_parse_error_never_a_crash(body: bytes) -> None:
    try:
        found = entries(body, items="li")
    except ParseError as err:
        assert "matched nothing" in str(err)
    else:
        assert all(e.url is None or e.url.startswith("https://") for e in found)
    assert isinstance(region(body.decode("latin-1") + "<main>x</main>", "main").text, str)


def test_a_page_nested_too_deep_is_refused_before_it_is_parsed() -> None:
    started = time.monotonic()
    with pytest.raises(ParseError, match=f"nests elements more than {MAX_DEPTH:,} deep"):
        entries("<div>" * 200_000 + "x", items="div")  # lexbor alone: minutes
    with pytest.raises(ParseError, match="nests"):
        region("<div></span>" * 50_000 + "<main>x</main>", "main")  # stray end tags close nothing
    assert time.monotonic() - started < 5
    # Elements a parser closes itself, raw text and SVG's <x/> are no nesting.
    flat = (
        "<p>x" * 20_000 + "<a name=n>" * 20_000 + "<li>i" * 20_000
        + "<script>" + "<div>" * 5_000 + "</script><svg>" + "<path/>" * 5_000 + "</svg>"
        + "<svg class=icon/>" * 5_000
    )  # fmt: skip
    assert len(entries(flat, items="li")) == 500


def test_encodings_follow_bom_then_http_then_meta_then_utf8_then_windows_1252() -> None:
    text = "<p>Café \u2013 naïve</p>"
    assert decode_html(text.encode("cp1252"), "text/html; charset=windows-1252") == text
    meta = '<meta charset="iso-8859-1">' + text
    assert decode_html(meta.encode("cp1252")) == meta  # Latin-1 means windows-1252
    assert decode_html(text.encode("cp1252")) == text  # not UTF-8, nothing declared
    assert decode_html(text.encode("utf-8"), "text/html; charset=nonsense") == text
    assert decode_html(b"\xff\xfe" + text.encode("utf-16-le"), "charset=iso-8859-1") == text
    assert decode_html(text.encode("utf-8"), "charset=base64") == text  # no text encoding
    tree = parse_page(text.encode("cp1252"), "text/html; charset=windows-1252", URL, "news")
    assert tree.css_first("p") is not None and tree.css_first("p").text() == text[3:-4]


# --- watch mode ------------------------------------------------------------------


def test_readable_text_is_a_line_per_block_without_scripts() -> None:
    tree = parse_page(
        b"<div id=r><h1>Status</h1>Intro<br>second   line<script>no()</script><style>p{}</style>"
        b"<table><tr><th>Service</th><td>Mail</td><td><b>up</b></td></tr></table>"
        b"<pre>one\n  two</pre><ul><li>a</li><li>b <i>c</i></li></ul><p>&nbsp;</p></div>",
        "", URL, "news",
    )  # fmt: skip
    root = tree.css_first("#r")
    assert root is not None
    assert readable_lines(root) == [
        "Status", "Intro", "second line", "Service | Mail | up", "one", "two", "a", "b c",
    ]  # fmt: skip
    assert readable_lines(root, max_lines=2) == ["Status", "Intro"]


def test_a_region_hashes_only_its_own_text() -> None:
    before = region(NEWS)
    assert before.text == "Status\nMail is up" and before.title == "Firm news"
    elsewhere = region(NEWS.replace("Visitors today: 41", "Visitors today: 42"))
    markup = region(NEWS.replace("<b>up</b>", "<strong>up</strong>  \n"))
    assert before.digest == elsewhere.digest == markup.digest
    assert region(NEWS.replace("<b>up</b>", "<b>down</b>")).digest != before.digest


def test_a_selector_matching_several_elements_watches_the_outermost() -> None:
    page = "<div class=n>One<div class=n>Inner</div></div><p>x</p><div class=n>Two</div>"
    assert region(page, "div.n").text == "One\nInner\nTwo"


def test_a_watch_selector_that_matches_nothing_is_an_error_naming_it() -> None:
    with pytest.raises(ParseError, match=r"^news: watch selector '#gone' matched nothing on https"):
        region(NEWS, "#gone")


def test_a_diff_shows_changed_lines_escaped() -> None:
    diff = diff_text("Status\nMail is up\nWeb is up", "Status\nMail is <down>\nWeb is up\nNew")
    assert diff.html == (
        "<pre>  Status\n<del>- Mail is up</del>\n<ins>+ Mail is &lt;down&gt;</ins>\n"
        "  Web is up\n<ins>+ New</ins></pre>"
    )
    assert (diff.added, diff.removed) == (2, 1)
    assert diff.summary == "- Mail is up · + Mail is <down> · + New"


def test_a_long_diff_is_cut_and_a_change_past_the_kept_text_is_said() -> None:
    old = "\n".join(f"line {i}" for i in range(2_000))
    diff = diff_text(old, old.replace("line", "row"))
    rows = diff.html.split("\n")
    assert len(rows) == MAX_DIFF_LINES + 1 and "more lines of diff left out" in rows[-1]
    assert (diff.added, diff.removed) == (2_000, 2_000)
    same = diff_text("a", "a")
    assert f"changed after the first {MAX_WATCH_TEXT:,} characters" in same.html


def test_the_update_event_names_the_page_and_the_change() -> None:
    new = region(NEWS.replace("<b>up</b>", "<b>down</b>"))
    diff = diff_text(region(NEWS).text, new.text)
    opts = options(watch="#status")
    event = change_event(opts, URL, new, diff, NOW)
    assert (event.verb, event.object_type, event.title) == ("Update", "Page", "Firm news changed")
    assert event.summary == "1 line added, 1 removed: - Mail is up · + Mail is down"
    assert event.external_id == f"{URL}##status@{new.digest[:16]}/{NOW.isoformat()}"
    assert (event.url, event.published) == (URL, NOW)
    titled = change_event(options(watch="#status", watch_title="Status page"), URL, new, diff, NOW)
    assert titled.title == "Status page"
    tokened = options(url=f"{URL}?token=s3cret", watch="#status")
    assert "s3cret" not in (change_event(tokened, URL, new, diff, NOW).external_id or "")
    [prepared] = prepare([event])
    assert "<del>" in prepared.data.content_html and "<ins>" in prepared.data.content_html


# --- the shared corpus -----------------------------------------------------------

PAGES = files("intranet/html", "**/*.html")


@pytest.mark.corpus
@pytest.mark.parametrize("path", PAGES, ids=[p.name + ":" + p.parent.name for p in PAGES])
def test_every_corpus_page_reads_as_a_list_and_as_a_region(path: Path) -> None:
    corpus("intranet", "html")
    body = path.read_bytes()
    url = f"http://fakehost/test/{path.parent.name}/page.html"
    tree = parse_page(body, "text/html", url, "corpus")  # never refused: real pages
    anchors = len(tree.css("a"))
    try:
        parsed = parse_list(body, url, "text/html", HtmlOptions(url=url, items="a"), "corpus")
    except ParseError as err:
        assert anchors == 0 and "items selector 'a' matched nothing" in str(err)
    else:
        assert 0 < len(parsed.events) <= min(anchors, 500)
        assert ("max_items" in " ".join(parsed.problems)) == (anchors > 500)
        assert all(
            e.url is None or e.url.startswith(("http://", "https://")) for e in parsed.events
        )
        assert all(e.title or e.url for e in parsed.events)
    watched = "article" if tree.css_first("article") is not None else "body"
    text = read_region(body, url, "text/html", watched, "corpus").text
    lines = text.split("\n") if text else []
    assert all(line and line == " ".join(line.split()) for line in lines)
    body_node = tree.css_first(watched)
    assert body_node is not None
    for node in body_node.css("script, style"):
        node.decompose()
    assert bool(text) == bool(body_node.text(strip=True))


@pytest.mark.corpus
def test_relative_links_on_the_readability_base_pages_resolve_as_a_browser_does() -> None:
    root = corpus("intranet", "html", "mozilla-readability")
    url = "http://fakehost/test/page.html"
    expected = {  # the base links resolve against, and "#foo"'s page
        "base-url": ("http://fakehost/test/", "page.html"),
        "base-url-base-element-relative": ("http://fakehost/test/base/", ""),
    }
    for name, (base, page) in expected.items():
        body = (root / name / "source.html").read_bytes()
        links = [e.url for e in entries_at(body, url)]
        assert links == [
            f"{base}foo/bar/baz.html", f"{base}foo/bar/baz.html",
            "http://fakehost/foo/bar/baz.html", f"{base}{page}#foo", f"{base}baz.html#foo",
            "http://fakehost/foo/bar/baz.html#foo",
            "http://test/foo/bar/baz.html", "https://test/foo/bar/baz.html",
        ]  # fmt: skip


def entries_at(body: bytes, url: str) -> list[Any]:
    return parse_list(body, url, "text/html", HtmlOptions(url=url, items="article a"), "c").events
