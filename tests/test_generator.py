"""The handler generator (tools/gen_handlers.py): parsing, golden output, stub merging.

After an intended change to the templates, refresh the goldens and review the diff:
delete tests/golden/*, then run the server command from the docstring of
tools/gen_handlers.py, and the client's (--recv S_ --send C_ --name Client), with
--dispatch-out and --handlers-out pointed into tests/golden/ (NAME_dispatch.pyx,
NAME_handlers.py).
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
PROTO = ROOT / "proto" / "Protocol.proto"
sys.path.insert(0, str(ROOT / "tools"))

import codegen  # noqa: E402  (tools/codegen.py, as setup.py imports it)
import gen_handlers  # noqa: E402  (tools/gen_handlers.py)
import gen_proto  # noqa: E402  (tools/gen_proto.py)

PB2_MODULE = "netcore_packets.Protocol_pb2"

SIDES = {
    "server": {"recv": "C_", "send": "S_", "name": "Server"},
    "client": {"recv": "S_", "send": "C_", "name": "Client"},
}

NEW_PACKETS = """
message Heartbeat {
  uint64 tick = 1;
}

message C_PING { uint32 seq = 1; }
message S_PONG { uint32 seq = 1; }
"""


def generate_side(side, out_dir, proto=PROTO, pb2_module=PB2_MODULE):
    return gen_handlers.generate(
        proto,
        dispatch_out=out_dir / f"{side}_dispatch.pyx",
        handlers_out=out_dir / f"{side}_handlers.py",
        pb2_module=pb2_module,
        **SIDES[side],
    )


def netcore_layout(tmp_path):
    """proto/, pyproject.toml and the committed *_pb2.py(i) of this checkout,
    for the build's generating step."""
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    packets = tmp_path / "src" / "netcore_packets"
    packets.mkdir(parents=True)
    for path in (ROOT / "src" / "netcore_packets").glob("*_pb2.py*"):
        shutil.copy2(path, packets / path.name)
    return tmp_path


def proto_with_new_packets(tmp_path):
    proto_dir = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", proto_dir)
    with open(proto_dir / "Protocol.proto", "a", encoding="utf-8") as f:
        f.write(NEW_PACKETS)
    return proto_dir


# -- parsing -----------------------------------------------------------------

def test_ids_follow_declaration_order_of_packets_only():
    text = """
    syntax = "proto3";
    // message C_COMMENTED { }  braces in comments: { {
    /* message C_BLOCK_COMMENT {
       } */
    message Helper { string brace = 1 [json_name = "}{"]; }
    message C_FIRST {
      message C_NESTED { }
      enum Kind { KIND_NONE = 0; }
    }
    enum S_NOT_A_MESSAGE { S_NOT_A_MESSAGE_NONE = 0; }
    service Chat { rpc Send (C_FIRST) returns (S_SECOND) {} }
    message S_SECOND{}
    message Other { }
    message C_THIRD { oneof body { string text = 1; } }
    """
    packets = gen_handlers.parse_packets(text)
    assert [(p.name, p.id) for p in packets] == [
        ("C_FIRST", 1000), ("S_SECOND", 1001), ("C_THIRD", 1002),
    ]


