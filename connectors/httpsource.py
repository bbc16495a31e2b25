"""Options every HTTP-fetching kind shares (feed, jsonapi, html), and the
credentials they resolve at each poll.

Credentials are options holding `env:`/`file:` references (aggregator/secrets.py),
resolved at every poll, not at config load, so a rotated secret needs no
restart: a missing secret fails that poll with a message naming the variable
or file, and the value itself never reaches a log or an error.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from aggregator.connector import ConnectorOptions, PollContext
from aggregator.secrets import SecretError, SecretRef
from connectors.files import local_path
from connectors.http import BasicAuth, BearerAuth, Credentials

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but tab
_BEARER_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces
_CREDENTIAL_HEADERS = {
    "authorization": "use token, or username and password, with an env: or file: reference",
    "proxy-authorization": "proxies are not configured per source",
    "cookie": "headers are shown as plain text; use token, or username and password",
    "host": "the Host header comes from url",
}


def _error(message: str) -> PydanticCustomError:
    # The input is never part of the message: it may be a pasted secret.
    return PydanticCustomError("http_option", message)


class HttpSourceOptions(ConnectorOptions):
    """What every kind that fetches over HTTP takes: the URL, extra headers,
    and credentials as `env:`/`file:` references."""

    model_config = ConfigDict(hide_input_in_errors=True)  # inputs may be pasted secrets

    url: str = Field(description="http(s) URL, or a file: URL / path for config-file sources")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="extra request headers; shown as plain text, so not for secrets",
    )
    username: str | None = Field(default=None, description="HTTP basic auth user name")
    password: SecretRef | None = Field(
        default=None, validate_default=True, description="HTTP basic auth password reference"
    )
    token: SecretRef | None = Field(
        default=None, validate_default=True, description="bearer token reference"
    )
    allow_link_local: bool = Field(
        default=False,
        description="config-file sources only: may reach link-local and cloud-metadata "
        "addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254), refused otherwise",
    )

    @field_validator("url")
    @classmethod
    def _no_userinfo(cls, url: str) -> str:
        if local_path(url) is None and "@" in urlsplit(url).netloc:
            raise _error("credentials do not belong in the URL: use username and password")
        return url

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise _error(f"{name!r} is not a valid header name")
            if name.lower() in _CREDENTIAL_HEADERS:
                raise _error(f"{name} cannot be set here: {_CREDENTIAL_HEADERS[name.lower()]}")
            if _BAD_HEADER_VALUE.search(value):
                raise _error(f"the value of {name} contains a line break or control character")
        return headers

    @field_validator("username")
    @classmethod
    def _username(cls, username: str | None) -> str | None:
        if username is not None and (not username or ":" in username or not username.isprintable()):
            raise _error("must be non-empty, printable and without ':'")
        return username

    @field_validator("password")
    @classmethod
    def _password(cls, password: str | None, info: ValidationInfo) -> str | None:
        username = info.data.get("username")
        if password is None and username is not None:
            raise _error("required when username is set")
        if password is not None and username is None and "username" in info.data:
            raise _error("needs username")
        return password

    @field_validator("token")
    @classmethod
    def _token(cls, token: str | None, info: ValidationInfo) -> str | None:
        if token is not None and (info.data.get("username") or info.data.get("password")):
            raise _error("give either token or username and password, not both")
        return token

    @field_validator("username", "token")
    @classmethod
    def _network_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        url = info.data.get("url")
        if value is not None and url is not None and local_path(url) is not None:
            raise _error("only for http(s) URLs")
        return value

    @field_validator("allow_link_local")
    @classmethod
    def _network_flag(cls, value: bool, info: ValidationInfo) -> bool:
        url = info.data.get("url")
        if value and url is not None and local_path(url) is not None:
            raise _error("only for http(s) URLs")
        return value


async def credentials(opts: HttpSourceOptions, ctx: PollContext) -> Credentials | None:
    """The source's credentials, resolved now."""
    if opts.token is not None:
        token = await ctx.secret(opts.token)
        if not _BEARER_TOKEN.fullmatch(token):
            raise SecretError(f"token {opts.token}: not printable ASCII without spaces")
        return BearerAuth(token)
    if opts.username is not None and opts.password is not None:
        password = await ctx.secret(opts.password)
        return BasicAuth(opts.username, password)
    return None


async def request_args(opts: HttpSourceOptions, ctx: PollContext) -> dict[str, Any]:
    """The keyword arguments of Fetcher.request that come from the source's
    options: its headers, credentials and address rules."""
    return {
        "headers": opts.headers,
        "auth": await credentials(opts, ctx),
        "allow_link_local": opts.allow_link_local,
    }
