"""Where the shared real-world corpus is: `TIDINGS_CORPUS` (set by .ci/run),
else `../shared/corpus` beside the checkout.

The corpus is other people's files (licences in its SOURCES.md); tests read it
in place and never copy it into the repo. When the variable is set and the
directory is missing, a test fails; when it is unset and nothing is beside the
checkout (a fresh clone alone), the test skips and says why.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "TIDINGS_CORPUS"
BESIDE = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def root() -> Path | None:
    """The corpus directory, or None when it is absent (at collection time)."""
    configured = os.environ.get(ENV)
    path = Path(configured) if configured else BESIDE
    return path if path.is_dir() else None


def corpus(*parts: str) -> Path:
    """A path inside the corpus, for use inside a test: fails when TIDINGS_CORPUS
    names a missing directory, skips (with the reason) when it is unset and
    there is no corpus beside the checkout."""
    configured = os.environ.get(ENV)
    found = root()
    if found is None:
        if configured:
            pytest.fail(f"{ENV}={configured} is not a directory")
        pytest.skip(f"the shared corpus is absent: set {ENV} or put it at {BESIDE}")
    path = found.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} is missing from the corpus")
    return path


def files(area: str, pattern: str) -> list[Path]:
    """Files matching `pattern` under corpus/`area`, sorted ([] when absent):
    for parametrising at collection time; pair with a call to corpus()."""
    found = root()
    return sorted((found / area).glob(pattern)) if found else []
