"""What a user meets at the command line: settings checked where they are given,
one-line errors, start-up failures that say what failed, --print-config with
origins, --version and defaults in --help for every command, Ctrl-C, and a
README synopsis that lists every flag."""
import argparse
import asyncio
import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import netcore
from netcore import demo
from netcore.loop import uvloop_available
from netcore_dummy import cli as dummy_cli
from netcore_game import cli
from netcore_server.db import SQLiteDatabase
from netcore_game.server import GameServer, ServerConfig
from netcore_server import StartupError
from netcore_server.settings import fields_of
from netcore_tools import codegen, gen_handlers, new_project

from game_support import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
LOG_LEVELS = "DEBUG, INFO, WARNING, ERROR"


def error_of(capsys, argv, environ=None):
    """The one stderr line of a refused netcore-server invocation (exit status 2)."""
    with pytest.raises(SystemExit) as exit_:
        cli.parse(argv, environ or {})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("netcore-server: error: ")
    return err[len("netcore-server: error: "):].rstrip("\n")


@pytest.mark.parametrize("argv, environ, message", [
    (["--max-sessions", "-5"], {}, "--max-sessions -5: must be >= 1"),
    (["--port", "70000"], {}, "--port 70000: must be <= 65535"),
    (["--port", "seven"], {}, "--port seven: must be an integer"),
    (["--packet-rate", "nan"], {}, "--packet-rate nan: must be a finite number"),
    (["--max-packet-size", "70000"], {}, "--max-packet-size 70000: must be <= 65535"),
    (["--log-level", "loud"], {}, f"--log-level loud: must be one of {LOG_LEVELS}"),
    ([], {"NETCORE_LOG_LEVEL": "loud"}, f"NETCORE_LOG_LEVEL=loud: must be one of {LOG_LEVELS}"),
    (["--loop", "tokio"], {}, "--loop tokio: must be one of uvloop, asyncio"),
    ([], {"NETCORE_LOOP": "tokio"}, "NETCORE_LOOP=tokio: must be one of uvloop, asyncio"),
    ([], {"NETCORE_MAX_SESSIONS": "lots"}, "NETCORE_MAX_SESSIONS=lots: must be an integer"),
    ([], {"NETCORE_IDLE_TIMEOUT": "-1"}, "NETCORE_IDLE_TIMEOUT=-1: must be >= 0"),
    (["--max-packet-size", "100"], {},
     "max-packet-size 100 cannot carry a chat of max-chat-bytes 512 (needs 528)"),
    (["--db-pool-size", "0"], {}, "--db-pool-size 0: must be >= 1"),
    (["--fast-replies", "maybe"], {}, "--fast-replies maybe: must be true or false"),
    (["--tcp-transport", "uv"], {}, "--tcp-transport uv: must be one of auto, netcore, loop"),
    ([], {"NETCORE_FAST_REPLIES": "2"}, "NETCORE_FAST_REPLIES=2: must be true or false"),
    ([], {"NETCORE_DB_POOL_SIZE": "many"}, "NETCORE_DB_POOL_SIZE=many: must be an integer"),
    (["--db-statement-timeout", "0"], {}, "db-statement-timeout 0.0: must be > 0 seconds"),
    (["--db-connect-timeout", "-1"], {}, "--db-connect-timeout -1: must be >= 0"),
    (["--db", "mysql://u:pw@db/game"], {},
     "db 'mysql://u:***@db/game': must be a SQLite file path or a postgresql:// URL"),
])
def test_a_bad_value_is_one_line_naming_the_setting_and_the_value(capsys, argv, environ, message):
    assert error_of(capsys, argv, environ) == message


@pytest.mark.parametrize("text, message", [
    ("max-sessions = 0\n", "max-sessions = 0: must be >= 1"),
    ('log-level = "loud"\n', f"log-level = 'loud': must be one of {LOG_LEVELS}"),
    ('loop = "tokio"\n', "loop = 'tokio': must be one of uvloop, asyncio"),
    ("port = 1\n[server]\nport = 2\n", "port is set twice (port at the top level and port "
                                       "under [server]): keep one"),
    ("max-sessions = 1\nmax_sessions = 2\n", "max-sessions is set twice"),
    ('fast-replies = "no"\n', "fast-replies must be bool, not str ('no')"),
])
def test_a_bad_value_in_the_file_names_the_file_and_the_key(capsys, tmp_path, text, message):
    conf = tmp_path / "server.toml"
    conf.write_text(text)
    assert error_of(capsys, ["--config", str(conf)]).startswith(f"{conf}: {message}")


