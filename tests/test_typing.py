"""Types: the .pyi stubs of netcore's compiled modules match those modules
(mypy's stubtest imports them and compares), and code written against netcore
type-checks with mypy: README's "Using the core" example, netcore.demo, and a
fresh `netcore-gen new` project after its generating step.
"""
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import netcore
from netcore_tools import gen_handlers

pytest.importorskip("mypy", reason="mypy is not installed (pip install '.[test]')")

ROOT = Path(__file__).resolve().parent.parent
COMPILED = ["field", "framing", "jobqueue", "proxy", "recvbuffer", "sendbuffer", "sendqueue",
            "service", "session", "stats", "tcp", "websocket"]


def mypy_env(tmp_path):
    """mypy finds an installed netcore by itself; an editable install (an import
    hook mypy cannot follow) is found through MYPYPATH."""
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MYPY"))}
    folder = Path(netcore.__file__).resolve().parent.parent
    installed = {Path(sysconfig.get_path(k)).resolve() for k in ("purelib", "platlib")}
    if folder not in installed:
        env["MYPYPATH"] = str(folder)
    return env


def mypy(tmp_path, *args):
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--check-untyped-defs", "--no-error-summary",
         "--cache-dir", str(tmp_path / ".mypy_cache"), *map(str, args)],
        capture_output=True, text=True, env=mypy_env(tmp_path), cwd=tmp_path, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_stubs_match_the_compiled_modules(tmp_path):
    allowlist = (ROOT / "tests" / "stubtest_allowlist.txt").read_text()
    if sys.version_info < (3, 12):
        # The buffer protocol has no Python-level __buffer__ before 3.12; the
        # stub declares it for every version (sendbuffer.pyi says why).
        allowlist += "netcore\\.sendbuffer\\.SendBuffer\\.__(release_)?buffer__\n"
    (tmp_path / "allowlist.txt").write_text(allowlist)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(tmp_path / "none"),
         "--allowlist", str(tmp_path / "allowlist.txt"),
         *[f"netcore.{m}" for m in COMPILED]],
        capture_output=True, text=True, env=mypy_env(tmp_path), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_compiled_module_has_a_stub_and_the_package_says_so():
    package = Path(netcore.__file__).parent
    compiled = sorted(p.name.split(".")[0] for p in package.iterdir()
                      if p.suffix in (".so", ".pyd"))
    assert compiled == COMPILED
    assert sorted(p.stem for p in package.glob("*.pyi")) == COMPILED
    assert (package / "py.typed").is_file()


def readme_example():
    """The python block of README's "Using the core", verbatim."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Using the core", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def new_project(tmp_path):
    pytest.importorskip("grpc_tools.protoc", reason="grpc_tools (grpcio-tools) is not installed")
    project = tmp_path / "mygame"
    assert gen_handlers.main(["new", str(project)]) == 0
    assert gen_handlers.main(["build", str(project)]) == 0      # *_pb2.pyi, server_dispatch.pyi
    return project


def test_the_examples_and_a_new_project_type_check(tmp_path):
    (tmp_path / "readme_example.py").write_text(readme_example())
    shutil.copy(Path(netcore.__file__).parent / "demo.py", tmp_path / "demo_example.py")
    project = new_project(tmp_path)
    code, said = mypy(tmp_path, "readme_example.py", "demo_example.py",
                      project / "src" / "mygame", project / "tests" / "test_chat.py",
                      project / "tests" / "test_cluster.py")
    assert code == 0, said


def test_a_handler_missing_from_the_project_is_a_type_error(tmp_path):
    # The generated stub types ServerPacketDispatcher's argument as a protocol
    # with one handle_<NAME> per received packet: a handler module without
    # one of them is caught before the server ever runs.
    project = new_project(tmp_path)
    handlers = project / "src" / "mygame" / "handlers.py"
    text = handlers.read_text()
    handlers.write_text(text[:text.index("def handle_C_CHAT")])
    code, said = mypy(tmp_path, project / "src" / "mygame")
    assert code == 1
    assert re.search(r"game\.py:\d+: error: Argument 1 to \"ServerPacketDispatcher\"", said), said
    assert "handle_C_CHAT" in said


def test_sessions_of_a_service_have_the_session_class_it_was_given(tmp_path):
    # A type error the stubs must catch: the services are generic in their
    # session class, so a wrong attribute of it is an error.
    (tmp_path / "sessions.py").write_text(
        "from netcore import ClientService, PacketSession\n"
        "class Player(PacketSession):\n"
        "    score = 0\n"
        "async def main() -> None:\n"
        "    for player in await ClientService(Player, port=7777).start():\n"
        "        player.score += 1\n"
        "        player.scores += 1\n")
    code, said = mypy(tmp_path, "sessions.py")
    assert code == 1
    assert said.strip().splitlines() == [
        'sessions.py:7: error: "Player" has no attribute "scores"; maybe "score"?  '
        "[attr-defined]"]


def test_a_jobs_arguments_and_a_sent_packet_are_checked(tmp_path):
    project = new_project(tmp_path)
    (project / "src" / "mygame" / "mistakes.py").write_text(
        "from netcore_server import GameSession\n"
        "from mygame.game import GameRoom\n"
        "from mygame.Protocol_pb2 import C_CHAT\n"
        "from mygame.server_dispatch import make_send_buffer\n"
        "def mistakes(session: GameSession) -> None:\n"
        "    session.room_job(GameRoom.chat)                # the chat's text is missing\n"
        "    make_send_buffer(C_CHAT(msg='x'))              # the server sends S_*, not C_*\n")
    code, said = mypy(tmp_path, project / "src" / "mygame")
    assert code == 1
    errors = [line for line in said.splitlines() if ": error: " in line]
    job, sent = ([e for e in errors if f"mistakes.py:{n}: " in e] for n in (6, 7))
    assert len(job) + len(sent) == len(errors) and job and len(sent) == 1, said
    # The job is held against GameRoom.chat(room, player, msg): msg is missing.
    assert all('"room_job" of "GameSession"' in e for e in job), job
    assert any("Callable[[GameRoom, Player, str], None]" in e for e in job), job
    assert ('mistakes.py:7: error: Argument 1 to "make_send_buffer" has incompatible type '
            '"C_CHAT"; expected "S_LOGIN | S_ENTER_GAME | S_CHAT"') in sent[0]
