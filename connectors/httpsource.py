"""Options every HTTP-fetching kind shares (feed, jsonapi, html), and the
credentials and transport they resolve at each poll.

Credentials are options holding `env:`/`file:` references (aggregator/secrets.py),
resolved at every poll, not at config load, so a rotated secret needs no
restart: a missing secret fails that poll with a message naming the variable
or file, and the value itself never reaches a log or an error.

`auth` picks what username and password are used for: basic (the default),
ntlm, or negotiate (Kerberos, falling back to NTLM; without username and
password, the process's own Kerberos ticket cache). The TLS options name files
on the server (a CA bundle, a client certificate and key): only sources in the
config file may set them (aggregator.config refuses them for web-made sources,
and `transport` again at poll time); relative paths start at the config
file's directory, and each is checked at every poll, so a missing file is
that source's error naming the option. A proxy is an http(s) URL without
credentials; its user and password are options of their own.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from aggregator.connector import ConnectorOptions, PollContext
from aggregator.exceptions import FetchError
from aggregator.secrets import SecretError, SecretRef
from connectors.files import local_path, option_path_problem
from connectors.http import (
    BasicAuth,
    BearerAuth,
    Credentials,
    NegotiateAuth,
    NtlmAuth,
    TransportProfile,
)

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but tab
_BEARER_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces
FILE_OPTIONS = ("ca_bundle", "client_cert", "client_key")  # paths on the server's disk
_CREDENTIAL_HEADERS = {
    "authorization": "use token, or username and password, with an env: or file: reference",
    "proxy-authorization": "use proxy_username and proxy_password (an env: or file: reference)",
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
    auth: Literal["basic", "ntlm", "negotiate"] = Field(
        default="basic",
        description="how username and password are sent: basic, ntlm, or negotiate "
        "(Kerberos with NTLM fallback; without username and password, the server's own "
        "Kerberos tickets, config-file sources only)",
    )
    ca_bundle: str | None = Field(
        default=None,
        description="config-file sources only: PEM file of the CAs to trust, instead of "
        "the system's (relative to the config file)",
    )
    client_cert: str | None = Field(
        default=None,
        description="config-file sources only: PEM client certificate (its key too, unless "
        "client_key is set)",
    )
    client_key: str | None = Field(
        default=None, description="config-file sources only: PEM private key of client_cert"
    )
    client_key_password: SecretRef | None = Field(
        default=None, description="reference to the password of an encrypted client key"
    )
    proxy: str | None = Field(
        default=None, description="http(s)://host:port of an HTTP proxy, without credentials"
    )
    proxy_username: str | None = Field(default=None, description="proxy user name (basic)")
    proxy_password: SecretRef | None = Field(
        default=None, validate_default=True, description="reference to the proxy password"
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
        return _user_name(username)

    @field_validator("password")
    @classmethod
    def _password(cls, password: str | None, info: ValidationInfo) -> str | None:
        return _paired(password, info, "username")

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

    @field_validator("auth")
    @classmethod
    def _auth_scheme(cls, auth: str, info: ValidationInfo) -> str:
        if auth == "basic":
            return auth
        url = info.data.get("url")
        if url is not None and local_path(url) is not None:
            raise _error("only for http(s) URLs")
        if info.data.get("token") is not None:
            raise _error(f"token is a bearer token: {auth} takes username and password")
        if auth == "ntlm" and info.data.get("username") is None:
            raise _error("ntlm needs username and password")
        return auth

    @field_validator(*FILE_OPTIONS)
    @classmethod
    def _file_path(cls, path: str | None, info: ValidationInfo) -> str | None:
        if path is None:
            return None
        if problem := option_path_problem(path):
            raise _error(problem)
        url = info.data.get("url")
        if url is not None and local_path(url) is not None:
            raise _error("only for http(s) URLs")
        if info.field_name == "client_key" and info.data.get("client_cert") is None:
            raise _error("needs client_cert")
        return path

    @field_validator("client_key_password")
    @classmethod
    def _key_password(cls, password: str | None, info: ValidationInfo) -> str | None:
        if password is not None and info.data.get("client_cert") is None:
            raise _error("needs client_cert")
        return password

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, proxy: str | None, info: ValidationInfo) -> str | None:
        if proxy is None:
            return None
        try:
            parts = urlsplit(proxy)
            parts.port  # noqa: B018 - raises ValueError when out of range or not a number
        except ValueError:
            raise _error("not a valid URL") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise _error("must be http://host:port or https://host:port")
        if "@" in parts.netloc:
            raise _error(
                "credentials do not belong in the proxy URL: use proxy_username and proxy_password"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise _error("must be just http(s)://host:port, without a path")
        url = info.data.get("url")
        if url is not None and local_path(url) is not None:
            raise _error("only for http(s) URLs")
        return proxy

    @field_validator("proxy_username")
    @classmethod
    def _proxy_username(cls, username: str | None, info: ValidationInfo) -> str | None:
        if _user_name(username) is None:
            return None
        if info.data.get("proxy") is None:
            raise _error("needs proxy")
        return username

    @field_validator("proxy_password")
    @classmethod
    def _proxy_password(cls, password: str | None, info: ValidationInfo) -> str | None:
        return _paired(password, info, "proxy_username")


def _user_name(username: str | None) -> str | None:
    if username is not None and (not username or ":" in username or not username.isprintable()):
        raise _error("must be non-empty, printable and without ':'")
    return username


def _paired(password: str | None, info: ValidationInfo, user_key: str) -> str | None:
    """A password goes with its user name (`user_key`), both or neither.
    (A user name that failed its own check is not in info.data: no second error.)"""
    username = info.data.get(user_key)
    if password is None and username is not None:
        raise _error(f"required when {user_key} is set")
    if password is not None and username is None and user_key in info.data:
        raise _error(f"needs {user_key}")
    return password


async def credentials(opts: HttpSourceOptions, ctx: PollContext) -> Credentials | None:
    """The source's credentials, resolved now."""
    if opts.token is not None:
        token = await ctx.secret(opts.token)
        if not _BEARER_TOKEN.fullmatch(token):
            raise SecretError(f"token {opts.token}: not printable ASCII without spaces")
        return BearerAuth(token)
    password = await ctx.secret(opts.password) if opts.password is not None else None
    if opts.auth == "negotiate":
        if opts.username is None and ctx.web_made:  # parse_source refuses it too
            raise SecretError(
                "auth = negotiate without username and password uses the server's own "
                "credentials: only sources in the config file may do that"
            )
        return NegotiateAuth(opts.username, password)
    if opts.username is not None and password is not None:
        if opts.auth == "ntlm":
            return NtlmAuth(opts.username, password)
        return BasicAuth(opts.username, password)
    return None


