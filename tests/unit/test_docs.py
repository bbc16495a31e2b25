"""Every setting and every command is documented (a datasette habit)."""

from pathlib import Path

from aggregator.cli import build_parser
from aggregator.config import _TABLES, SourceCommon
from connectors.feed import FeedOptions

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


def test_every_command_is_in_the_readme() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert f"tidings {name}" in readme, f"`tidings {name}` is not in README.md"