@pytest.mark.parametrize("text, error", [
    ("message C_A { ", "unbalanced '{'"),
    ("message C_A { } }", "unbalanced '}'"),
    ("message C_A { } /* message C_B { }", "unterminated"),
    ("message Only { }", "no C_* or S_* messages"),
    ("message C_A { } message C_A { }", "duplicate messages: C_A"),
])
def test_malformed_proto_is_rejected(text, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        gen_handlers.parse_packets(text)


# -- output ------------------------------------------------------------------

@pytest.mark.parametrize("side", SIDES)
def test_fresh_generation_matches_golden(side, tmp_path):
    generate_side(side, tmp_path)
    for name in (f"{side}_dispatch.pyx", f"{side}_dispatch.pyi", f"{side}_handlers.py"):
        assert (tmp_path / name).read_bytes() == (GOLDEN / name).read_bytes(), name


def test_build_writes_server_handlers_to_game_and_client_handlers_to_dummy(tmp_path):
    # The layout comes from pyproject.toml's [tool.netcore-gen], not the generator.
    written = codegen.generate_sources(netcore_layout(tmp_path))
    src = tmp_path / "src"
    assert sorted(p.relative_to(src).as_posix() for p in written) == [
        "netcore_dummy/client_handlers.py", "netcore_game/server_handlers.py",
        "netcore_packets/client_dispatch.pyi", "netcore_packets/client_dispatch.pyx",
        "netcore_packets/server_dispatch.pyi", "netcore_packets/server_dispatch.pyx",
    ]
    assert (src / "netcore_dummy" / "client_handlers.py").read_bytes() == (
        GOLDEN / "client_handlers.py").read_bytes()
    assert not (src / "netcore_game" / "client_handlers.py").exists()


def test_unchanged_output_is_not_rewritten(tmp_path):
    first = generate_side("server", tmp_path)
    assert sorted(p.name for p in first) == [
        "server_dispatch.pyi", "server_dispatch.pyx", "server_handlers.py"]
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert generate_side("server", tmp_path) == []
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes


def test_cli_writes_what_generate_writes(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--proto", str(PROTO), "--recv", "S_", "--send", "C_", "--name", "Client",
            "--pb2-module", PB2_MODULE,
            "--dispatch-out", str(out / "d.pyx"), "--handlers-out", str(out / "h.py")]
    assert gen_handlers.main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"netcore-gen: wrote {out / 'd.pyx'}", f"netcore-gen: wrote {out / 'd.pyi'}",
        f"netcore-gen: wrote {out / 'h.py'}",
    ]
    generate_side("client", tmp_path)
    assert (out / "d.pyx").read_bytes() == (tmp_path / "client_dispatch.pyx").read_bytes()
    assert (out / "h.py").read_bytes() == (tmp_path / "client_handlers.py").read_bytes()


