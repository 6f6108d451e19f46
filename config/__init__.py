"""Typed settings for a feedback station: loaded from TOML, overridden by VMF_* variables."""

from config.loader import ConfigError, load_settings
from config.settings import Settings

__all__ = ["ConfigError", "Settings", "load_settings"]
