"""The generating step of a build: protobuf modules, packet dispatch and handler
stubs, from a project's .proto files, as its [tool.netcore-gen] table says.

netcore's own setup.py and the setup.py of every project made by
`netcore-gen new` call generate_sources(ROOT) before cythonizing; `netcore-gen
build [PROJECT_DIR]` runs the same step alone. Nothing of any checkout is
written here: every path and module name comes from the table, paths relative
to the pyproject.toml that holds it:

    [tool.netcore-gen]
    proto-dir = "proto/mygame"        # the .proto files
    proto-include = "proto"           # protoc's -I (default: proto-dir); names the
                                      # files in protobuf's descriptor pool
    protocol = "Protocol.proto"       # whose C_*/S_* messages are the packets (default)
    pb2-dir = "src/mygame"            # where *_pb2.py(i) go ...
    pb2-package = "mygame"            # ... and the package that is

    [[tool.netcore-gen.side]]         # one per peer this project speaks as
    name = "Server"                   # ServerPacketDispatcher
    recv = "C_"                       # the packets it receives ...
    send = "S_"                       # ... and sends
    dispatch-out = "src/mygame/server_dispatch.pyx"     # generated (and its .pyi)
    dispatch-module = "mygame.server_dispatch"          # what setup.py compiles it as
    handlers-out = "src/mygame/handlers.py"             # stubs appended, never rewritten
"""
import argparse
import importlib.util
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

if __package__:
    from . import gen_handlers, gen_proto
else:       # tools/ itself on sys.path: netcore's setup.py, its tests, the script
    import gen_handlers
    import gen_proto

TABLE = "netcore-gen"


class ConfigError(ValueError):
    """The [tool.netcore-gen] table is missing or says something unusable."""


@dataclass(frozen=True)
class Side:
    name: str
    recv: str
    send: str
    dispatch_out: Path
    dispatch_module: str
    handlers_out: Path


@dataclass(frozen=True)
class Config:
    root: Path
    proto_dir: Path
    proto_include: Path
    protocol: Path
    pb2_dir: Path
    pb2_package: str
    sides: tuple

    @property
    def pb2_module(self):
        """The module of the protocol's messages, e.g. mygame.Protocol_pb2."""
        return f"{self.pb2_package}.{self.protocol.stem}_pb2"


def _text(table, key, where, default=None):
    value = table.get(key, default)
    if value is None:
        raise ConfigError(f"{where}: `{key}` is missing")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: `{key}` must be a non-empty string, not {value!r}")
    return value


def _module_name(value, key, where):
    if not all(part.isidentifier() for part in value.split(".")):
        raise ConfigError(f"{where}: `{key}` = {value!r} is not a module name")
    return value


def load_config(root):
    """The [tool.netcore-gen] table of ROOT/pyproject.toml, paths resolved against ROOT."""
    root = Path(root).resolve()
    where = f"{root / 'pyproject.toml'} [tool.{TABLE}]"
    try:
        with open(root / "pyproject.toml", "rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {root / 'pyproject.toml'}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{root / 'pyproject.toml'}: {exc}") from None
    table = document.get("tool", {}).get(TABLE)
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: no such table")
    known = {"proto-dir", "proto-include", "protocol", "pb2-dir", "pb2-package", "side"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    proto_dir = root / _text(table, "proto-dir", where)
    sides = table.get("side")
    if not isinstance(sides, list) or not sides:
        raise ConfigError(f"{where}: no [[tool.{TABLE}.side]]")
    side_keys = {"name", "recv", "send", "dispatch-out", "dispatch-module", "handlers-out"}
    parsed = []
    for i, side in enumerate(sides):
        at = f"{where} side {i + 1}"
        unknown = sorted(set(side) - side_keys)
        if unknown:
            raise ConfigError(f"{at}: unknown key(s) {', '.join(unknown)}")
        recv, send = _text(side, "recv", at), _text(side, "send", at)
        for key, prefix in (("recv", recv), ("send", send)):
            if prefix not in gen_handlers.PACKET_PREFIXES:
                raise ConfigError(f"{at}: `{key}` must be C_ or S_, not {prefix!r}")
        if recv == send:
            raise ConfigError(f"{at}: `recv` and `send` must differ")
        name = _text(side, "name", at)
        if not name.isidentifier():
            raise ConfigError(f"{at}: `name` = {name!r} is not an identifier")
        parsed.append(Side(
            name=name, recv=recv, send=send,
            dispatch_out=root / _text(side, "dispatch-out", at),
            dispatch_module=_module_name(_text(side, "dispatch-module", at),
                                         "dispatch-module", at),
            handlers_out=root / _text(side, "handlers-out", at)))
    proto_include = root / _text(table, "proto-include", where, table.get("proto-dir"))
    if not proto_dir.resolve().is_relative_to(proto_include.resolve()):
        raise ConfigError(f"{where}: `proto-dir` {table['proto-dir']!r} is not inside "
                          f"`proto-include` {table['proto-include']!r}")
    return Config(
        root=root,
        proto_dir=proto_dir,
        proto_include=proto_include,
        protocol=proto_dir / _text(table, "protocol", where, "Protocol.proto"),
        pb2_dir=root / _text(table, "pb2-dir", where),
        pb2_package=_module_name(_text(table, "pb2-package", where), "pb2-package", where),
        sides=tuple(parsed),
    )


def generate_sources(root, report=None):
    """Bring the generated sources of the project at `root` up to date:
    protoc when a .proto changed, then every side's dispatch and stubs.
    Each change goes to `report` as one line (paths relative to root), or
    one line saying that all was up to date. Returns the paths written."""
    config = load_config(root)
    root = config.root
    report = report or (lambda line: None)
    protos = gen_proto.regenerate(config.proto_dir, config.pb2_dir, config.proto_include)
    for path in protos:
        report(f"regenerated {_show(path, root)} from {_show(config.proto_dir, root)}/")
    result = gen_handlers.Generated([], [])
    for side in config.sides:
        done = gen_handlers.generate_side(
            config.protocol, recv=side.recv, send=side.send, name=side.name,
            dispatch_out=side.dispatch_out, handlers_out=side.handlers_out,
            pb2_module=config.pb2_module)
        result.written += done.written
        result.appended += done.appended
    for line in gen_handlers.describe(result, root):
        report(line)
    if not protos and not result.appended:
        report("protobuf modules and packet handlers are up to date")
    return protos + result.written


def _show(path, root):
    path = Path(path)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def cython_include_dir():
    """The folder that holds the installed netcore package, whose .pxd files a
    generated dispatch cimports (found without importing netcore)."""
    spec = importlib.util.find_spec("netcore")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("netcore is not installed in this environment")
    package = Path(next(iter(spec.submodule_search_locations)))
    if not (package / "sendbuffer.pxd").is_file():
        raise ImportError(f"{package} has no sendbuffer.pxd: not the netcore game-server "
                          "framework, or one installed without its .pxd files")
    return str(package.parent)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="netcore-gen build",
        description="Run the generating step of a build alone: protoc when a .proto "
                    "changed, then every side's dispatch and handler stubs, as the "
                    "project's [tool.netcore-gen] table says.")
    parser.add_argument("project", nargs="?", default=".",
                        help="folder of the project's pyproject.toml (default: %(default)s)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        generate_sources(args.project, report=lambda line: print(f"netcore-gen: {line}"))
    except (ConfigError, OSError, ValueError, gen_proto.ProtocUnavailable) as exc:
        print(f"netcore-gen: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