def _file_versions(paths: dict[str, Path], source_id: str) -> tuple[tuple[int, int], ...]:
    versions = []
    for name, path in paths.items():
        try:
            info = path.stat()
        except OSError as err:
            reason = "no such file" if isinstance(err, FileNotFoundError) else err.strerror
            raise FetchError(f"{name} {path} of source {source_id}: {reason or err}") from None
        if not path.is_file():
            raise FetchError(f"{name} {path} of source {source_id}: not a file")
        versions.append((info.st_mtime_ns, info.st_size))
    return tuple(versions)


async def transport(opts: HttpSourceOptions, ctx: PollContext) -> TransportProfile | None:
    """The source's CA bundle, client certificate and proxy, checked now
    (None when it sets none of them)."""
    named = {name: value for name in FILE_OPTIONS if (value := getattr(opts, name)) is not None}
    if not named and opts.proxy is None:
        return None
    if named and ctx.web_made:  # parse_source refuses them too
        raise FetchError(
            f"{', '.join(named)}: sources made in the web admin may not name files on the server"
        )
    paths = {name: (ctx.base_dir / value).resolve() for name, value in named.items()}
    versions = await asyncio.to_thread(_file_versions, paths, ctx.source_id)
    key_password = proxy_password = None
    if opts.client_key_password is not None:
        key_password = await ctx.secret(opts.client_key_password)
    if opts.proxy_password is not None:
        proxy_password = await ctx.secret(opts.proxy_password)
    return TransportProfile(
        ca_bundle=paths.get("ca_bundle"),
        client_cert=paths.get("client_cert"),
        client_key=paths.get("client_key"),
        client_key_password=key_password,
        proxy=opts.proxy,
        proxy_username=opts.proxy_username,
        proxy_password=proxy_password,
        files_version=versions,
    )


async def request_args(opts: HttpSourceOptions, ctx: PollContext) -> dict[str, Any]:
    """The keyword arguments of Fetcher.request that come from the source's
    options: its headers, credentials, address rules and transport."""
    return {
        "headers": opts.headers,
        "auth": await credentials(opts, ctx),
        "allow_link_local": opts.allow_link_local,
        "transport": await transport(opts, ctx),
    }


def refuse_web_link_local(opts: HttpSourceOptions, ctx: PollContext) -> None:
    """Defence in depth: a source made in the web admin with allow_link_local
    should not have been saved at all; if one was, it does not poll."""
    if opts.allow_link_local and ctx.web_made:
        raise FetchError(
            "allow_link_local: sources made in the web admin may not reach "
            "link-local addresses; define the source in the config file"
        )
