"""Build: bring the generated sources up to date with proto/, then cythonize.

Before compiling, so that `pip install .` never needs a hand-run step,
tools/codegen.py runs the generator as the [tool.netcore-gen] table of
pyproject.toml says (the same step a game made by `netcore-gen new` runs):
  1. protoc regenerates src/netcore_packets/*_pb2.py when a .proto changed
     (grpcio-tools is a build requirement; an unchanged checkout needs no
     protoc at all);
  2. the dispatch modules are written, and a handler stub is appended for
     every new received packet.
Each change to the source tree is reported as one line (`pip install -v .`
shows them), or that it was up to date.

Release builds carry no debug information (-g0, and a stripped link on Linux):
it is five sixths of an extension's size. NETCORE_DEBUG_BUILD=1 keeps it.

NETCORE_SANITIZE=address,undefined (any -fsanitize list) builds the extensions
with clang (CC and LDSHARED, unless set) under those sanitizers, plus
fuzzer-no-link, so that atheris sees their native coverage, with debug
information and frame pointers, into build/sanitize/ rather than build/ (no
object of that build is ever linked into a plain one). The extensions then
need the sanitizers' runtime loaded first: tools/sanitize.sh builds such a
virtual environment and runs the fuzz targets and the suite on it.
"""
import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "tools"))

import codegen  # noqa: E402  (tools/codegen.py)


def report(line):
    print(f"netcore build: {line}", flush=True)


try:
    codegen.generate_sources(HERE, report=report)
except (codegen.ConfigError, codegen.gen_proto.ProtocUnavailable) as exc:
    sys.exit(f"netcore build: error: {exc}")

# Hot modules run without bounds/wraparound checks; every index in them is
# checked by hand against an explicit length.
HOT = {"boundscheck": False, "wraparound": False, "initializedcheck": False}
# Signatures in docstrings (autodoc, help()) in Python syntax, with types.
DIRECTIVES = {"language_level": 3, "embedsignature": True, "embedsignature.format": "python",
              **HOT}

SANITIZE = os.environ.get("NETCORE_SANITIZE", "").strip()
RELEASE = os.environ.get("NETCORE_DEBUG_BUILD", "") in ("", "0") and not SANITIZE
# -g0 comes after the interpreter's CFLAGS (which carry -g) and wins; MSVC
# writes no debug information into the .pyd unless asked.
COMPILE_ARGS = ["-g0"] if RELEASE and os.name != "nt" else []
LINK_ARGS = ["-s"] if RELEASE and sys.platform.startswith("linux") else []
BUILD_OPTIONS = {}
if SANITIZE:
    os.environ.setdefault("CC", "clang")
    os.environ.setdefault("LDSHARED", "clang -shared")
    COMPILE_ARGS = [f"-fsanitize={SANITIZE},fuzzer-no-link", "-fno-omit-frame-pointer",
                    "-g", "-O1"]
    LINK_ARGS = [f"-fsanitize={SANITIZE},fuzzer-no-link"]
    BUILD_OPTIONS = {"build": {"build_base": os.path.join("build", "sanitize")}}
    report(f"sanitizer build: {os.environ['CC']} -fsanitize={SANITIZE},fuzzer-no-link")


def extensions(package):
    folder = os.path.join("src", package)
    return [
        Extension(f"{package}.{name[:-4]}", [os.path.join(folder, name)],
                  extra_compile_args=COMPILE_ARGS, extra_link_args=LINK_ARGS)
        for name in sorted(os.listdir(os.path.join(HERE, folder)))
        if name.endswith(".pyx")
    ]


# Compile the extensions in parallel, one per core (`build_ext -j N` still
# overrides); MSVC builds stay serial.
PARALLEL = {"build_ext": {"parallel": os.cpu_count() or 1}} if os.name != "nt" else {}

setup(
    ext_modules=cythonize(
        extensions("netcore") + extensions("netcore_packets") + extensions("netcore_dummy"),
        compiler_directives=DIRECTIVES,
        include_path=[os.path.join(HERE, "src")],
    ),
    options={**PARALLEL, **BUILD_OPTIONS},
)
