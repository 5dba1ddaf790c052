"""Regenerate a package's protobuf modules (*_pb2.py and *_pb2.pyi) from its .proto files.

    python tools/gen_proto.py --proto-dir proto --out src/netcore_packets

Runs grpc_tools' bundled protoc (so the gencode version follows the pinned
grpcio-tools, not whatever protoc is on PATH) with --python_out and --pyi_out,
then makes the gencode's imports of its sibling modules package-relative:
protoc writes `import Enum_pb2 as Enum__pb2` (or, for protos under a folder of
the include directory, `from mygame import Enum_pb2 as ...`), which only works
with that folder itself on sys.path, not inside the package the modules land in.

The include directory (protoc's -I, by default the proto folder itself) names
the .proto files in protobuf's process-wide descriptor pool: netcore's own are
"Protocol.proto", "Enum.proto"; a game made by `netcore-gen new` keeps its
protos in proto/<name>/ with proto/ as the include directory, so its files are
"<name>/Protocol.proto" and both can be loaded in one process.

Each *_pb2.py records the sha256 of the .proto it came from (a comment line).
setup.py calls regenerate() on every build: it runs protoc only when a
recorded digest no longer matches its .proto, so an unchanged checkout builds
without protoc and a changed proto/ never ships with stale modules.
"""
import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# What to install when the modules are stale and grpcio-tools is missing (the
# pin matches [build-system] requires in netcore's pyproject.toml).
GRPCIO_TOOLS = "grpcio-tools>=1.85.1,<1.86"
_DIGEST = re.compile(r"^# proto sha256: ([0-9a-f]{64})$", re.M)


class ProtocUnavailable(RuntimeError):
    """The protobuf modules are stale and grpc_tools is not installed to remake them."""


def make_imports_relative(source, modules, folder=""):
    """Rewrite absolute imports of the sibling gencode `modules` in `source`;
    `folder` is the protos' dotted folder under the include directory ("" for none)."""
    names = "|".join(re.escape(m) for m in sorted(modules))
    if folder:
        source = re.sub(rf"^from {re.escape(folder)} import ({names}) as ",
                        r"from . import \1 as ", source, flags=re.M)
        return re.sub(rf"^from {re.escape(folder)}\.({names}) import ", r"from .\1 import ",
                      source, flags=re.M)
    source = re.sub(rf"^import ({names}) as ", r"from . import \1 as ", source, flags=re.M)
    return re.sub(rf"^from ({names}) import ", r"from .\1 import ", source, flags=re.M)


def proto_digest(proto):
    """sha256 of a .proto's text, line endings normalised (a CRLF checkout matches)."""
    text = Path(proto).read_bytes().replace(b"\r\n", b"\n")
    return hashlib.sha256(text).hexdigest()


def stamp(source, digest):
    """`source` (a *_pb2.py) with its proto's digest recorded after the `# source:` line."""
    line = f"# proto sha256: {digest}\n"
    match = re.search(r"^# source: .*\n", source, re.M)
    at = match.end() if match else 0
    return source[:at] + line + source[at:]


def recorded_digest(pb2_py):
    """The digest a *_pb2.py records, or None (missing file, no stamp)."""
    try:
        match = _DIGEST.search(Path(pb2_py).read_text(encoding="utf-8"))
    except OSError:
        return None
    return match.group(1) if match else None


def stale_protos(proto_dir, packets_dir):
    """The .proto files whose *_pb2.py in `packets_dir` is missing or was made from other text."""
    return [p for p in sorted(Path(proto_dir).glob("*.proto"))
            if recorded_digest(Path(packets_dir) / f"{p.stem}_pb2.py") != proto_digest(p)]


def _folder(proto_dir, include_dir):
    """The protos' folder under the include directory, as a relative path."""
    try:
        return Path(proto_dir).resolve().relative_to(Path(include_dir).resolve())
    except ValueError:
        raise ValueError(f"{proto_dir} is not inside the include directory {include_dir}") from None


def generate(out_dir, proto_dir, include_dir=None):
    """Generate *_pb2.py and *_pb2.pyi for every .proto in `proto_dir` into `out_dir`,
    the .proto files named relative to `include_dir` (default: `proto_dir`).

    Returns the generated paths, sorted.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    proto_dir = Path(proto_dir)
    include_dir = Path(include_dir if include_dir is not None else proto_dir)
    folder = _folder(proto_dir, include_dir)
    protos = sorted(p.name for p in proto_dir.glob("*.proto"))
    if not protos:
        raise FileNotFoundError(f"no .proto files in {proto_dir}")
    with tempfile.TemporaryDirectory() as scratch:
        # Names relative to the include directory keep the file names recorded
        # in the descriptors ("Enum.proto", "mygame/Enum.proto") independent
        # of where the checkout lives.
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", "-I", ".",
             f"--python_out={scratch}", f"--pyi_out={scratch}",
             *((folder / p).as_posix() for p in protos)],
            cwd=include_dir,
            check=True,
        )
        modules = {p[: -len(".proto")] + "_pb2" for p in protos}
        generated = sorted(out_dir / f"{m}{ext}" for m in modules for ext in (".py", ".pyi"))
        dotted = ".".join(folder.parts)
        for path in generated:
            text = (Path(scratch) / folder / path.name).read_text(encoding="utf-8")
            text = make_imports_relative(text, modules, dotted)
            if path.suffix == ".py":
                proto = proto_dir / (path.name[: -len("_pb2.py")] + ".proto")
                text = stamp(text, proto_digest(proto))
            path.write_text(text, encoding="utf-8", newline="\n")
    return generated


def regenerate(proto_dir, packets_dir, include_dir=None):
    """Bring `packets_dir` up to date with `proto_dir`: nothing when every
    digest matches, else protoc into a scratch folder and copy what differs.
    Returns the paths written; raises ProtocUnavailable without grpc_tools."""
    if not stale_protos(proto_dir, packets_dir):
        return []
    try:
        import grpc_tools.protoc  # noqa: F401
    except ImportError:
        stale = ", ".join(p.name for p in stale_protos(proto_dir, packets_dir))
        raise ProtocUnavailable(
            f"{Path(packets_dir).name}/*_pb2.py are stale for {stale} and grpcio-tools "
            f"is not installed to regenerate them: pip install '{GRPCIO_TOOLS}', "
            f"then build again") from None
    written = []
    Path(packets_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for path in generate(scratch, proto_dir, include_dir):
            target = Path(packets_dir) / path.name
            data = path.read_bytes()
            if not target.exists() or target.read_bytes() != data:
                target.write_bytes(data)
                written.append(target)
    return written


def main(argv=None):
    """Regenerate every module, whatever the recorded digests say (after a
    change of grpcio-tools, say)."""
    import argparse
    parser = argparse.ArgumentParser(prog="gen_proto.py", description=main.__doc__)
    parser.add_argument("--proto-dir", required=True, help="folder of the .proto files")
    parser.add_argument("--out", required=True, help="package folder for *_pb2.py(i)")
    parser.add_argument("--include-dir", help="protoc's -I (default: --proto-dir)")
    args = parser.parse_args(argv)
    for path in generate(args.out, args.proto_dir, args.include_dir):
        print(f"gen_proto: wrote {path}")


if __name__ == "__main__":
    main()
