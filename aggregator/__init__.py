"""Tidings: one calm, live stream of what happens around you."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tidings")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

PROJECT_URL = "https://github.com/tidings/tidings"
