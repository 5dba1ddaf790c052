"""Generate packet dispatch (Cython) and handler stubs (Python) from Protocol.proto.

The Python counterpart of the C++ PacketGenerator. Packet ids are part of the wire
format: 1000 upward, in declaration order over the top-level messages of
Protocol.proto whose names start with C_ (client to server) or S_ (server to
client); other messages take no id.

Server side (setup.py runs both sides on every build through generate_all):

    python tools/gen_handlers.py --proto proto/Protocol.proto --recv C_ --send S_ \\
        --dispatch-out src/netcore_packets/server_dispatch.pyx \\
        --handlers-out src/netcore_game/server_handlers.py --name Server

Client side: --recv S_ --send C_ --dispatch-out src/netcore_packets/client_dispatch.pyx
--handlers-out src/netcore_dummy/client_handlers.py --name Client (the client side
is the load generator's, netcore-dummy). `pip install .` also installs this
tool as `netcore-gen`.

Standalone one-file executable (dist/netcore-gen; needs pyinstaller):

    bash tools/build_gen_exe.sh [DIST_DIR]

Output is deterministic and files are rewritten only when their content changes,
so builds leave mtimes alone. Handler files are never rewritten: stubs are appended
only for received packets that have no handler yet.
"""
import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2

FIRST_ID = 1000
PACKET_PREFIXES = ("C_", "S_")
PEERS = {"C_": "client", "S_": "server"}
DEFAULT_PB2_MODULE = "netcore_packets.Protocol_pb2"

