"""Secret references: options say where a secret lives, never what it is.

A secret option (a feed's bearer token, an IMAP password) holds `env:NAME` or
`file:PATH`. Config files get committed, pasted into tickets and shown in the
admin UI; a reference is safe in all three, a pasted password is not. The value
is read only when a poll needs it (`resolve_secret`), so it never sits in a
validated config, in the store or in an error message, and rotating a secret
needs no restart.

How a connector declares one: annotate the option as `SecretRef` (or
`SecretRef | None`). The type carries a marker in its `Annotated` metadata that
does two things:

- `is_secret_field(Options, name)` is true for that option, so the web admin
  renders it as a reference input ("env:… or file:…") and never resolves it;
- the option's JSON schema gets `"secret": true`, for anything that builds
  forms from `Options.model_json_schema()`.

A refused value is never echoed: the validation message is fixed, and options
models holding secrets should set `hide_input_in_errors=True` so `str()` of a
pydantic ValidationError does not print the input either.
"""

from __future__ import annotations

import os
import re
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from aggregator.exceptions import ConnectorError

REF_MESSAGE = "must be env:NAME or file:PATH, never the secret itself"
MAX_SECRET_FILE_BYTES = 64 * 1024  # a secret is small; /dev/zero or a log file is not
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SecretError(ConnectorError):
    """A secret reference could not be resolved. The message names the
    reference (the variable or the file), never the value."""


class _SecretMarker:
    """Marks a type as a secret reference: for `is_secret_field` and the JSON schema."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["secret"] = True
        return schema

    def __repr__(self) -> str:
        return "SECRET"


SECRET = _SecretMarker()


def _env_name(ref: str) -> str | None:
    name = ref.removeprefix("env:")
    return name if ref.startswith("env:") and _ENV_NAME.fullmatch(name) else None


def _file_path(ref: str) -> str | None:
    path = ref.removeprefix("file:")
    ok = ref.startswith("file:") and path.strip() and "\0" not in path
    return path if ok else None


def is_secret_ref(value: str) -> bool:
    """True for `env:NAME` and `file:PATH` (what `SecretRef` accepts)."""
    return _env_name(value) is not None or _file_path(value) is not None


def _check_ref(value: str) -> str:
    if not is_secret_ref(value):
        # A custom error, not ValueError: its message is exactly this, with no
        # "Value error," prefix and, above all, without the (secret) input.
        raise PydanticCustomError("secret_ref", REF_MESSAGE)
    return value


SecretRef = Annotated[str, AfterValidator(_check_ref), SECRET]
"""An option that names where a secret lives: `env:NAME` or `file:PATH`."""


def _marked(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        return any(m is SECRET for m in metadata) or _marked(base)
    if get_origin(annotation) in (Union, types.UnionType, list, tuple, dict):
        return any(_marked(arg) for arg in get_args(annotation))
    return False


def is_secret_field(model: type[BaseModel], name: str) -> bool:
    """Whether option `name` of `model` holds secret references (`SecretRef`,
    `SecretRef | None`, or a container of them)."""
    field = model.model_fields.get(name)
    if field is None:
        return False
    return any(m is SECRET for m in field.metadata) or _marked(field.annotation)


WEB_ENV_PREFIX = "TIDINGS_SECRET_"
WEB_REF_MESSAGE = (
    f"sources made in the web admin may only use env:{WEB_ENV_PREFIX}* references "
    "(the server's other variables and files are not for admins to send away)"
)


def web_ref_allowed(ref: str) -> bool:
    """Whether a source made in the web admin may use `ref`. An admin is not
    the server's operator: letting them name any variable or file would let
    them send the server's secrets to a URL of their choosing. The operator
    exports what admins may use as `TIDINGS_SECRET_*`."""
    name = _env_name(ref)
    return name is not None and name.startswith(WEB_ENV_PREFIX)


def resolve_secret(ref: str, base_dir: Path, *, web_made: bool = False) -> str:
    """The secret `ref` names, stripped of surrounding whitespace (files end in
    a newline). A relative file path starts at `base_dir`, the config file's
    directory. Raises SecretError naming the reference, never the value.
    `web_made` applies the narrower rule of `web_ref_allowed`."""
    if web_made and not web_ref_allowed(ref):
        raise SecretError(WEB_REF_MESSAGE)
    name = _env_name(ref)
    if name is not None:
        value = os.environ.get(name)
        if value is None:
            raise SecretError(f"environment variable {name} is not set")
        if not value.strip():
            raise SecretError(f"environment variable {name} is empty")
        return value.strip()
    path_text = _file_path(ref)
    if path_text is None:
        raise SecretError(f"not a secret reference: {REF_MESSAGE}")
    path = base_dir / path_text
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SECRET_FILE_BYTES + 1)  # the file may be a pipe or huge
    except OSError as err:
        raise SecretError(f"cannot read secret file {path}: {err.strerror or err}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise SecretError(f"secret file {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretError(f"secret file {path} is not UTF-8 text") from None
    if not value:
        raise SecretError(f"secret file {path} is empty")
    return value
