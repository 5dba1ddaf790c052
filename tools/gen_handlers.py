"""Generate packet dispatch (Cython) and handler stubs (Python) from Protocol.proto.

The Python counterpart of the C++ PacketGenerator. Packet ids are part of the wire
format: 1000 upward, in declaration order over the top-level messages of
Protocol.proto whose names start with C_ (client to server) or S_ (server to
client); other messages take no id.

One side, every path and module name given:

    netcore-gen --proto proto/Protocol.proto --recv C_ --send S_ --name Server \
        --pb2-module netcore_packets.Protocol_pb2 \
        --dispatch-out src/netcore_packets/server_dispatch.pyx \
        --handlers-out src/netcore_game/server_handlers.py

writes the dispatch module (.pyx, and a .pyi with its types) and appends a
handler stub for every received packet the handler module has none for.
A project's build runs every side it declares in the [tool.netcore-gen] table
of its pyproject.toml, with protoc first (codegen.py):

    netcore-gen build [PROJECT_DIR]       # what setup.py runs, netcore's and a game's
    netcore-gen new PATH [--name NAME]    # a new game project built on netcore

`python tools/gen_handlers.py` in a checkout is the same command.
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
SUBCOMMANDS = ("new", "build")

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


def render_dispatch(packets, *, recv, send, name, pb2_module, proto_name,
                    template="dispatch.pyx.j2", module_stem=""):
    """The dispatch module's source (dispatch.pyx.j2) or its stub (dispatch.pyi.j2)."""
    return _ENV.get_template(template).render(
        packets=packets,
        recv_prefix=recv,
        send_prefix=send,
        recv_packets=[p for p in packets if p.name.startswith(recv)],
        send_packets=[p for p in packets if p.name.startswith(send)],
        name=name,
        pb2_module=pb2_module,
        proto_name=proto_name,
        module_stem=module_stem,
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


def generate_side(proto, *, recv, send, dispatch_out, handlers_out, name, pb2_module):
    """Generate one side: the dispatch module `dispatch_out` (.pyx) and its
    types beside it (.pyi), and the stubs missing from `handlers_out`, whose
    handlers get messages of `pb2_module`. Returns what was written and which
    stubs were appended."""
    if recv == send:
        raise ValueError("--recv and --send must differ")
    proto = Path(proto)
    packets = parse_packets(proto.read_text(encoding="utf-8"))
    dispatch_out = Path(dispatch_out)
    options = dict(recv=recv, send=send, name=name, pb2_module=pb2_module,
                   proto_name=proto.name)
    dispatch = render_dispatch(packets, **options)
    dispatch_types = render_dispatch(packets, template="dispatch.pyi.j2",
                                     module_stem=dispatch_out.stem, **options)
    handlers_out = Path(handlers_out)
    existing = handlers_out.read_text(encoding="utf-8") if handlers_out.exists() else None
    handlers = render_handlers(packets, existing, recv=recv, name=name,
                               pb2_module=pb2_module, path=handlers_out)
    appended = [] if existing is None else [
        (handlers_out, f"handle_{p.name}")
        for p in missing_handlers(packets, existing, recv=recv, path=handlers_out)]
    outputs = [(dispatch_out, dispatch), (dispatch_out.with_suffix(".pyi"), dispatch_types),
               (handlers_out, handlers)]
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
    """The one-side form: netcore-gen --proto ... (`new` and `build` have their own)."""
    parser = argparse.ArgumentParser(
        prog="netcore-gen", description=__doc__.split("\n\n")[0],
        epilog="Also: `netcore-gen new PATH [--name NAME]` writes a new game project on "
               "netcore; `netcore-gen build [PROJECT_DIR]` runs protoc and every side "
               "of a project's [tool.netcore-gen] table, as its build does "
               "(`netcore-gen new --help`, `netcore-gen build --help`).")
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
    parser.add_argument("--pb2-module", required=True,
                        help="module holding the message classes, e.g. mygame.Protocol_pb2")
    return parser


def _sibling(name):
    """A module of this folder, whether it runs as netcore_tools or from tools/."""
    import importlib
    return importlib.import_module(f"{__package__}.{name}" if __package__ else name)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        module = _sibling("new_project" if argv[0] == "new" else "codegen")
        return module.main(argv[1:])
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
