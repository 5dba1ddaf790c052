"""The real netcore-server process driven by the real netcore-dummy process."""
import json
import socket
import subprocess
import sys

from game_support import ServerProcess


def run_dummy(port, *args, timeout=120):
    proc = subprocess.run(
        [sys.executable, "-m", "netcore_dummy.cli", "--port", str(port), "--json", *args],
        capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    return proc.returncode, json.loads(lines[0])


def test_200_clients_in_2_rooms_for_5_seconds_lose_nothing(tmp_path, loop_kind):
    with ServerProcess(tmp_path, loop_kind, "--log-level", "WARNING") as server:
        code, report = run_dummy(server.port, "--clients", "200", "--rooms", "2",
                                 "--duration", "5", "--rate", "1", "--loop", loop_kind)
        assert server.stop() == 0
    assert report["in_game"] == 200 and report["failed"] == 0
    # 2 rooms x 100 senders x 5 chats x 100 receivers each.
    assert report["sent"] == 1000
    assert report["expected"] == 100_000
    assert report["received"] == report["unique"] == 100_000
    assert report["lost"] == report["duplicated"] == report["out_of_order"] == 0
    # wrong_sender counts chats from the other room (or with another player's id):
    # every client heard exactly its own room.
    assert report["wrong_sender"] == report["foreign"] == report["malformed"] == 0
    assert report["ok"] and code == 0
    assert "Traceback" not in server.log_text()


def test_the_dummy_fails_clearly_when_no_server_listens(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]           # bound, not listening: connection refused
        proc = subprocess.run([sys.executable, "-m", "netcore_dummy.cli", "--port", str(port),
                               "--clients", "3", "--duration", "1"],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2                 # could not start: the documented status
    assert "Traceback" not in proc.stderr
    assert "cannot connect to 127.0.0.1" in proc.stderr


def test_hold_keeps_clients_in_game_without_chat_and_times_the_logins(tmp_path, loop_kind):
    with ServerProcess(tmp_path, loop_kind, "--log-level", "WARNING") as server:
        code, report = run_dummy(server.port, "--clients", "50", "--rooms", "5", "--hold",
                                 "--duration", "0.2", "--loop", loop_kind)
    assert code == 0 and report["ok"]
    assert report["in_game"] == 50 and report["sent"] == 0 and report["received"] == 0
    assert report["logins_per_s"] > 0