def test_cli_rejects_same_direction_both_ways(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gen_handlers.main(["--proto", str(PROTO), "--recv", "C_", "--send", "C_",
                           "--name", "X", "--pb2-module", PB2_MODULE,
                           "--dispatch-out", str(tmp_path / "d.pyx"),
                           "--handlers-out", str(tmp_path / "h.py")])
    assert exit_info.value.code == 2
    assert "--recv and --send must differ" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_pb2_module_option_names_the_message_module(tmp_path):
    generate_side("server", tmp_path, pb2_module="mygame.wire_pb2")
    dispatch = (tmp_path / "server_dispatch.pyx").read_text()
    assert "import mygame.wire_pb2 as _pb\n" in dispatch
    assert "netcore_packets.Protocol_pb2" not in dispatch


# -- handler stubs -----------------------------------------------------------

def test_stubs_are_added_only_where_missing(tmp_path):
    generate_side("server", tmp_path)
    handlers = tmp_path / "server_handlers.py"
    stubbed = handlers.read_text()
    login_stub = (
        'def handle_C_LOGIN(session, pkt):\n'
        '    """Handle C_LOGIN (packet id 1000) from the client."""\n'
        '    raise NotImplementedError("handle_C_LOGIN")\n'
    )
    chat_stub = stubbed[stubbed.index("def handle_C_CHAT"):]
    # A developer fills in C_LOGIN, binds C_ENTER_GAME by import and deletes C_CHAT.
    edited = (
        stubbed[: stubbed.index("def handle_C_ENTER_GAME")].rstrip("\n")
        .replace(login_stub, "def handle_C_LOGIN(session, pkt):\n    return 'welcome'\n")
        + "\n\nfrom game.lobby import handle_C_ENTER_GAME  # noqa: E402\n"
    )
    assert "handle_C_CHAT" not in edited
    handlers.write_text(edited)

    assert generate_side("server", tmp_path) == [handlers]
    assert handlers.read_text() == edited + "\n\n" + chat_stub
    # Once every handler exists the file is left alone.
    assert generate_side("server", tmp_path) == []


def test_unparsable_handler_file_is_left_alone(tmp_path):
    handlers = tmp_path / "server_handlers.py"
    handlers.write_text("def handle_C_LOGIN(session, pkt:\n")
    with pytest.raises(ValueError, match="unparsable"):
        generate_side("server", tmp_path)
    assert handlers.read_text() == "def handle_C_LOGIN(session, pkt:\n"


def test_added_messages_get_the_next_ids(tmp_path):
    proto = proto_with_new_packets(tmp_path) / "Protocol.proto"
    for side in SIDES:
        generate_side(side, tmp_path, proto=proto)
    for side in SIDES:
        dispatch = (tmp_path / f"{side}_dispatch.pyx").read_text()
        assert "    PKT_C_LEAVE = 1012\n    PKT_C_PING = 1013\n    PKT_S_PONG = 1014\n" in dispatch
        assert "Heartbeat" not in dispatch
    server_handlers = (tmp_path / "server_handlers.py").read_text()
    client_handlers = (tmp_path / "client_handlers.py").read_text()
    assert '"""Handle C_PING (packet id 1013) from the client."""' in server_handlers
    assert '"""Handle S_PONG (packet id 1014) from the server."""' in client_handlers
    assert "PONG" not in server_handlers and "PING" not in client_handlers


# Compiles the dispatch modules the way setup.py does, against the installed
# netcore's .pxd files.
BUILD_SCRIPT = """
import sys
from Cython.Build import cythonize
from setuptools import setup

setup(
    script_args=["build_ext", "--inplace"],
    ext_modules=cythonize(
        ["pingpkt/server_dispatch.pyx", "pingpkt/client_dispatch.pyx"],
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False},
        include_path=[sys.argv[1]],
    ),
)
"""

# A client pings, the server's generated dispatch routes C_PING to the filled-in
# handle_C_PING, whose reply is framed by make_send_buffer and routed back.
ECHO_SCRIPT = """
import asyncio

import netcore
from netcore.loop import uvloop_available
from pingpkt import Protocol_pb2, client_dispatch, client_handlers
from pingpkt import server_dispatch, server_handlers

COUNT = 100


class ServerSession(netcore.PacketSession):
    dispatcher = server_dispatch.ServerPacketDispatcher(server_handlers)

    def on_recv_packet(self, pkt_id, payload):
        reply = self.dispatcher.dispatch(self, pkt_id, payload)
        self.send(server_dispatch.make_send_buffer(reply))


class ClientSession(netcore.PacketSession):
    dispatcher = client_dispatch.ClientPacketDispatcher(client_handlers)

    def __init__(self):
        self.pongs = []
        self.done = asyncio.get_running_loop().create_future()

    def on_connected(self):
        for seq in range(COUNT):
            self.send(client_dispatch.make_send_buffer(Protocol_pb2.C_PING(seq=seq)))

    def on_recv_packet(self, pkt_id, payload):
        self.dispatcher.dispatch(self, pkt_id, payload)
        if len(self.pongs) == COUNT:
            self.done.set_result(self.pongs)


async def echo():
    async with netcore.ServerService(ServerSession, "127.0.0.1", 0) as server:
        async with netcore.ClientService(ClientSession, "127.0.0.1", server.port) as client:
            (session,) = client.sessions.values()
            return await asyncio.wait_for(session.done, 30)


for kind in ("asyncio", "uvloop") if uvloop_available() else ("asyncio",):
    assert netcore.run(echo(), kind) == list(range(COUNT))
    print(f"echo ok on {kind}")
"""


def fill_in(handlers, name, body, imports=""):
    """Replace the body of stub `name`, as a developer would."""
    text = handlers.read_text()
    stub = f'    raise NotImplementedError("{name}")\n'
    assert stub in text
    text = text.replace(stub, body)
    # Appended rather than spliced in after the docstring: module globals only
    # need to exist by the time a handler runs.
    if imports:
        text += f"\n{imports}  # noqa: E402\n"
    handlers.write_text(text)


@pytest.mark.slow
def test_added_messages_work_end_to_end(tmp_path):
    pytest.importorskip("grpc_tools.protoc", reason="grpc_tools (grpcio-tools) is not installed")
    netcore = importlib.import_module("netcore")
    proto_dir = proto_with_new_packets(tmp_path)
    build = tmp_path / "build"
    package = build / "pingpkt"
    gen_proto.generate(package, proto_dir)
    (package / "__init__.py").write_text("")
    for side in SIDES:
        generate_side(side, package, proto=proto_dir / "Protocol.proto",
                      pb2_module="pingpkt.Protocol_pb2")
    fill_in(package / "server_handlers.py", "handle_C_PING",
            "    return S_PONG(seq=pkt.seq)\n", "from pingpkt.Protocol_pb2 import S_PONG")
    fill_in(package / "client_handlers.py", "handle_S_PONG",
            "    session.pongs.append(pkt.seq)\n")

    pxd_root = str(Path(netcore.__path__[0]).parent)
    subprocess.run([sys.executable, "-c", BUILD_SCRIPT, pxd_root], cwd=build, check=True,
                   stdout=subprocess.DEVNULL)
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(build), os.environ.get("PYTHONPATH")]))}
    (build / "echo.py").write_text(ECHO_SCRIPT)
    result = subprocess.run([sys.executable, "echo.py"], cwd=build, env=env, timeout=120,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "echo ok on asyncio" in result.stdout
    if importlib.util.find_spec("uvloop"):
        assert "echo ok on uvloop" in result.stdout


# -- frozen executable -------------------------------------------------------

@pytest.mark.slow
def test_pyinstaller_exe_matches_script(tmp_path):
    pytest.importorskip("PyInstaller", reason="pyinstaller is not installed")
    subprocess.run(
        ["bash", str(ROOT / "tools" / "build_gen_exe.sh"), str(tmp_path / "dist")],
        env={**os.environ, "PYTHON": sys.executable}, check=True,
    )
    outputs = {}
    for runner, command in (
        ("exe", [str(tmp_path / "dist" / "netcore-gen")]),
        ("script", [sys.executable, str(ROOT / "tools" / "gen_handlers.py")]),
    ):
        out = tmp_path / runner
        subprocess.run(
            [*command, "--proto", str(PROTO), "--recv", "C_", "--send", "S_",
             "--name", "Server", "--pb2-module", PB2_MODULE,
             "--dispatch-out", str(out / "server_dispatch.pyx"),
             "--handlers-out", str(out / "server_handlers.py")],
            check=True,
        )
        outputs[runner] = {p.name: p.read_bytes() for p in out.iterdir()}
        # `new` needs the project templates and its own module in the bundle.
        subprocess.run([*command, "new", str(tmp_path / f"{runner}_game"), "--name", "mygame"],
                       check=True, stdout=subprocess.DEVNULL)
        outputs[runner]["project"] = sorted(
            (p.relative_to(tmp_path / f"{runner}_game").as_posix(), p.read_bytes())
            for p in (tmp_path / f"{runner}_game").rglob("*") if p.is_file())
    assert outputs["exe"] == outputs["script"]
    assert outputs["exe"]["server_dispatch.pyx"] == (GOLDEN / "server_dispatch.pyx").read_bytes()
    assert len(outputs["exe"]["project"]) == 13


# -- what the build says and regenerates ------------------------------------------

def test_the_build_reports_appended_stubs_and_then_nothing(tmp_path):
    netcore_layout(tmp_path)
    first = []
    codegen.generate_sources(tmp_path, report=first.append)
    assert "wrote src/netcore_game/server_handlers.py" in first        # a new file
    assert not [line for line in first if line.startswith("regenerated")]
    (tmp_path / "proto" / "Protocol.proto").write_text(
        PROTO.read_text() + "\nmessage C_JUMP { float height = 1; }\n")
    second = []
    codegen.generate_sources(tmp_path, report=second.append)
    assert sorted(second) == [
        "appended handle_C_JUMP to src/netcore_game/server_handlers.py",
        "regenerated src/netcore_packets/Protocol_pb2.py from proto/",
        "regenerated src/netcore_packets/Protocol_pb2.pyi from proto/",
        "wrote src/netcore_packets/client_dispatch.pyi",
        "wrote src/netcore_packets/client_dispatch.pyx",
        "wrote src/netcore_packets/server_dispatch.pyi",
        "wrote src/netcore_packets/server_dispatch.pyx",
    ]
    third = []
    assert codegen.generate_sources(tmp_path, report=third.append) == []
    assert third == ["protobuf modules and packet handlers are up to date"]


def test_cli_says_what_it_appended_and_when_it_is_up_to_date(tmp_path, capsys):
    argv = ["--proto", str(PROTO), "--recv", "C_", "--send", "S_", "--name", "Server",
            "--pb2-module", PB2_MODULE,
            "--dispatch-out", str(tmp_path / "d.pyx"), "--handlers-out", str(tmp_path / "h.py")]
    (tmp_path / "h.py").write_text("def handle_C_LOGIN(session, pkt):\n    pass\n")
    assert gen_handlers.main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"netcore-gen: appended handle_C_ENTER_GAME to {tmp_path / 'h.py'}",
        f"netcore-gen: appended handle_C_CHAT to {tmp_path / 'h.py'}",
        f"netcore-gen: appended handle_C_MOVE to {tmp_path / 'h.py'}",
        f"netcore-gen: appended handle_C_RESUME to {tmp_path / 'h.py'}",
        f"netcore-gen: appended handle_C_LEAVE to {tmp_path / 'h.py'}",
        f"netcore-gen: wrote {tmp_path / 'd.pyx'}",
        f"netcore-gen: wrote {tmp_path / 'd.pyi'}",
    ]
    assert gen_handlers.main(argv) == 0
    assert capsys.readouterr().out == "netcore-gen: up to date\n"


