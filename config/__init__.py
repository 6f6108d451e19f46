"""Typed settings for a feedback station: loaded from TOML (`config.loader.load_settings`),
overridden by VMF_* variables. Nothing is imported here, so that `config.names` (what the command
line needs before settings load) stays free of pydantic."""
