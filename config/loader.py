"""Load `Settings` from TOML and VMF_* environment variables, with errors a person can act on."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from config.names import ConfigError
from config.settings import Settings

__all__ = ["ConfigError", "load_settings"]  # ConfigError lives in config.names

DEFAULT_TOML = Path(__file__).with_name("default.toml")
ENV_PREFIX = "VMF_"


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    protocol: str | None = None,
) -> Settings:
    """Defaults ← default.toml ← the user's file ← the protocol file (config/protocols/NAME.toml)
    ← VMF_SECTION__FIELD variables ← overrides."""
    tree: dict[str, Any] = _read_toml(DEFAULT_TOML)
    user: dict[str, Any] = {}  # what the user set, on top of the documented defaults
    if path is not None:
        _merge(user, _read_toml(Path(path)))
    if protocol is not None:
        from config.protocols import ProtocolError, read_protocol

        try:
            _merge(user, read_protocol(protocol))
        except ProtocolError as exc:
            raise ConfigError(str(exc)) from None
    _merge(user, _env_tree(os.environ if environ is None else environ))
    if overrides:
        _merge(user, _nest(overrides))
    _merge(tree, user)
    try:
        settings = Settings.model_validate(tree)
        return _simulated_patient_follows_protocol(settings, tree, user.get("simulator", {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _simulated_patient_follows_protocol(
    settings: Settings, tree: dict[str, Any], scripted: Mapping[str, Any]
) -> Settings:
    """Unless the user scripted the simulator, it does the protocol's work periods at the
    band's centre, so that any protocol can be tried on `sim` and gives reps."""
    from config.protocols import SCRIPT_LEVEL, SCRIPT_TIMING, simulator_script

    derived = simulator_script(settings.protocol, settings.target)
    keep = set(scripted)
    for group in (SCRIPT_TIMING, SCRIPT_LEVEL):
        if group & keep:
            keep |= group  # one timing key set by hand: the whole timing is the user's
    follow = {k: v for k, v in derived.items() if k not in keep}
    if not follow:
        return settings
    tree["simulator"] = {**tree.get("simulator", {}), **follow}
    return Settings.model_validate(tree)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; a Latin-1 file fails here, not in tomllib
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}); TOML must be UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None


def _env_tree(environ: Mapping[str, str]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        dotted = key[len(ENV_PREFIX) :].lower().replace("__", ".")
        flat[dotted] = _parse_env_value(raw)
    return _nest(flat)


def _parse_env_value(raw: str) -> Any:
    # A value is read as TOML when it is one (numbers, booleans, arrays), else as a plain string,
    # so VMF_TARGET__LOW_PCT=35 is a number and VMF_SESSION__STATION=bay-2 a string.
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for depth, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                # e.g. VMF_TARGET__LOW_PCT=35 and VMF_TARGET__LOW_PCT__X=1: a value and a section
                where = ".".join(parents[: depth + 1])
                raise ConfigError(f"{dotted}: {where} is set to a value, so it has no fields")
        if isinstance(node.get(leaf), dict) and not isinstance(value, Mapping):
            raise ConfigError(f"{dotted}: a section, cannot be set to a value ({value!r})")
        node[leaf] = value
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        lines.append(f"{field}{shown}: {err['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
