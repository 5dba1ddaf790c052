"""Regenerate the committed protobuf modules in src/netcore_packets from proto/*.proto.

    python tools/gen_proto.py

Runs grpc_tools' bundled protoc (so the gencode version follows the pinned
grpcio-tools, not whatever protoc is on PATH) with --python_out and --pyi_out,
then makes the gencode's imports of its sibling modules package-relative:
protoc writes `import Enum_pb2 as Enum__pb2`, which only works with src/netcore_packets
itself on sys.path, not inside the `netcore_packets` package.
"""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKETS_DIR = ROOT / "src" / "netcore_packets"


def make_imports_relative(source, modules):
    """Rewrite absolute imports of the sibling gencode `modules` in `source`."""
    names = "|".join(re.escape(m) for m in sorted(modules))
    source = re.sub(rf"^import ({names}) as ", r"from . import \1 as ", source, flags=re.M)
    return re.sub(rf"^from ({names}) import ", r"from .\1 import ", source, flags=re.M)


def generate(out_dir, proto_dir=PROTO_DIR):
    """Generate *_pb2.py and *_pb2.pyi for every .proto in `proto_dir` into `out_dir`.

    Returns the generated paths, sorted.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted(p.name for p in Path(proto_dir).glob("*.proto"))
    if not protos:
        raise FileNotFoundError(f"no .proto files in {proto_dir}")
    # Relative names under `-I .` keep the file names recorded in the
    # descriptors ("Enum.proto") independent of where the checkout lives.
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", ".",
         f"--python_out={out_dir}", f"--pyi_out={out_dir}", *protos],
        cwd=proto_dir,
        check=True,
    )
    modules = {p[: -len(".proto")] + "_pb2" for p in protos}
    generated = sorted(out_dir / f"{m}{ext}" for m in modules for ext in (".py", ".pyi"))
    for path in generated:
        text = path.read_text(encoding="utf-8")
        path.write_text(make_imports_relative(text, modules), encoding="utf-8", newline="\n")
    return generated


def main():
    for path in generate(PACKETS_DIR):
        print(f"gen_proto: wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
