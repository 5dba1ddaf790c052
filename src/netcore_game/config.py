"""netcore-server's configuration: a TOML file, overridden by command-line flags.

Every key of the file is a field of ServerConfig with `_` or `-` (both are
accepted), at the top level or under a `[server]` table:

    port = 7777
    db = "/var/lib/netcore/game.db"
    max-sessions = 20000

An unknown key or a value of the wrong type is an error that names the key,
so a typo never silently leaves a limit at its default.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:                                   # the stdlib gained tomllib in 3.11
    import tomli as tomllib

from netcore_game.server import ServerConfig


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and key."""


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(ServerConfig)}


def _coerce(path: Path, key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    if default is None:             # optional strings such as loop
        kind = str
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise ConfigError(f"{path}: {key} must be {kind.__name__}, not {type(value).__name__} "
                          f"({value!r})")
    return value


def load_file(path: str | Path) -> dict[str, Any]:
    """The settings a TOML file makes, as ServerConfig field names and values."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if isinstance(data.get("server"), dict):
        data = {**{k: v for k, v in data.items() if k != "server"}, **data["server"]}
    fields = _fields()
    values = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key not in fields:
            raise ConfigError(f"{path}: unknown setting {raw_key!r}; known: "
                              f"{', '.join(sorted(k.replace('_', '-') for k in fields))}")
        values[key] = _coerce(path, raw_key, value, fields[key].default)
    return values


def build(file_values: dict[str, Any], flag_values: dict[str, Any]) -> ServerConfig:
    """Defaults, then the file, then the flags that were given."""
    return ServerConfig(**{**file_values, **flag_values})


def render(config: ServerConfig) -> str:
    """The effective configuration as TOML that load_file reads back."""
    lines = ["[server]"]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:
            continue
        key = f.name.replace("_", "-")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
