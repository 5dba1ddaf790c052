"""`netcore-gen new`: a game project of one's own, built on the installed netcore.

The fast tests check what `new` writes and what the generating step makes of it
(`netcore-gen build`, no compiler). The slow one does what a developer does,
from the built netcore: new project, `pip install`, its server and its test,
then a packet added to its proto, a rebuild, and the new packet end to end.
"""
import os
import socket
import struct
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

import netcore
from netcore_tools import codegen, gen_handlers

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted(["README.md", "pyproject.toml", "setup.py", ".gitignore",
                "proto/mygame/Protocol.proto", "src/mygame/__init__.py",
                "src/mygame/handlers.py", "src/mygame/game.py", "src/mygame/cli.py",
                "src/mygame/py.typed", "tests/conftest.py", "tests/test_chat.py",
                "tests/test_cluster.py"])
PING = """
message C_PING {
  uint32 seq = 1;
}

message S_PONG {
  uint32 seq = 1;
}
"""
PONG_BODY = "    session.send_packet(S_PONG(seq=pkt.seq))\n"


def files_of(project):
    return sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file())


def needs_protoc():
    pytest.importorskip("grpc_tools.protoc", reason="grpc_tools (grpcio-tools) is not installed")


def new(tmp_path, name="mygame", *more):
    project = tmp_path / name
    assert gen_handlers.main(["new", str(project), *more]) == 0
    return project


def add_ping(project, name="mygame"):
    with open(project / "proto" / name / "Protocol.proto", "a", encoding="utf-8") as f:
        f.write(PING)


# -- what `new` writes -----------------------------------------------------------

def test_new_writes_a_complete_project_that_names_nothing_of_this_checkout(tmp_path, capsys):
    project = new(tmp_path)
    assert files_of(project) == FILES
    said = capsys.readouterr().out.splitlines()
    assert said[-1] == (f"netcore-gen: next: cd {project} && pip install --no-build-isolation "
                        ". && mygame-server")
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "mygame"
    assert pyproject["project"]["scripts"] == {"mygame-server": "mygame.cli:main"}
    # The compiled dispatch cimports netcore's types: it needs the netcore it was built with.
    assert f"netcore[cluster]=={netcore.__version__}" in pyproject["project"]["dependencies"]
    # It builds against the installed netcore; an isolated build must not fetch
    # another project's "netcore" from PyPI.
    assert not [r for r in pyproject["build-system"]["requires"] if r.startswith("netcore")]
    config = codegen.load_config(project)
    assert config.pb2_module == "mygame.Protocol_pb2"
    assert [(s.name, s.recv, s.send, s.dispatch_module) for s in config.sides] == [
        ("Server", "C_", "S_", "mygame.server_dispatch")]
    for name in FILES:
        text = (project / name).read_text()
        assert "{{" not in text and "{%" not in text, name
        for foreign in (str(ROOT), "netcore_packets", "netcore_game", "netcore_dummy"):
            assert foreign not in text, (name, foreign)
    readme = (project / "README.md").read_text()
    assert "pip install --no-build-isolation . && mygame-server" in readme
    assert 'pip install --no-build-isolation ".[test]" && python -m pytest' in readme


def test_the_starter_protocol_has_netcores_packets_and_ids(tmp_path):
    project = new(tmp_path)
    theirs = gen_handlers.parse_packets((project / "proto/mygame/Protocol.proto").read_text())
    ours = gen_handlers.parse_packets((ROOT / "proto" / "Protocol.proto").read_text())
    # Login, enter and chat, as netcore-server has them (its field's packets follow).
    assert theirs == ours[:6]
    assert [p.id for p in theirs] == list(range(1000, 1006))


def test_the_default_name_is_the_folder_with_dashes_read_as_underscores(tmp_path):
    project = tmp_path / "space-race"
    assert gen_handlers.main(["new", str(project)]) == 0
    assert (project / "src" / "space_race" / "game.py").is_file()
    assert "space_race-server" in (project / "pyproject.toml").read_text()