def test_a_flag_wins_over_the_environment_which_wins_over_the_file(tmp_path):
    conf = tmp_path / "server.toml"
    conf.write_text('port = 1111\nmax-sessions = 50\nlog-level = "error"\n')
    got = cli.parse(["--config", str(conf), "--port", "3333"],
                    {"NETCORE_PORT": "2222", "NETCORE_MAX_SESSIONS": "60", "NETCORE_DB": "x.db"})
    assert (got.config.port, got.config.max_sessions, got.config.db) == (3333, 60, "x.db")
    assert got.config.log_level == "ERROR"              # case-insensitive, normalized
    assert {name: o.kind for name, o in got.origins.items()
            if name in ("port", "max_sessions", "db", "log_level", "host")} == {
        "port": "flag", "max_sessions": "env", "db": "env", "log_level": "file", "host": "default"}


@pytest.mark.parametrize("argv, environ", [
    (["--log-level", "debug"], {}), (["--log-level", "Debug"], {}),
    ([], {"NETCORE_LOG_LEVEL": "debug"}),
])
def test_the_log_level_is_case_insensitive(argv, environ):
    assert cli.parse(argv, environ).config.log_level == "DEBUG"


def test_print_config_shows_every_setting_the_loop_and_where_each_came_from(tmp_path):
    conf = tmp_path / "server.toml"
    conf.write_text("[server]\nmax-chat-bytes = 100\n")
    env = {**os.environ, "NETCORE_IDLE_TIMEOUT": "30"}
    env.pop("NETCORE_LOOP", None)
    out = subprocess.run([sys.executable, "-m", "netcore_game.cli", "--config", str(conf),
                          "--port", "4321", "--print-config"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    lines = {line.split(" = ")[0]: line for line in out.stdout.splitlines() if " = " in line}
    assert set(lines) == {name.replace("_", "-") for name in fields_of(ServerConfig)}
    assert re.fullmatch(r"port = 4321 +# flag", lines["port"])
    assert re.fullmatch(rf"max-chat-bytes = 100 +# file {re.escape(str(conf))}",
                        lines["max-chat-bytes"])
    assert re.fullmatch(r"idle-timeout = 30.0 +# env", lines["idle-timeout"])
    assert re.fullmatch(r"max-sessions = 20000 +# default", lines["max-sessions"])
    kind = "uvloop" if uvloop_available() else "asyncio"
    assert re.fullmatch(rf'loop = "{kind}" +# default: uvloop when installed, and it is '
                        rf'{"installed" if kind == "uvloop" else "not installed"}', lines["loop"])


def busy_port():
    """A socket that holds a port, listening; the caller closes it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def failed_start(tmp_path, *args):
    """The one line a server that cannot start prints, and its exit status 2."""
    proc = ServerProcess(tmp_path, "asyncio", *args)
    with pytest.raises(RuntimeError, match="server did not start"):
        proc.start()
    assert proc.stop(sig=None) == 2
    log = proc.log_text()
    assert "Traceback" not in log, log
    (line,) = [line for line in log.splitlines() if line.startswith("netcore-server:")]
    return line


def test_the_postgresql_settings_come_from_the_config_file_too(tmp_path):
    conf = tmp_path / "server.toml"
    conf.write_text('[server]\ndb = "postgresql://netcore@db1:5432/netcore"\n'
                    'db-pool-size = 8\ndb-connect-timeout = 2\ndb-statement-timeout = 1.5\n')
    got = cli.parse(["--config", str(conf)], {"NETCORE_DB_POOL_SIZE": "6"}).config
    assert (got.db, got.db_pool_size, got.db_connect_timeout, got.db_statement_timeout) == (
        "postgresql://netcore@db1:5432/netcore", 6, 2.0, 1.5)


def test_print_config_hides_a_database_password(capsys):
    assert cli.main(["--db", "postgres://game:s3cret@db.example:5433/netcore?password=also",
                     "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "also" not in out
    (line,) = [l for l in out.splitlines() if l.startswith("db = ")]
    assert re.fullmatch(r'db = "postgres://game:\*\*\*@db\.example:5433/netcore\?password=\*\*\*" +'
                        r"# flag: password hidden", line), line


def test_a_game_port_in_use_is_named(tmp_path):
    with busy_port() as held:
        port = held.getsockname()[1]
        line = failed_start(tmp_path, "--port", str(port))
    # ServerProcess puts --port 0 first; the later flag wins.
    assert line == f"netcore-server: cannot listen on 127.0.0.1:{port} (game port): " \
                   f"address already in use"


def test_a_metrics_port_in_use_is_named(tmp_path):
    with busy_port() as held:
        port = held.getsockname()[1]
        line = failed_start(tmp_path, "--metrics-port", str(port))
    assert line == f"netcore-server: cannot listen on 127.0.0.1:{port} (metrics port): " \
                   f"address already in use"


def test_a_host_that_does_not_resolve_is_named(tmp_path):
    line = failed_start(tmp_path, "--host", "no-such-host.invalid")
    assert line.startswith("netcore-server: cannot listen on no-such-host.invalid:0 (game port): "
                           "host 'no-such-host.invalid' does not resolve")


def test_the_metrics_port_is_taken_before_the_game_port_listens(run, tmp_path):
    with busy_port() as held:
        config = ServerConfig(port=0, db=str(tmp_path / "game.db"),
                              metrics_port=held.getsockname()[1])
        server = GameServer(config, SQLiteDatabase(config.db))

        async def go():
            with pytest.raises(StartupError, match=r"\(metrics port\): address already in use"):
                await server.start()
            return server.service.listening

        assert run(go()) is False


# -- every command: --version, and defaults in --help ---------------------------

PARSERS = {
    "netcore-server": cli.build_parser,
    "netcore-dummy": dummy_cli.build_parser,
    "python -m netcore.demo": demo.build_parser,
    "netcore-gen": gen_handlers.build_parser,
    "netcore-gen new": new_project.build_parser,
    "netcore-gen build": codegen.build_parser,
}


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_option_of_every_command_says_its_default_in_help(command):
    parser = PARSERS[command]()
    for action in parser._actions:
        # --help, --version, on/off switches and required arguments have no default to show.
        if (isinstance(action, (argparse._HelpAction, argparse._VersionAction))
                or action.nargs == 0 or action.required):
            continue
        assert action.help and "default" in action.help, (command, action.option_strings)


def test_netcore_gen_says_its_defaults_and_version(capsys):
    with pytest.raises(SystemExit):
        gen_handlers.main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    # No module of this checkout is a default: every path and module name is given.
    assert "--pb2-module PB2_MODULE" in shown and "netcore_packets" not in shown
    assert "netcore-gen new PATH" in shown and "netcore-gen build" in shown
    with pytest.raises(SystemExit) as exit_:
        gen_handlers.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"netcore-gen {netcore.__version__}\n"


@pytest.mark.parametrize("command", [
    ["netcore-gen"], [sys.executable, "-m", "netcore.demo"]])
def test_version_of_the_other_commands(command):
    if command == ["netcore-gen"]:
        (entry,) = importlib.metadata.entry_points(group="console_scripts", name="netcore-gen")
        module, func = entry.value.split(":")
        command = [sys.executable, "-c",
                   f"import sys; from {module} import {func}; sys.exit({func}())"]
        expected = "netcore-gen"
    else:
        expected = "netcore"
    out = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{expected} {netcore.__version__}\n"


def test_the_dummy_names_a_bad_netcore_loop(capsys, monkeypatch):
    monkeypatch.setenv("NETCORE_LOOP", "tokio")
    assert dummy_cli.main(["--clients", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netcore-dummy: error: NETCORE_LOOP=tokio: ") and err.count("\n") == 1


# -- Ctrl-C -----------------------------------------------------------------------

UNWIND_SCRIPT = """
import asyncio, sys
import netcore

async def main():
    try:
        print("ready", flush=True)
        await asyncio.Event().wait()
    finally:
        await asyncio.sleep(0)          # cleanup that needs the loop still runs
        print("cleaned up", flush=True)

try:
    netcore.run(main(), sys.argv[1])
except KeyboardInterrupt:
    print("KeyboardInterrupt after cleanup", flush=True)
    sys.exit(130)
"""


def interrupt_after(command, ready, **kwargs):
    """Run command, send SIGINT once it printed `ready`; (exit status, stdout, stderr)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)
    try:
        first = proc.stdout.readline()
        assert ready in first, (first, proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, first + out, err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is a console event on Windows")
def test_ctrl_c_unwinds_the_main_coroutine_then_raises_keyboard_interrupt(loop_kind):
    code, out, err = interrupt_after([sys.executable, "-c", UNWIND_SCRIPT, loop_kind], "ready")
    assert out.splitlines() == ["ready", "cleaned up", "KeyboardInterrupt after cleanup"]
    assert code == 130 and "Traceback" not in err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is a console event on Windows")
def test_ctrl_c_ends_netcore_dummy_with_130_and_no_traceback(loop_kind):
    # A "server" that accepts and never answers: the dummy waits for its login
    # answer inside netcore.run, where Ctrl-C unwinds it.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(60)
        proc = subprocess.Popen(
            [sys.executable, "-m", "netcore_dummy.cli", "--port", str(listener.getsockname()[1]),
             "--clients", "1", "--enter-timeout", "60", "--loop", loop_kind],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            conn, _ = listener.accept()          # the dummy is connected and waiting
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
            conn.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 130, (out, err)
    assert err.strip() == "netcore-dummy: interrupted" and out == ""


# -- the README synopsis ------------------------------------------------------------

def synopsis_flags(command):
    """{flag: value or None} of the README's synopsis code block of `command`."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(rf"```sh\n({re.escape(command)} \[.*?)```", readme, re.S).group(1)
    return {m.group(1): m.group(2) for m in re.finditer(r"\[(--[a-z-]+)(?: ([^\]]+))?\]", block)}


def shown_default(value):
    if isinstance(value, bool):         # as flags, files and the environment spell it
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_the_readme_synopsis_of_netcore_server_lists_every_flag_with_its_default():
    flags = synopsis_flags("netcore-server")
    parser = cli.build_parser()
    options = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    assert set(flags) == options - {"--help"}
    fields = fields_of(ServerConfig)
    for action in parser._actions:
        if action.dest in fields:
            field = fields[action.dest]
            if field.default == "":         # unset by default: the synopsis shows a placeholder
                assert flags[action.option_strings[0]], action.option_strings
                continue
            expected = (shown_default(field.default) if field.default is not None
                        else "|".join(field.metadata["choices"]))
            assert flags[action.option_strings[0]] == expected, action.option_strings


def test_the_readme_synopsis_of_netcore_dummy_lists_every_flag_with_its_default():
    flags = synopsis_flags("netcore-dummy")
    parser = dummy_cli.build_parser()
    for action in parser._actions:
        option = action.option_strings[0]
        if isinstance(action, argparse._HelpAction):
            continue
        assert option in flags, option
        if action.choices:
            assert flags[option] == "|".join(action.choices)
        elif action.nargs != 0:
            assert flags[option] == shown_default(action.default), option
    assert set(flags) <= {s for a in parser._actions for s in a.option_strings}


# netcore.run handles SIGINT while it runs, and leaves no handler of its own behind.
def test_run_restores_the_sigint_handler(loop_kind):
    async def nothing():
        return 7

    before = signal.getsignal(signal.SIGINT)
    assert netcore.run(nothing(), loop_kind) == 7
    assert signal.getsignal(signal.SIGINT) is before


def test_wait_for_never_loses_a_cancellation_that_lands_as_its_future_completes(run):
    # asyncio.wait_for before 3.12 returned the result here and dropped the
    # cancel (gh-86296): a Ctrl-C as a connection completed was ignored.
    from netcore.loop import wait_for

    async def go():
        fut = asyncio.get_running_loop().create_future()
        waiter = asyncio.ensure_future(wait_for(fut, 10))
        await asyncio.sleep(0)              # the waiter now waits on fut
        fut.set_result("done")
        waiter.cancel()                     # the same iteration
        with pytest.raises(asyncio.CancelledError):
            await waiter
        # and otherwise it is wait_for: a result, and a timeout
        assert await wait_for(asyncio.sleep(0, "ok"), 10) == "ok"
        with pytest.raises(asyncio.TimeoutError):
            await wait_for(asyncio.sleep(10), 0.01)
    run(go())


@pytest.mark.parametrize("given, shown", [
    ("postgresql://netcore:s3cret@db1:5432/game", "postgresql://netcore:***@db1:5432/game"),
    ("postgres://u:pa:ss@h/db?sslmode=require&password=two",
     "postgres://u:***@h/db?sslmode=require&password=***"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("postgresql://u:pw@[::1/db", "postgresql://u:***@[::1/db"),       # malformed: as given
    ("/var/lib/netcore/game.db", "/var/lib/netcore/game.db"),
])
def test_a_database_is_shown_without_its_password(given, shown):
    from netcore_server.db import describe_database
    assert describe_database(given) == shown
