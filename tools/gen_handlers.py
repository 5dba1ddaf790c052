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


def render_handlers(packets, existing, *, recv, name, pb2_module, path="<handlers>"):
    """The handler module: `existing` (None for a new file) plus the missing stubs."""
    received = [p for p in packets if p.name.startswith(recv)]
    defined = _defined_names(existing, path) if existing is not None else set()
    context = {"name": name, "recv_prefix": recv, "pb2_module": pb2_module, "peer": PEERS[recv]}
    stub = _ENV.get_template("handler_stub.py.j2")
    stubs = [
        stub.render(packet=p, **context)
        for p in received
        if f"handle_{p.name}" not in defined
    ]
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


def generate(proto, *, recv, send, dispatch_out, handlers_out, name,
             pb2_module=DEFAULT_PB2_MODULE):
    """Generate one side; returns the paths that were (re)written."""
    proto = Path(proto)
    packets = parse_packets(proto.read_text(encoding="utf-8"))
    dispatch = render_dispatch(packets, recv=recv, send=send, name=name,
                               pb2_module=pb2_module, proto_name=proto.name)
    handlers_out = Path(handlers_out)
    existing = handlers_out.read_text(encoding="utf-8") if handlers_out.exists() else None
    handlers = render_handlers(packets, existing, recv=recv, name=name,
                               pb2_module=pb2_module, path=handlers_out)
    outputs = [(Path(dispatch_out), dispatch), (handlers_out, handlers)]
    return [path for path, text in outputs if write_if_changed(path, text)]


def generate_all(root):
    """Generate both sides of the checkout at `root` (called by setup.py)."""
    root = Path(root)
    written = []
    # The server's handlers are the game's; the client's are netcore-dummy's.
    for side, recv, send, package in (("server", "C_", "S_", "netcore_game"),
                                      ("client", "S_", "C_", "netcore_dummy")):
        written += generate(
            root / "proto" / "Protocol.proto",
            recv=recv,
            send=send,
            dispatch_out=root / "src" / "netcore_packets" / f"{side}_dispatch.pyx",
            handlers_out=root / "src" / package / f"{side}_handlers.py",
            name=side.capitalize(),
        )
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="netcore-gen", description=__doc__.split("\n\n")[0])
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
    args = parser.parse_args(argv)
    if args.recv == args.send:
        parser.error("--recv and --send must differ")
    try:
        written = generate(args.proto, recv=args.recv, send=args.send,
                           dispatch_out=args.dispatch_out, handlers_out=args.handlers_out,
                           name=args.name, pb2_module=args.pb2_module)
    except (OSError, ValueError) as exc:
        parser.exit(1, f"netcore-gen: error: {exc}\n")
    for path in written:
        print(f"netcore-gen: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