def test_name_option_overrides_the_folder(tmp_path):
    project = tmp_path / "checkout"
    assert gen_handlers.main(["new", str(project), "--name", "arena"]) == 0
    assert (project / "proto" / "arena" / "Protocol.proto").is_file()


@pytest.mark.parametrize("name, why", [
    ("MyGame", "is not a valid project name"),
    ("1game", "is not a valid project name"),
    ("my-game", "is not a valid project name"),
    ("", "is not a valid project name"),
    ("class", "is a Python keyword"),
    ("asyncio", "standard library"),
    ("test", "standard library"),
    ("netcore", "one of netcore's own package names"),
    ("netcore_chess", "one of netcore's own package names"),
])
def test_a_bad_name_is_one_line_and_exit_2_and_writes_nothing(tmp_path, capsys, name, why):
    with pytest.raises(SystemExit) as exit_:
        gen_handlers.main(["new", str(tmp_path / "game"), "--name", name])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("netcore-gen new: error: ") and why in err[-1]
    assert not (tmp_path / "game").exists()


def test_a_folder_with_files_in_it_is_refused(tmp_path, capsys):
    (tmp_path / "game").mkdir()
    (tmp_path / "game" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_:
        gen_handlers.main(["new", str(tmp_path / "game"), "--name", "mygame"])
    assert exit_.value.code == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert files_of(tmp_path / "game") == ["notes.txt"]


def test_an_empty_folder_is_filled(tmp_path):
    (tmp_path / "mygame").mkdir()
    assert files_of(new(tmp_path)) == FILES


# -- its generating step (netcore-gen build: what its setup.py runs) ------------------

def test_build_generates_the_messages_and_dispatch_and_keeps_the_handlers(tmp_path, capsys):
    needs_protoc()
    project = new(tmp_path)
    handlers = (project / "src/mygame/handlers.py").read_text()
    capsys.readouterr()
    assert gen_handlers.main(["build", str(project)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "netcore-gen: regenerated src/mygame/Protocol_pb2.py from proto/mygame/",
        "netcore-gen: regenerated src/mygame/Protocol_pb2.pyi from proto/mygame/",
        "netcore-gen: wrote src/mygame/server_dispatch.pyx",
        "netcore-gen: wrote src/mygame/server_dispatch.pyi",
    ]
    # The starter's handlers are written already: no stub is appended to them.
    assert (project / "src/mygame/handlers.py").read_text() == handlers
    dispatch = (project / "src/mygame/server_dispatch.pyx").read_text()
    assert "import mygame.Protocol_pb2 as _pb\n" in dispatch
    assert gen_handlers.main(["build", str(project)]) == 0
    assert capsys.readouterr().out == (
        "netcore-gen: protobuf modules and packet handlers are up to date\n")


def test_an_added_packet_gets_its_id_its_dispatch_entry_and_its_stub(tmp_path, capsys):
    needs_protoc()
    project = new(tmp_path)
    assert gen_handlers.main(["build", str(project)]) == 0
    add_ping(project)
    capsys.readouterr()
    assert gen_handlers.main(["build", str(project)]) == 0
    said = capsys.readouterr().out.splitlines()
    assert "netcore-gen: appended handle_C_PING to src/mygame/handlers.py" in said
    dispatch = (project / "src/mygame/server_dispatch.pyx").read_text()
    assert "    PKT_C_PING = 1006\n    PKT_S_PONG = 1007\n" in dispatch
    assert "(_pb.C_PING.FromString, handlers.handle_C_PING)," in dispatch
    assert "    _pb.S_PONG: PKT_S_PONG,\n" in dispatch
    types = (project / "src/mygame/server_dispatch.pyi").read_text()
    assert "def handle_C_PING(self, session: Any, pkt: _pb.C_PING, /) -> Any: ..." in types
    assert "_pb.S_PONG" in types.split("SendPacket: TypeAlias = ")[1].splitlines()[0]
    handlers = (project / "src/mygame/handlers.py").read_text()
    assert handlers.endswith('def handle_C_PING(session, pkt):\n'
                             '    """Handle C_PING (packet id 1006) from the client."""\n'
                             '    raise NotImplementedError("handle_C_PING")\n')
    assert "handle_S_PONG" not in handlers
    assert "class C_PING" in (project / "src/mygame/Protocol_pb2.pyi").read_text()


def test_two_games_and_netcore_load_their_messages_in_one_process(tmp_path):
    # Each game's protos are named <name>/Protocol.proto in protobuf's
    # process-wide pool, so neither collides with netcore's Protocol.proto.
    needs_protoc()
    for name in ("mygame", "othergame"):
        assert gen_handlers.main(["build", str(new(tmp_path, name))]) == 0
    code = ("import mygame.Protocol_pb2 as a, othergame.Protocol_pb2 as b\n"
            "import netcore_packets.Protocol_pb2 as c\n"
            "print(a.DESCRIPTOR.name, b.DESCRIPTOR.name, c.DESCRIPTOR.name)")
    path = os.pathsep.join([str(tmp_path / "mygame" / "src"), str(tmp_path / "othergame" / "src")])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": path}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mygame/Protocol.proto", "othergame/Protocol.proto",
                                  "Protocol.proto"]


# -- its [tool.netcore-gen] table: every bad value is one line ----------------------

@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("tool.netcore-gen", "tool.other"), "no such table"),
    (lambda t: t.replace('recv = "C_"', 'recv = "X_"'), "`recv` must be C_ or S_, not 'X_'"),
    (lambda t: t.replace('send = "S_"', 'send = "C_"'), "`recv` and `send` must differ"),
    (lambda t: t.replace('pb2-package = "mygame"', 'pb2-package = "my-game"'),
     "`pb2-package` = 'my-game' is not a module name"),
    (lambda t: t.replace('proto-include = "proto"', 'proto-includes = "proto"'),
     "unknown key(s) proto-includes"),
    (lambda t: t.replace('handlers-out = "src/mygame/handlers.py"\n', ""),
     "side 1: `handlers-out` is missing"),
    (lambda t: t + "\n[[[", "pyproject.toml: "),
    (lambda t: t.replace('proto-include = "proto"', 'proto-include = "src"'),
     "`proto-dir` 'proto/mygame' is not inside `proto-include` 'src'"),
])
def test_a_bad_table_is_one_line_and_exit_1(tmp_path, capsys, edit, message):
    project = new(tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(edit(pyproject.read_text()))
    capsys.readouterr()
    assert gen_handlers.main(["build", str(project)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("netcore-gen: error: ") and message in err
    assert not (project / "src/mygame/server_dispatch.pyx").exists()


def test_build_without_a_pyproject_names_it(tmp_path, capsys):
    assert gen_handlers.main(["build", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"netcore-gen: error: cannot read {tmp_path / 'pyproject.toml'}: "
        "No such file or directory\n")


# -- the whole flow, from the built netcore ------------------------------------------

def frame(pkt_id, payload=b""):
    return struct.pack("<HH", len(payload) + 4, pkt_id) + payload


def read_packet(sock):
    """(id, payload) of the next packet, or None once the server has closed."""
    data = b""
    while len(data) < 4 or len(data) < struct.unpack_from("<H", data)[0]:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    size, pkt_id = struct.unpack_from("<HH", data)
    assert len(data) == size, "one packet at a time"
    return pkt_id, data[4:]


def run(command, **kwargs):
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{command}:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout + proc.stderr


class Server:
    """`mygame-server --port 0` of the project's environment, on a free port."""

    def __init__(self, script, env, cwd):
        self.proc = subprocess.Popen([script, "--port", "0"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        banner = self.proc.stdout.readline()
        assert banner.startswith(f"mygame-server 0.1.0 (netcore {netcore.__version__}) "
                                 f"listening on 127.0.0.1:"), (
            banner, self.proc.stderr.read() if self.proc.poll() is not None else "")
        self.port = int(banner.split("listening on ")[1].split()[0].rsplit(":", 1)[1])

    def stop(self):
        self.proc.terminate()                       # SIGTERM: a clean stop, exit 0
        try:
            code = self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(20)
            self.proc.stdout.close()
            log = self.proc.stderr.read()
            self.proc.stderr.close()
        assert code == 0, log
        return log


def logged_in(port):
    """A guest (an empty C_LOGIN), answered S_LOGIN{success: true}."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(frame(1000))
    pkt_id, payload = read_packet(sock)
    assert pkt_id == 1001 and payload.startswith(b"\x08\x01")     # field 1 (success) = 1
    return sock


# A whole build of every extension in a fresh environment: minutes on 2 cores.
@pytest.mark.timeout(900)
@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="stops the server with SIGTERM")
def test_a_new_project_installs_runs_passes_its_test_and_grows_a_packet(tmp_path):
    needs_protoc()
    project = new(tmp_path)
    # A fresh environment that sees this one's packages (the built netcore,
    # Cython, setuptools, grpcio-tools, pytest) behind its own, and installs
    # the game into its own; --no-index: nothing may come from elsewhere.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    scripts = Path(sysconfig.get_path("scripts", vars={"base": str(venv)}))
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv),
                                                    "platbase": str(venv)}))
    here = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "_netcore_test_parent.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in sorted(here)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = os.pathsep.join([str(scripts), env.get("PATH", "")])
    python = str(scripts / "python")
    install = [python, "-m", "pip", "install", "-v", "--no-build-isolation", "--no-index",
               ".[test]"]

    said = run(install, cwd=project, env=env)
    assert "mygame build: regenerated src/mygame/Protocol_pb2.py from proto/mygame/" in said
    assert "mygame build: wrote src/mygame/server_dispatch.pyx" in said
    where = run([python, "-c", "import mygame.server_dispatch as d; print(d.__file__)"],
                cwd=tmp_path, env=env)
    assert Path(where.strip()).is_relative_to(venv) and where.strip().endswith(".so")

    # Its own tests: its server in one process, with --workers 2 and over
    # WebSocket, loaded by netcore-dummy; its room's tick on the owner only.
    tested = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project,
                 env=env)
    assert "9 passed" in tested
    # netcore-dummy speaks the starter's protocol: the same packets, the same ids.
    server = Server(str(scripts / "mygame-server"), env, tmp_path)
    try:
        dummy = run([python, "-m", "netcore_dummy.cli", "--port", str(server.port),
                     "--clients", "5", "--duration", "1", "--json"], cwd=tmp_path, env=env)
        assert '"ok":true' in dummy
    finally:
        server.stop()

    # A new packet pair: the rebuild gives it ids, a dispatch entry and a stub...
    add_ping(project)
    said = run(install, cwd=project, env=env)
    assert "mygame build: appended handle_C_PING to src/mygame/handlers.py" in said
    handlers = project / "src" / "mygame" / "handlers.py"
    assert handlers.read_text().endswith('raise NotImplementedError("handle_C_PING")\n')
    ids = run([python, "-c", "import mygame.server_dispatch as d; "
                             "print(d.PKT_C_PING, d.PACKET_IDS['S_PONG'])"], cwd=tmp_path, env=env)
    assert ids.split() == ["1006", "1007"]
    # ... whose body, once written, answers it end to end.
    text = handlers.read_text().replace('    raise NotImplementedError("handle_C_PING")\n',
                                        PONG_BODY)
    handlers.write_text(text.replace("from mygame.Protocol_pb2 import C_CHAT\n",
                                     "from mygame.Protocol_pb2 import C_CHAT, S_PONG\n", 1))
    run(install, cwd=project, env=env)
    server = Server(str(scripts / "mygame-server"), env, tmp_path)
    try:
        sock = logged_in(server.port)
        sock.sendall(frame(1006, b"\x08\x2a"))       # C_PING{seq: 42}
        assert read_packet(sock) == (1007, b"\x08\x2a")     # S_PONG{seq: 42}
        sock.close()
    finally:
        server.stop()
