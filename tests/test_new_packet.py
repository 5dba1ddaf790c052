"""The generator flow a user follows (README, "The generator"): add a message to
proto/Protocol.proto, `pip install .`, run. The build regenerates the protobuf
modules, appends a handler stub and compiles the new dispatch; the server then
routes the new packet to the stub, whose defined outcome is a *handler error*
that closes that client only (logged with the stub's name), while everyone else
goes on.

Slow: a fresh virtual environment and a full build from a copy of the checkout.
"""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from netcore_packets import Protocol_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
C_JUMP = "\nmessage C_JUMP {\n  float height = 1;\n}\n"
PKT_C_LOGIN, PKT_S_LOGIN, PKT_C_JUMP = 1000, 1001, 1013


def checkout_files():
    """The files of this working tree as git sees them (tracked and new, not ignored)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to copy")
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def frame(pkt_id, payload=b""):
    return struct.pack("<HH", len(payload) + 4, pkt_id) + payload


def read_packet(sock):
    """(id, payload) of the next packet, or None once the server has closed."""
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    header = exactly(4)
    if header is None:
        return None
    size, pkt_id = struct.unpack("<HH", header)
    return pkt_id, exactly(size - 4)


def guest(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(frame(PKT_C_LOGIN))
    pkt_id, payload = read_packet(sock)
    assert pkt_id == PKT_S_LOGIN and pb.S_LOGIN.FromString(payload).success
    return sock


def run(command, **kwargs):
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert proc.returncode == 0, f"{command}:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    return proc


# A whole build of every extension in a fresh environment: minutes on 2 cores.
@pytest.mark.timeout(900)
@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="stops the server with SIGTERM")
def test_a_message_added_to_the_proto_is_served_after_pip_install(tmp_path):
    checkout = tmp_path / "netcore"
    for name in checkout_files():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, checkout / name)
    with open(checkout / "proto" / "Protocol.proto", "a", encoding="utf-8") as f:
        f.write(C_JUMP)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    scripts = Path(sysconfig.get_path("scripts", vars={"base": str(venv)}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = os.pathsep.join([str(scripts), env.get("PATH", "")])
    # -v: pip shows the build's own lines, which say what it wrote into the tree.
    built = run([str(scripts / "python"), "-m", "pip", "install", "-v", "."], cwd=checkout,
                env=env)
    said = built.stdout + built.stderr
    assert "netcore build: regenerated src/netcore_packets/Protocol_pb2.py from proto/" in said
    assert "netcore build: appended handle_C_JUMP to src/netcore_game/server_handlers.py" in said
    handlers = (checkout / "src" / "netcore_game" / "server_handlers.py").read_text()
    assert handlers.endswith('raise NotImplementedError("handle_C_JUMP")\n')
    assert "class C_JUMP" in (checkout / "src" / "netcore_packets" / "Protocol_pb2.pyi").read_text()

    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [str(scripts / "netcore-server"), "--port", "0", "--db", str(tmp_path / "game.db")],
            stdout=subprocess.PIPE, stderr=log, text=True, cwd=tmp_path, env=env)
        try:
            banner = server.stdout.readline()
            assert "listening on" in banner, (banner, log_path.read_text())
            port = int(banner.split("listening on ")[1].split()[0].rsplit(":", 1)[1])

            mover, bystander = guest(port), guest(port)
            mover.sendall(frame(PKT_C_JUMP, b"\x0d" + struct.pack("<f", 1.5)))
            assert read_packet(mover) is None            # closed: the stub raised
            mover.close()
            # The server goes on: the other client is served, and so is netcore-dummy,
            # whose client dispatch knows the new id too.
            bystander.sendall(frame(PKT_C_LOGIN))
            assert read_packet(bystander)[0] == PKT_S_LOGIN
            bystander.close()
            dummy = subprocess.run(
                [str(scripts / "netcore-dummy"), "--port", str(port), "--clients", "5",
                 "--duration", "1", "--json"],
                capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
            assert dummy.returncode == 0, dummy.stdout + dummy.stderr
            assert json.loads(dummy.stdout)["ok"]
            server.send_signal(signal.SIGTERM)
            assert server.wait(30) == 0
        finally:
            if server.poll() is None:
                server.kill()
            server.wait(30)
            server.stdout.close()
    text = log_path.read_text()
    assert "handler for packet 1013 raised" in text
    assert 'NotImplementedError: handle_C_JUMP' in text
    assert "handler error" in text

    # A second build has nothing to write into the tree, and says so.
    again = run([str(scripts / "python"), "-m", "pip", "install", "-v", "--no-deps", "."],
                cwd=checkout, env=env)
    said = again.stdout + again.stderr
    assert "netcore build: protobuf modules and packet handlers are up to date" in said
    assert "netcore build: appended" not in said and "netcore build: regenerated" not in said
