"""A server's configuration: defaults, a TOML file, the environment, flags.

Every key of the file is a field of the game's configuration (ServerConfig or
its game's subclass; `cls` below, ServerConfig by default) with `_` or `-`
(both are accepted), at the top level or under a `[server]` table (not both):

    port = 7777
    db = "/var/lib/netcore/game.db"
    max-sessions = 20000

Every setting can also be given as an environment variable NETCORE_<NAME>
(NETCORE_MAX_SESSIONS=20000), and as a flag (--max-sessions 20000); later
wins: default < file < environment < flag. An unknown key, a value of the
wrong type or one out of its range is an error that names the setting as it
was given, so a typo never silently leaves a limit at its default.
"""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from netcore_server.config import ServerConfig
from netcore_server.settings import (
    DEFAULT,
    ConfigError,
    Origin,
    checked,
    fields_of,
    from_text,
    from_toml,
    key_of,
    texts_from_environment,
)

__all__ = ["ConfigError", "Origin", "build", "load_file", "render", "resolve"]


def load_file(path: str | Path, cls: type = ServerConfig) -> dict[str, Any]:
    """The settings a TOML file makes, as field names of `cls` and values."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:       # TOML is UTF-8
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 at byte {exc.start}") from None
    entries = [(k, v, "at the top level") for k, v in data.items() if k != "server"]
    if isinstance(data.get("server"), dict):
        entries += [(k, v, "under [server]") for k, v in data["server"].items()]
    elif "server" in data:
        entries.append(("server", data["server"], "at the top level"))
    fields = fields_of(cls)
    origin = Origin("file", str(path))
    values, seen = {}, {}
    for raw_key, value, place in entries:
        key = raw_key.replace("-", "_")
        if key not in fields:
            raise ConfigError(f"{path}: unknown setting {raw_key!r}; known: "
                              f"{', '.join(sorted(key_of(k) for k in fields))}")
        if key in seen:
            raise ConfigError(f"{path}: {key_of(key)} is set twice ({seen[key]} and {raw_key} "
                              f"{place}): keep one")
        seen[key] = f"{raw_key} {place}"
        values[key] = from_toml(fields[key], value, origin)
    return values


def build(file_values: dict[str, Any], flag_values: dict[str, Any],
          cls: type = ServerConfig) -> ServerConfig:
    """Defaults, then the file, then the flags that were given."""
    return cls(**{**file_values, **flag_values})


def resolve(file_values: dict[str, Any], env_texts: dict[str, str],
            flag_texts: dict[str, str], file_path: str | None = None,
            cls: type = ServerConfig) -> tuple[ServerConfig, dict[str, Origin]]:
    """The effective, checked configuration and the origin of each of its values,
    from the file's values and the texts of environment variables and flags
    (by field name).

    Each value is checked against its field's metadata first, so that an error
    names it as given; then the configuration's validate() checks how values
    combine."""
    fields = fields_of(cls)
    origins = {name: DEFAULT for name in fields}
    file_origin = Origin("file", str(file_path or ""))
    values: dict[str, Any] = dict(file_values)
    origins.update({name: file_origin for name in file_values})
    for kind, texts in (("env", env_texts), ("flag", flag_texts)):
        for name, text in texts.items():
            origins[name] = Origin(kind, text=text)
            values[name] = from_text(fields[name], text, origins[name])
    config = checked(cls(**values), origins)
    try:
        config.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return config, origins


def env_texts(environ, cls: type = ServerConfig) -> dict[str, str]:
    """The NETCORE_<NAME> environment variables that set a field of `cls`."""
    return texts_from_environment(cls, environ)


# A TOML basic string may hold no control character (tab aside): each is
# written as \uXXXX (tab too), the backslash and the quote escaped.
_TOML_ESCAPES = {**{c: f"\\u{c:04x}" for c in (*range(0x20), 0x7F)},
                 ord("\\"): "\\\\", ord('"'): '\\"'}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).translate(_TOML_ESCAPES) + '"'


def render(config: ServerConfig, origins: dict[str, Origin] | None = None,
           notes: dict[str, str] | None = None) -> str:
    """The effective configuration as TOML that load_file reads back; with
    `origins`, each line ends in a comment saying where its value came from
    (and `notes`, by field, anything more, such as how the loop was chosen)."""
    lines = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:
            continue
        line = f"{key_of(f.name)} = {_toml_value(value)}"
        if origins is not None:
            comment = origins.get(f.name, DEFAULT).describe()
            if notes and f.name in notes:
                comment += f": {notes[f.name]}"
            line = f"{line:<40} # {comment}"
        lines.append(line)
    return "[server]\n" + "\n".join(lines) + "\n"