def copy_packets(tmp_path):
    """proto/ and the committed *_pb2.py(i), as a checkout has them."""
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    packets = tmp_path / "packets"
    packets.mkdir()
    for path in (ROOT / "src" / "netcore_packets").glob("*_pb2.py*"):
        shutil.copy2(path, packets / path.name)
    return tmp_path / "proto", packets


def test_committed_pb2_modules_record_the_digest_of_their_proto(tmp_path):
    proto_dir, packets = copy_packets(tmp_path)
    assert gen_proto.stale_protos(proto_dir, packets) == []
    assert gen_proto.regenerate(proto_dir, packets) == []           # nothing to run protoc for
    with open(proto_dir / "Protocol.proto", "a", encoding="utf-8") as f:
        f.write("\nmessage C_JUMP { float height = 1; }\n")
    assert gen_proto.stale_protos(proto_dir, packets) == [proto_dir / "Protocol.proto"]


def test_a_stale_pb2_without_grpc_tools_stops_the_build_naming_the_command(tmp_path, monkeypatch):
    proto_dir, packets = copy_packets(tmp_path)
    with open(proto_dir / "Protocol.proto", "a", encoding="utf-8") as f:
        f.write("\nmessage C_JUMP { float height = 1; }\n")
    monkeypatch.setitem(sys.modules, "grpc_tools", None)            # import fails
    with pytest.raises(gen_proto.ProtocUnavailable) as info:
        gen_proto.regenerate(proto_dir, packets)
    message = str(info.value)
    assert "\n" not in message and "stale for Protocol.proto" in message
    assert message.endswith("pip install 'grpcio-tools>=1.85.1,<1.86', then build again")


def test_a_changed_proto_regenerates_only_its_modules(tmp_path):
    pytest.importorskip("grpc_tools.protoc", reason="grpc_tools (grpcio-tools) is not installed")
    proto_dir, packets = copy_packets(tmp_path)
    with open(proto_dir / "Protocol.proto", "a", encoding="utf-8") as f:
        f.write("\nmessage C_JUMP { float height = 1; }\n")
    written = gen_proto.regenerate(proto_dir, packets)
    assert sorted(p.name for p in written) == ["Protocol_pb2.py", "Protocol_pb2.pyi"]
    assert "class C_JUMP" in (packets / "Protocol_pb2.pyi").read_text()
    assert gen_proto.stale_protos(proto_dir, packets) == []


def test_the_fix_command_pins_the_grpcio_tools_the_build_requires():
    import tomllib
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert gen_proto.GRPCIO_TOOLS in pyproject["build-system"]["requires"]
