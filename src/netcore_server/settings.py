"""Settings: the checks on each configuration value, and where each value came from.

A configuration is a dataclass (netcore_server.ServerConfig, or a game's
subclass of it); each field is one setting. Its checks and its help live in
the field's metadata (`setting(default, min=..., choices=..., help=...)`), so
a new field is a flag, a key of the TOML file and an environment variable,
parsed, checked and printed with its origin, without any change here or in
the command line. Values come from, later winning:

    default < file (--config TOML) < env (NETCORE_<NAME>) < flag (--<name>)

A bad value is a ConfigError whose one line names the setting as it was given
(`--max-sessions -5: must be >= 1`, `NETCORE_LOOP=tokio: must be one of ...`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

ENV_PREFIX = "NETCORE_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(Exception):
    """A value cannot be used; the message is one line that names the setting."""


def setting(default: Any, *, min: float | None = None, max: float | None = None,
            choices: tuple | None = None, normalize: Callable[[Any], Any] | None = None,
            parse: Callable[[str], Any] | None = None, help: str = "", flag: bool = True,
            metavar: str | None = None, shown_default: str | None = None):
    """A dataclass field with its checks: bounds for a number, choices for a
    string (None is always allowed where it is the default), a normalize
    step applied before the checks (str.upper for case-insensitive choices),
    and how a flag's or variable's text becomes a value (default: the type's).

    help: what `--help` says of its flag (the default is added); flag=False
    makes it a key of the file and the environment only (a secret, say, which
    a command line would show to every user of the machine in `ps`);
    metavar and shown_default: how --help shows its value and its default,
    where the type's spelling would not do."""
    return dataclasses.field(default=default, metadata={
        "min": min, "max": max, "choices": choices, "normalize": normalize, "parse": parse,
        "help": help, "flag": flag, "metavar": metavar, "shown_default": shown_default})


def key_of(name: str) -> str:
    """The spelling a user sees in files, flags and output: max_sessions -> max-sessions."""
    return name.replace("_", "-")


def env_of(name: str) -> str:
    return ENV_PREFIX + name.upper()


@dataclass(frozen=True)
class Origin:
    """Where a value came from: 'default', 'file', 'env' or 'flag', and which one."""

    kind: str
    where: str = ""
    text: str | None = dataclasses.field(default=None, compare=False)   # the value as typed (flag, env)

    def label(self, name: str) -> str:
        """The setting as the user wrote it, for an error message."""
        if self.kind == "flag":
            return f"--{key_of(name)}"
        if self.kind == "env":
            return env_of(name)
        if self.kind == "file":
            return f"{self.where}: {key_of(name)}"
        return key_of(name)

    def describe(self) -> str:
        return f"{self.kind} {self.where}".strip()

    def show(self, name: str, value: Any) -> str:
        """`label value` as written: `--port 99999`, `NETCORE_PORT=99999`, `f: port = 99999`."""
        if self.text is not None:
            text = self.text
        else:
            text = value if isinstance(value, str) and self.kind in ("flag", "env") else repr(value)
        sep = {"env": "=", "file": " = "}.get(self.kind, " ")
        return f"{self.label(name)}{sep}{text}"


DEFAULT = Origin("default")


def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def kind_of(field: dataclasses.Field) -> type:
    """The value type of a field: its default's (an optional setting, default None, is a str)."""
    return str if field.default is None else type(field.default)


def from_text(field: dataclasses.Field, text: str, origin: Origin) -> Any:
    """A flag's or environment variable's text as the field's type."""
    kind = kind_of(field)
    try:
        if field.metadata.get("parse") is not None:
            return field.metadata["parse"](text)
        if kind is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError
            return text.lower() in _TRUE
        return kind(text)
    except ValueError:
        noun = {int: "an integer", float: "a number", bool: "true or false"}.get(kind, kind.__name__)
        raise ConfigError(f"{origin.show(field.name, text)}: must be {noun}") from None


def from_toml(field: dataclasses.Field, value: Any, origin: Origin) -> Any:
    """A TOML value, which must already have the field's type (an int is a float too)."""
    kind = kind_of(field)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise ConfigError(f"{origin.label(field.name)} must be {kind.__name__}, not "
                          f"{type(value).__name__} ({value!r})")
    return value


def check(field: dataclasses.Field, value: Any) -> tuple[Any, str | None]:
    """(the normalized value, the problem with it or None) by the field's metadata."""
    meta = field.metadata
    if value is None and field.default is None:
        return value, None
    if meta.get("normalize") is not None:
        value = meta["normalize"](value)
    if isinstance(value, float) and not math.isfinite(value):
        return value, "must be a finite number"
    if meta.get("min") is not None and value < meta["min"]:
        return value, f"must be >= {meta['min']}"
    if meta.get("max") is not None and value > meta["max"]:
        return value, f"must be <= {meta['max']}"
    if meta.get("choices") is not None and value not in meta["choices"]:
        return value, f"must be one of {', '.join(meta['choices'])}"
    return value, None


def checked(config, origins: dict[str, Origin] | None = None):
    """`config` with every value normalized; the first value that fails its
    field's checks is a ConfigError naming it as it was given."""
    changes = {}
    for name, field in fields_of(type(config)).items():
        value, problem = check(field, getattr(config, name))
        origin = (origins or {}).get(name, DEFAULT)
        if problem:
            raise ConfigError(f"{origin.show(name, getattr(config, name))}: {problem}")
        changes[name] = value
    return dataclasses.replace(config, **changes)


def texts_from_environment(cls, environ) -> dict[str, str]:
    """The NETCORE_<NAME> variables that are set (not empty), by field name."""
    return {name: environ[env_of(name)] for name in fields_of(cls)
            if environ.get(env_of(name), "") != ""}
