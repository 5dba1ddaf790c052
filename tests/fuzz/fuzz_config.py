"""Coverage-guided fuzz of the server's configuration: the TOML file
(netcore_server.config_file.load_file), the environment's and flags' texts,
and how they resolve into a checked ServerConfig (resolve, settings.py,
ServerConfig.validate), and --print-config's rendering (render).

An input is a TOML file, either as raw bytes (first byte even) or built
from (setting, value) pairs the fuzzer picks (odd: every key of the
configuration is one byte away, its value typed as an int, a float, a bool
or a string), then environment variables and flags for some settings.
Properties:

  - load_file raises only ConfigError, whatever the file holds;
  - resolve raises only ConfigError, whatever the texts;
  - whatever they accept is a configuration whose every value has its
    field's type and passes its field's checks and ServerConfig.validate();
  - render's output is TOML that load_file reads back into the very same
    configuration (the promise of --print-config), with and without origins.

    python tests/fuzz/fuzz_config.py [-max_total_time=60] [corpus dirs]   (see fuzzlib.py)
"""
from __future__ import annotations

import dataclasses
import math
import struct
import tempfile
import tomllib
from pathlib import Path

import fuzzlib
from fuzzlib import Input

with fuzzlib.instrumented():
    from netcore_server import config_file, settings
    from netcore_server.config import ServerConfig
    from netcore_server.config_file import ConfigError, load_file, render, resolve

FIELDS = [f for f in dataclasses.fields(ServerConfig)]
NAMES = [f.name for f in FIELDS]
_dir = None


def scratch() -> Path:
    global _dir
    if _dir is None:
        _dir = tempfile.TemporaryDirectory(prefix="netcore-fuzz-config-")
    return Path(_dir.name)


def toml_string(raw: bytes) -> str:
    """A TOML basic string holding the bytes' text, escaped by the TOML rules."""
    text = raw.decode("utf-8", "replace")
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(inp: Input) -> str:
    kind = inp.byte() % 6
    if kind == 0:
        return str(struct.unpack("<q", inp.take(8).ljust(8, b"\0"))[0] >> inp.byte() % 64)
    if kind == 1:
        x = struct.unpack("<d", inp.take(8).ljust(8, b"\0"))[0]
        return "nan" if x != x else ("inf" if x == math.inf else "-inf" if x == -math.inf
                                      else repr(x))
    if kind == 2:
        return inp.pick(("true", "false"))
    if kind == 3:
        return str(inp.byte() % 100)            # small ints: inside most ranges
    return toml_string(inp.take(inp.byte() % 40))


def built_file(inp: Input) -> bytes:
    lines = []
    table = inp.byte()
    if table & 1:
        lines.append("[server]")
    for _ in range(inp.byte() % 8):
        name = NAMES[inp.byte() % len(NAMES)]
        b = inp.byte()
        key = name.replace("_", "-") if b & 1 else name
        if b & 2:
            key = f'"{key}"'
        lines.append(f"{key} = {toml_value(inp)}")
    return "\n".join(lines).encode() + b"\n"


def texts(inp: Input) -> dict[str, str]:
    out = {}
    for _ in range(inp.byte() % 4):
        name = NAMES[inp.byte() % len(NAMES)]
        out[name] = inp.take(inp.byte() % 24).decode("utf-8", "replace")
    return out


def load(text: bytes, name: str):
    path = scratch() / name
    path.write_bytes(text)
    return load_file(path), str(path)


def check_accepted(config) -> None:
    for f in FIELDS:
        value = getattr(config, f.name)
        if value is None:
            assert f.default is None, f"{f.name} is None"
            continue
        assert type(value) is settings.kind_of(f), \
            f"{f.name} = {value!r}: a {type(value).__name__}, not {settings.kind_of(f).__name__}"
        _, problem = settings.check(f, value)
        assert problem is None, f"{f.name} = {value!r} accepted, yet {problem}"
    config.validate()                   # raises if anything does not hold


def check_round_trip(config, origins) -> None:
    for rendered in (render(config), render(config, origins)):
        try:
            tomllib.loads(rendered)
        except tomllib.TOMLDecodeError as exc:
            raise AssertionError(f"render made TOML that does not parse ({exc}):\n"
                                 f"{rendered}") from None
        values, path = load(rendered.encode(), "rendered.toml")
        again, _ = resolve(values, {}, {}, path)
        assert again == config, "render's TOML reads back into another configuration"


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    text = built_file(inp) if inp.byte() & 1 else inp.take(inp.uint(2) % 4096)
    env, flags = texts(inp), texts(inp)
    try:
        values, path = load(text, "server.toml")
    except ConfigError:
        return
    assert set(values) <= set(NAMES)
    try:
        config, origins = resolve(values, env, flags, path)
    except ConfigError:
        return
    check_accepted(config)
    check_round_trip(config, origins)


def seeds():
    def built(pairs, table=0, env=(), flags=()):
        out = bytes([1, table, len(pairs)])
        for name, kind, payload in pairs:
            out += bytes([NAMES.index(name), 0, kind]) + payload
        for group in (env, flags):
            out += bytes([len(group)])
            for name, text in group:
                out += bytes([NAMES.index(name), len(text)]) + text.encode()
        return out

    def raw(text, env=(), flags=()):
        body = text.encode()
        out = bytes([0]) + struct.pack("<H", len(body)) + body
        for group in (env, flags):
            out += bytes([len(group)])
            for name, text in group:
                out += bytes([NAMES.index(name), len(text)]) + text.encode()
        return out

    return [
        raw("port = 7777\nmax-sessions = 20000\n"),
        raw('[server]\nhost = "0.0.0.0"\ndb = "postgresql://u:p@h/db"\nws_port = 8080\n'),
        raw('ws-origins = "self,https://play.example.com"\nexempt-networks = "10.0.0.0/8"\n',
            env=[("port", "7000")], flags=[("log_level", "debug")]),
        raw("packet-rate = 0\npacket-burst = 0\nloop = \"asyncio\"\n"),
        raw("port = 1.5\n"),
        raw("[server]\nport = 1\n[other]\nx = 1\n"),
        raw("workers = 2\n", flags=[("workers", "auto")]),
        built([("host", 4, bytes([3]) + b"a\nb"), ("max_packet_size", 3, bytes([20]))], 1),
        built([("flush_interval_ms", 1, struct.pack("<d", 2.5)), ("fast_replies", 2, b"\x01")],
              env=[("idle_timeout", "nan")]),
    ]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
