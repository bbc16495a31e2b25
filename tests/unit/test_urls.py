"""aggregator.urls: what of a URL is shown to people, in one implementation."""

from __future__ import annotations

import pytest

import connectors.http
from aggregator.urls import carries_secrets, redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://bob:s3cret@host/feed?token=x", "https://host/feed?…"),
        ("https://bob@host:8443/feed#top", "https://host:8443/feed"),
        ("http://[::1]:8080/f?k=v", "http://[::1]:8080/f?…"),
        ("ftp://bob:s3cret@host/f", "ftp://host/f"),
        ("file:///etc/passwd", "file:///etc/passwd"),
        ("https://bob:s3cret@host:port/f", "(malformed URL)"),  # a port that is no number
        ("http://[::1/f", "(malformed URL)"),
    ],
)
def test_redact_hides_userinfo_and_query(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_the_fetcher_uses_the_same_redact() -> None:
    assert connectors.http.redact is redact


def test_carries_secrets_means_what_redact_hides() -> None:
    assert carries_secrets("https://e.org/f?token=x")
    assert carries_secrets("https://bob@e.org/f")
    assert carries_secrets("https://bob:pw@e.org/f")
    assert not carries_secrets("https://e.org/f#top")
    assert not carries_secrets("http://[::1/f")  # malformed: nothing to hide, nothing written
