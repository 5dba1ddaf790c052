"""`netcore-gen new PATH [--name NAME]`: write a new game project built on netcore.

The project is small and complete: pyproject.toml and setup.py that run the
generator and compile the dispatch against the installed netcore, proto/NAME/
with netcore's own login, enter and chat packets (same ids), the package
src/NAME/ on netcore's server layer (handlers, the game: its settings and a
room with a tick, and the NAME-server command with every setting of
netcore-server), tests that run it in one process, with --workers 2 and over
WebSocket, and a README with its two commands. Every file comes from
tools/templates/project/.
"""
import argparse
import keyword
import re
import sys
from pathlib import Path

if __package__:
    from . import gen_handlers, gen_proto
else:       # tools/ itself on sys.path
    import gen_handlers
    import gen_proto

# Project file -> its template under templates/project/ ({name}: the package).
FILES = {
    "README.md": "README.md.j2",
    "pyproject.toml": "pyproject.toml.j2",
    "setup.py": "setup.py.j2",
    ".gitignore": "gitignore.j2",
    "proto/{name}/Protocol.proto": "Protocol.proto.j2",
    "src/{name}/__init__.py": "__init__.py.j2",
    "src/{name}/handlers.py": "handlers.py.j2",
    "src/{name}/game.py": "game.py.j2",
    "src/{name}/cli.py": "cli.py.j2",
    "src/{name}/py.typed": None,                # empty: the package has types
    "tests/conftest.py": "conftest.py.j2",
    "tests/test_chat.py": "test_chat.py.j2",
    "tests/test_cluster.py": "test_cluster.py.j2",
}
# The name is the package, the distribution and the command's prefix.
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
CYTHON = "Cython>=3.1.3,<4"


def check_name(name):
    """`name` if it can name the project's package; else ValueError saying why."""
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a valid project name: use lowercase letters, "
                         "digits and _, starting with a letter")
    if keyword.iskeyword(name):
        raise ValueError(f"{name!r} is a Python keyword")
    if name in sys.stdlib_module_names or name in ("test", "tests"):
        raise ValueError(f"{name!r} is a module of Python's standard library")
    if name == "netcore" or name.startswith("netcore_"):
        raise ValueError(f"{name!r} is one of netcore's own package names")
    return name


def render(name):
    """{relative path: text} of the project called `name`."""
    context = {
        "name": name,
        "netcore_version": gen_handlers.version(),
        "grpcio_tools": gen_proto.GRPCIO_TOOLS,
        "cython": CYTHON,
    }
    env = gen_handlers._ENV
    return {path.format(name=name): "" if template is None
            else env.get_template(f"project/{template}").render(**context)
            for path, template in FILES.items()}


def create(path, name=None):
    """Write the project `name` (default: PATH's last part, '-' read as '_')
    into the folder `path`, which must be missing or empty. Returns the
    paths written, in order."""
    path = Path(path)
    name = check_name(name if name is not None else path.resolve().name.replace("-", "_"))
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{path} exists and is not an empty folder")
    written = []
    for relative, text in render(name).items():
        target = path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8", newline="\n")
        written.append(target)
    return written


def build_parser():
    parser = argparse.ArgumentParser(
        prog="netcore-gen new",
        description="Write a new game project built on netcore: its build, protocol, "
                    "handlers, server command and a test.")
    parser.add_argument("path", help="folder to create (missing or empty)")
    parser.add_argument("--name", help="package name, also NAME-server "
                                       "(default: the folder's name, '-' read as '_')")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        written = create(args.path, args.name)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        parser.exit(1, f"netcore-gen new: error: {exc}\n")
    for path in written:
        print(f"netcore-gen: wrote {path}")
    name = next(p.parent.name for p in written if p.name == "__init__.py")
    print(f"netcore-gen: next: cd {args.path} && pip install --no-build-isolation . "
          f"&& {name}-server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