_TOKEN = re.compile(
    r"""
      (?P<comment>//[^\n]*|/\*.*?\*/)
    | (?P<string>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
    | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
    | (?P<unterminated>/\*|["'])
    | (?P<punct>\S)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Packet:
    name: str
    id: int


def top_level_messages(proto_text):
    """Names of the top-level `message NAME {` declarations, in declaration order."""
    tokens = []
    for match in _TOKEN.finditer(proto_text):
        kind = match.lastgroup
        if kind == "unterminated":
            line = proto_text.count("\n", 0, match.start()) + 1
            raise ValueError(f"line {line}: unterminated comment or string")
        # Braces inside comments and strings must not count towards nesting.
        if kind in ("ident", "punct"):
            tokens.append(match.group())

    names = []
    depth = 0
    for i, token in enumerate(tokens):
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced '}'")
        elif depth == 0 and token == "message" and tokens[i + 2 : i + 3] == ["{"]:
            names.append(tokens[i + 1])
    if depth:
        raise ValueError("unbalanced '{'")
    return names


def parse_packets(proto_text):
    """The packets (C_*/S_* top-level messages) with their wire ids."""
    names = [n for n in top_level_messages(proto_text) if n.startswith(PACKET_PREFIXES)]
    if not names:
        raise ValueError("no C_* or S_* messages")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate messages: {', '.join(duplicates)}")
    return [Packet(name, FIRST_ID + i) for i, name in enumerate(names)]


def _template_dir():
    # A pyinstaller one-file executable unpacks its data files under _MEIPASS.
    bundle = getattr(sys, "_MEIPASS", None)
    return Path(bundle or Path(__file__).resolve().parent) / "templates"


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(_template_dir())),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_dispatch(packets, *, recv, send, name, pb2_module, proto_name):
    return _ENV.get_template("dispatch.pyx.j2").render(
        packets=packets,
        recv_prefix=recv,
        send_prefix=send,
        send_packets=[p for p in packets if p.name.startswith(send)],
        name=name,
        pb2_module=pb2_module,
        proto_name=proto_name,
    )


def _defined_names(source, path):
    """Names bound at the top level of a Python module (defs, imports, assignments)."""
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise ValueError(f"{path}: cannot add handler stubs to unparsable file: {exc}") from exc
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _append_blocks(text, blocks):
    """`text` followed by `blocks`, each after exactly two blank lines (PEP 8)."""
    for block in blocks:
        if text:
            trailing = len(text) - len(text.rstrip("\n"))
            text += "\n" * max(0, 3 - trailing)
        text += block
    return text


def missing_handlers(packets, existing, *, recv, path="<handlers>"):
    """The received packets that `existing` (None for no file) has no handler for."""
    defined = _defined_names(existing, path) if existing is not None else set()
    return [p for p in packets if p.name.startswith(recv) and f"handle_{p.name}" not in defined]


def render_handlers(packets, existing, *, recv, name, pb2_module, path="<handlers>"):
    """The handler module: `existing` (None for a new file) plus the missing stubs."""
    context = {"name": name, "recv_prefix": recv, "pb2_module": pb2_module, "peer": PEERS[recv]}
    stub = _ENV.get_template("handler_stub.py.j2")
    stubs = [stub.render(packet=p, **context)
             for p in missing_handlers(packets, existing, recv=recv, path=path)]
    if existing is None:
        existing = _ENV.get_template("handlers_header.py.j2").render(**context)
    return _append_blocks(existing, stubs)


def write_if_changed(path, text):
    """Write `text` to `path` unless it already holds exactly that; True if written."""
    path = Path(path)
    data = text.encode("utf-8")
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


@dataclass
class Generated:
    """What one generator run changed: files (re)written, and the handler
    stubs appended to an existing handler module, as (path, handler name)."""
    written: list
    appended: list


def generate_side(proto, *, recv, send, dispatch_out, handlers_out, name,
                  pb2_module=DEFAULT_PB2_MODULE):
    """Generate one side; returns what was written and which stubs were appended."""
    proto = Path(proto)
    packets = parse_packets(proto.read_text(encoding="utf-8"))
    dispatch = render_dispatch(packets, recv=recv, send=send, name=name,
                               pb2_module=pb2_module, proto_name=proto.name)
    handlers_out = Path(handlers_out)
    existing = handlers_out.read_text(encoding="utf-8") if handlers_out.exists() else None
    handlers = render_handlers(packets, existing, recv=recv, name=name,
                               pb2_module=pb2_module, path=handlers_out)
    appended = [] if existing is None else [
        (handlers_out, f"handle_{p.name}")
        for p in missing_handlers(packets, existing, recv=recv, path=handlers_out)]
    outputs = [(Path(dispatch_out), dispatch), (handlers_out, handlers)]
    return Generated([path for path, text in outputs if write_if_changed(path, text)], appended)


def generate(proto, **options):
    """Generate one side (generate_side's options); returns the paths that were (re)written."""
    return generate_side(proto, **options).written


def describe(generated, root=None):
    """One line per change, paths relative to `root`: what a build or netcore-gen reports."""
    def show(path):
        path = Path(path)
        return path.relative_to(root).as_posix() if root and path.is_relative_to(root) else path

    appended_to = {path for path, _ in generated.appended}
    lines = [f"appended {handler} to {show(path)}" for path, handler in generated.appended]
    lines += [f"wrote {show(path)}" for path in generated.written if path not in appended_to]
    return lines


def generate_all(root, report=None):
    """Generate both sides of the checkout at `root` (called by setup.py); returns
    the paths written, and passes each change to `report` as one line."""
    root = Path(root)
    result = Generated([], [])
    # The server's handlers are the game's; the client's are netcore-dummy's.
    for side, recv, send, package in (("server", "C_", "S_", "netcore_game"),
                                      ("client", "S_", "C_", "netcore_dummy")):
        side_result = generate_side(
            root / "proto" / "Protocol.proto",
            recv=recv,
            send=send,
            dispatch_out=root / "src" / "netcore_packets" / f"{side}_dispatch.pyx",
            handlers_out=root / "src" / package / f"{side}_handlers.py",
            name=side.capitalize(),
        )
        result.written += side_result.written
        result.appended += side_result.appended
    if report is not None:
        for line in describe(result, root):
            report(line)
    return result.written


def version():
    """netcore's version without importing netcore (whose package imports its
    compiled modules): the installed distribution's, else the checkout's or the
    one-file executable's _version.py (build_gen_exe.sh bundles it)."""
    here = Path(getattr(sys, "_MEIPASS", None) or Path(__file__).resolve().parent)
    for candidate in (here / "_version.py", here.parent / "src" / "netcore" / "_version.py"):
        if candidate.is_file():
            match = re.search(r'^__version__ = "([^"]+)"$', candidate.read_text(), re.M)
            if match:
                return match.group(1)
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version
        return dist_version("netcore")
    except PackageNotFoundError:
        return "unknown"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="netcore-gen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"netcore-gen {version()}")
    parser.add_argument("--proto", required=True, help="path to Protocol.proto")
    parser.add_argument("--recv", required=True, choices=PACKET_PREFIXES,
                        help="prefix of the packets this side receives")
    parser.add_argument("--send", required=True, choices=PACKET_PREFIXES,
                        help="prefix of the packets this side sends")
    parser.add_argument("--dispatch-out", required=True, help="generated dispatch .pyx")
    parser.add_argument("--handlers-out", required=True,
                        help="handler module; stubs are appended only where missing")
    parser.add_argument("--name", required=True,
                        help="side name: the dispatcher class is <NAME>PacketDispatcher")
    parser.add_argument("--pb2-module", default=DEFAULT_PB2_MODULE,
                        help="module holding the message classes (default: %(default)s)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.recv == args.send:
        parser.error("--recv and --send must differ")
    try:
        generated = generate_side(
            args.proto, recv=args.recv, send=args.send, dispatch_out=args.dispatch_out,
            handlers_out=args.handlers_out, name=args.name, pb2_module=args.pb2_module)
    except (OSError, ValueError) as exc:
        parser.exit(1, f"netcore-gen: error: {exc}\n")
    for line in describe(generated) or ["up to date"]:
        print(f"netcore-gen: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
