"""Build: run the handler generator, then cythonize netcore and the generated dispatch.

The generator runs first so that `pip install .` never needs a hand-run step: the
dispatch modules in src/netcore_packets are products of proto/Protocol.proto.
"""
import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "tools"))

import gen_handlers  # noqa: E402  (tools/gen_handlers.py)

gen_handlers.generate_all(HERE)

# Hot modules run without bounds/wraparound checks; every index in them is
# checked by hand against an explicit length.
HOT = {"boundscheck": False, "wraparound": False, "initializedcheck": False}
DIRECTIVES = {"language_level": 3, "embedsignature": True, **HOT}


def extensions(package):
    folder = os.path.join("src", package)
    return [
        Extension(f"{package}.{name[:-4]}", [os.path.join(folder, name)])
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
    options=PARALLEL,
)
