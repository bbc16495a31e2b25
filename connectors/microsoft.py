"""Microsoft 365 access tokens for IMAP XOAUTH2 (issue 12): the OAuth 2
client-credentials flow against Microsoft Entra ID, through MSAL.

An app registration with the IMAP.AccessAsApp permission, its client secret,
and a service principal that Exchange Online lets into the mailbox: no user
signs in. MSAL is an optional extra (`pip install 'tidings[microsoft]'`),
imported only when a source uses it.

One ConfidentialClientApplication per (authority, client_id) lives as long as
the process: its token cache is what turns a poll a minute into about one
token request an hour. MSAL blocks (it uses requests), so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from aggregator.exceptions import ConnectorError
from aggregator.secrets import SecretRef

DEFAULT_AUTHORITY = "https://login.microsoftonline.com/{tenant}"
DEFAULT_SCOPE = "https://outlook.office365.com/.default"
INSTALL_HINT = "pip install 'tidings[microsoft]'"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a tenant GUID or domain, a client id


def _error(message: str) -> PydanticCustomError:
    return PydanticCustomError("microsoft_option", message)


class MicrosoftOptions(BaseModel):
    """`[sources.microsoft]` in an imap source: where the token comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    tenant: str = Field(
        description="the Entra ID tenant: its ID (a GUID) or a domain such as "
        "contoso.onmicrosoft.com"
    )
    client_id: str = Field(description="the app registration's application (client) ID")
    client_secret: SecretRef = Field(description="the app's client secret (reference)")
    authority: str | None = Field(
        default=None,
        description="config-file sources only: the token issuer, default "
        "https://login.microsoftonline.com/<tenant> (another for national clouds)",
    )
    scope: str = Field(default=DEFAULT_SCOPE, description="the scope the token is for")

    @field_validator("tenant", "client_id")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise _error("must be an ID or a domain name (letters, digits, '.', '-', '_')")
        return value

    @field_validator("authority")
    @classmethod
    def _authority(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if (
            parts.scheme != "https"
            or not parts.hostname
            or parts.username is not None
            or parts.query
            or parts.fragment
            or not parts.path.strip("/")
        ):
            raise _error("must be an https URL naming the tenant, e.g. https://host/<tenant>")
        return url.rstrip("/")

    @field_validator("scope")
    @classmethod
    def _scope(cls, scope: str) -> str:
        if not scope.strip() or any(c.isspace() for c in scope):
            raise _error("must be one scope, e.g. https://outlook.office365.com/.default")
        return scope

    @property
    def effective_authority(self) -> str:
        return self.authority or DEFAULT_AUTHORITY.format(tenant=self.tenant)


_apps: dict[tuple[str, str], tuple[str, Any]] = {}  # -> (digest of the secret, the app)
_apps_lock = threading.Lock()


def _app(opts: MicrosoftOptions, secret: str, timeout: float) -> Any:
    """The application for this authority and client, built once (a rotated
    secret builds a new one). Building it fetches the OpenID configuration."""
    try:
        import msal
    except ImportError:
        raise ConnectorError(f"the microsoft option needs MSAL: {INSTALL_HINT}") from None
    key = (opts.effective_authority, opts.client_id)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    with _apps_lock:
        known = _apps.get(key)
        if known is not None and known[0] == digest:
            return known[1]
        app = msal.ConfidentialClientApplication(
            opts.client_id,
            client_credential=secret,
            authority=opts.effective_authority,
            # No call to Microsoft's instance discovery: the authority is the
            # default or one the operator wrote in the config file.
            instance_discovery=False,
            timeout=timeout,
        )
        _apps[key] = (digest, app)
        return app


def _acquire(opts: MicrosoftOptions, secret: str, timeout: float) -> dict[str, Any]:
    result: dict[str, Any] = _app(opts, secret, timeout).acquire_token_for_client(
        scopes=[opts.scope]
    )
    return result


async def access_token(
    opts: MicrosoftOptions, secret: str, where: str, request_timeout: float
) -> str:
    """An access token for `opts.scope`, from MSAL's cache while it is valid.
    Failures become a ConnectorError naming `where`, never the secret."""
    try:
        result = await asyncio.to_thread(_acquire, opts, secret, request_timeout)
    except ConnectorError as err:
        raise ConnectorError(f"{where}: {err}") from None
    except (ValueError, KeyError, OSError) as err:  # MSAL's checks; requests' are OSErrors
        text = _scrub(str(err) or type(err).__name__, secret)
        raise ConnectorError(f"{where}: no token from {opts.effective_authority}: {text}") from None
    token = result.get("access_token")
    if isinstance(token, str) and token:
        return token
    error = str(result.get("error") or "no access_token in the answer")
    description = str(result.get("error_description") or "").strip().splitlines()
    detail = f"{error}: {description[0]}" if description else error
    raise ConnectorError(
        f"{where}: {opts.effective_authority} refused the token request for client "
        f"{opts.client_id}: {_scrub(detail, secret)}"
    )


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text
