"""Every setting and every command is documented (a datasette habit)."""

from pathlib import Path

from pydantic import BaseModel

from aggregator.cli import build_parser
from aggregator.config import _TABLES, SourceCommon
from aggregator.registry import connector_kinds
from connectors.feed import FeedOptions
from connectors.mapping import preset_names

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_config_key_is_in_configuration_md() -> None:
    text = (DOCS / "configuration.md").read_text()
    for table, model in _TABLES.items():
        assert f"`[{table}]`" in text
        for key in model.model_fields:
            assert f"| `{key}` |" in text, f"[{table}] {key} is not documented"
    for model in (SourceCommon, FeedOptions):
        for key in model.model_fields:
            assert f"| `{key}` |" in text, f"source key {key} is not documented"


def test_every_option_of_every_built_in_kind_and_every_preset_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text() + (DOCS / "connectors.md").read_text()
    for kind, cls in connector_kinds().items():
        if not cls.__module__.startswith("connectors."):
            continue
        for key, info in cls.Options.model_fields.items():
            types = (info.annotation, *getattr(info.annotation, "__args__", ()))
            tables = [t for t in types if isinstance(t, type) and issubclass(t, BaseModel)]
            if not tables:
                assert f"`{key}`" in text, f"{kind} option {key} is not documented"
            for sub in (sub for table in tables for sub in table.model_fields):
                assert f"`{key}.{sub}`" in text, f"{kind} option {key}.{sub} is not documented"
    for kind in ("jsonapi", "webhook"):
        for name in preset_names(kind):
            assert f"| {kind} | `{name}` |" in text, f"{kind} preset {name} is not documented"


def test_every_command_is_in_the_readme() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert f"tidings {name}" in readme, f"`tidings {name}` is not in README.md"
