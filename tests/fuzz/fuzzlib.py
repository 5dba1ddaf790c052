"""What every coverage-guided fuzz target here shares (tests/fuzz/fuzz_*.py).

A target is a module with `test_one_input(data: bytes)` that raises
AssertionError (or anything else) when a property breaks, and `seeds()`,
the inputs its kept corpus starts from. It runs three ways:

    python tests/fuzz/fuzz_wire.py [libFuzzer flags] [CORPUS_DIR...]   # atheris, until stopped
    python tests/fuzz/fuzz_wire.py --make-seeds DIR                    # write seeds() into DIR
    python tests/fuzz/fuzz_wire.py --replay FILE_OR_DIR...             # each file once, no atheris

The input bytes are read through `Input` (below), not atheris's
FuzzedDataProvider, so that a corpus replays the same way with or without
atheris installed (the pytest replay in test_fuzz.py needs no fuzzer), and
so that a crash file found by a long run is a regression test as it is.

Coverage: `instrumented()` wraps the imports of the Python code a target
wants libFuzzer to see (atheris.instrument_imports). The Cython extensions
report native coverage only when built with clang -fsanitize=fuzzer-no-link
(tools/sanitize.sh); a plain build is fuzzed through what its Python side
and the target's own oracle expose.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
CORPUS = HERE / "corpus"
for _p in (str(TESTS), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

try:
    import atheris
except ImportError:                     # replay and pytest need no fuzzer
    atheris = None


def fuzzing() -> bool:
    """True in a process started as a fuzzer (a fuzz_*.py script run without
    --replay or --make-seeds), not when pytest imports a target."""
    return (atheris is not None and Path(sys.argv[0]).name.startswith("fuzz_")
            and sys.argv[1:2] not in (["--make-seeds"], ["--replay"]))


@contextlib.contextmanager
def instrumented():
    """Imports inside get atheris's Python coverage hooks while fuzzing."""
    if atheris is not None and fuzzing():
        with atheris.instrument_imports():
            yield
    else:
        yield


_loop = None


def run(coro):
    """Run a coroutine on this process's one event loop (sessions need a
    running loop for their flusher; a loop per input would cost more than
    the input)."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop.run_until_complete(coro)


def instrument_func(func):
    """atheris's coverage hooks in one function imported from elsewhere
    (instrumenting the module it comes from would instrument all it imports)."""
    if atheris is not None and fuzzing():
        atheris.instrument_func(func)
    return func


class Input:
    """Reads a fuzz input front to back; past its end every read is zeros/empty,
    so any byte string is a valid input and a shorter one a prefix of a
    longer one's choices."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uint(self, nbytes: int) -> int:
        """A little-endian unsigned int of nbytes."""
        raw = self.take(nbytes)
        return int.from_bytes(raw.ljust(nbytes, b"\0"), "little")

    def pick(self, options):
        return options[self.byte() % len(options)]

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def rest(self) -> bytes:
        return self.take(self.left())


def instrument_module(module) -> None:
    """atheris's coverage hooks in every function and method the target
    module itself defines (its decoder and its oracle)."""
    for value in list(vars(module).values()):
        if getattr(value, "__module__", None) != module.__name__:
            continue
        if isinstance(value, type):
            for name, member in list(vars(value).items()):
                if hasattr(member, "__code__"):
                    atheris.instrument_func(member)
        elif hasattr(value, "__code__"):
            atheris.instrument_func(value)


def write_seeds(seeds, folder: Path) -> int:
    """Each seed as a file named by its hash (as libFuzzer names its own)."""
    folder.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        (folder / hashlib.sha1(s).hexdigest()).write_bytes(s)
    return len(seeds)


def corpus_files(name: str):
    folder = CORPUS / name
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def replay(test_one_input, paths) -> int:
    """Run each file (or each file of each folder) once; 0 when all pass."""
    files = []
    for p in map(Path, paths):
        files += sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
    for f in files:
        try:
            test_one_input(f.read_bytes())
        except BaseException:
            print(f"input {f} breaks the property:", file=sys.stderr)
            raise
    print(f"replayed {len(files)} inputs: all hold")
    return 0


def main(test_one_input, seeds, setup=None) -> None:
    """A target's entry point (see the module docstring)."""
    args = sys.argv[1:]
    # A session's end is logged at INFO: millions of lines, and most of the time.
    logging.disable(logging.WARNING)
    if args[:1] == ["--make-seeds"]:
        n = write_seeds(seeds(), Path(args[1]))
        print(f"wrote {n} seeds into {args[1]}")
        return
    if args[:1] == ["--replay"]:
        if setup:
            setup()
        sys.exit(replay(test_one_input, args[1:]))
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris (part of the test extra "
                 "on Linux x86_64), or --replay FILES to run inputs without it")
    if setup:
        setup()
    instrument_module(sys.modules[test_one_input.__module__])
    atheris.Setup([sys.argv[0], *args], test_one_input)
    atheris.Fuzz()
