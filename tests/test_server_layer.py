"""The server layer as a game sees it (netcore_server): a Game of its own, its
room's hooks in their order, a refused enter, client jobs, its own login,
which room an enter joins, its own settings, and what it may not do."""
import ast
import asyncio
import dataclasses
import hashlib
import hmac
from pathlib import Path

import pytest

from netcore_packets import Protocol_pb2 as pb

import netcore_server
from netcore_server import (Character, Database, GameServer, LoginResult, LoginStatus, Player,
                            Room, ServerConfig, setting)
from netcore_server import cli as server_cli
from netcore_server.db import SQLiteDatabase
from netcore_server.protocol import GameProtocol

from game_support import connect, in_game, leave
from layer_support import SayRoom, game, recording_room

SRC = Path(netcore_server.__file__).resolve().parent.parent


def serve(tmp_path, the_game, **config):
    return GameServer(the_game.config(port=0, **config), SQLiteDatabase(tmp_path / "g.db",
                                                                        scrypt_n=2 ** 10),
                      game=the_game)


# -- the hooks, in the room's one order ------------------------------------------------

def test_hooks_run_in_order_on_the_rooms_queue(run, tmp_path):
    log = []
    the_game = game(recording_room(log))

    async def go():
        async with serve(tmp_path, the_game) as server:
            a, b = await in_game(server.port, 2, room=4)
            # Each hears its own join after its S_ENTER_GAME, and later ones.
            await a.until(lambda: (0, f"joined {b.player_id}") in a.chats)
            assert a.chats[:2] == [(0, f"joined {a.player_id}"), (0, f"joined {b.player_id}")]
            a.send_pkt(pb.C_CHAT(msg="say hi"))
            await b.until(lambda: (a.player_id, "hi") in b.chats)
            await leave(a)
            await b.until(lambda: (0, f"left {a.player_id}") in b.chats)
            await leave(b)
            await server.rooms.drain()
            assert server.rooms.get(4) is None
            return a.player_id, b.player_id

    a, b = run(go())
    assert log == [("create", 4, None), ("join_attempt", 4, a), ("join", 4, a),
                   ("join_attempt", 4, b), ("join", 4, b), ("leave", 4, a), ("leave", 4, b),
                   ("dispose", 4, None)]


def test_a_refused_enter_answers_false_counts_it_and_the_player_may_choose_again(run, tmp_path):
    log = []

    async def go():
        room = recording_room(log)
        async with serve(tmp_path, game(room)) as server:
            (watcher,) = await in_game(server.port, 1, room=6)
            (c,) = await connect(server.port)
            login = await c.login()
            room.refuse = {login.players[0].id}
            # The chat goes right behind the enter, before the room has run
            # either: the refused player is no member when it runs, and
            # nobody hears it.
            c.send_pkt(pb.C_ENTER_GAME(playerIndex=0, roomId=6))
            c.send_pkt(pb.C_CHAT(msg="say sneaked in"))
            assert not (await c.expect("S_ENTER_GAME")).success
            # Back to choosing a room: index 1 is another player id, not refused.
            entered = await c.enter(1, 6)
            assert entered.success
            c.send_pkt(pb.C_CHAT(msg="say in at last"))
            await watcher.until(lambda: (entered.playerId, "in at last") in watcher.chats)
            assert all(msg != "sneaked in" for _, msg in watcher.chats + c.chats)
            assert server.refusals.counts["enter", "room_refused"] == 1
            await leave(c, watcher)
            return login.players[0].id

    refused_id = run(go())
    assert ("join_attempt", 6, refused_id) in log and ("join", 6, refused_id) not in log
    assert log[-1] == ("dispose", 6, None)


def test_a_hook_that_raises_is_logged_and_the_room_goes_on(run, tmp_path, caplog):
    def on_join_attempt(self, player):
        raise RuntimeError("a bug in the game")

    async def go():
        async with serve(tmp_path, game(recording_room([], on_join_attempt=on_join_attempt))
                         ) as server:
            (c,) = await connect(server.port)
            assert (await c.login()).success
            assert not (await c.enter(0, 3)).success        # refused, not left hanging
            assert (await c.enter(1, 3)).success is False
            await leave(c)

    run(go())
    assert "on_join_attempt raised" in caplog.text and "a bug in the game" in caplog.text


def test_client_jobs_carry_plain_arguments_and_only_marked_methods_are_jobs(run, tmp_path,
                                                                           caplog):
    class NoJobs(Room):
        def say(self, player, text):        # not marked @client_job
            raise AssertionError("never run")

    assert SayRoom.client_jobs == {"say", "args"} and NoJobs.client_jobs == frozenset()
    assert SayRoom.REMOTE_JOBS == {"say", "args", "refuse_enter"}

    async def go():
        async with serve(tmp_path, game(SayRoom)) as server:
            (c,) = await in_game(server.port, 1, room=2)
            c.send_pkt(pb.C_CHAT(msg="args"))
            await c.until(lambda: c.chats)
            assert c.chats == [(c.player_id, repr((1.5, -7, "text", b"raw", None, True)))]
            await leave(c)
        async with serve(tmp_path, game(NoJobs)) as server:
            (c,) = await in_game(server.port, 1, room=2)
            c.send_pkt(pb.C_CHAT(msg="say x"))       # the handler's room_job raises TypeError
            await c.until(lambda: c.reason is not None)

    run(go())
    assert "handler error: packet 1004: TypeError(\"'say' is not a @client_job of NoJobs\")" in (
        caplog.text)


def test_a_job_dropped_out_of_game_is_counted_under_its_name(run, tmp_path):
    async def go():
        async with serve(tmp_path, game(SayRoom)) as server:
            (c,) = await connect(server.port)
            c.send_pkt(pb.C_CHAT(msg="say too early"))
            assert (await c.login()).success        # answered after the chat was dropped
            assert server.refusals.counts["say", "wrong_state"] == 1
            await leave(c)

    run(go())


# -- the game's own login, rooms and classes --------------------------------------------

SECRET = b"the studio's auth service key"


def token(account: str) -> str:
    return hmac.new(SECRET, account.encode(), hashlib.sha256).hexdigest()


class TokenAccounts(Database):
    """Logins checked against a token signed by the studio's own auth service:
    the password is HMAC(secret, account). No guests; no database."""

    guests = False
    workers = 2

    def __init__(self, config):
        self.seen = []

    async def open(self):
        pass

    async def close(self):
        pass

    async def login(self, account, password, *, create=True, wanted=None):
        self.seen.append(account)
        if not hmac.compare_digest(password, token(account)):
            return LoginResult(LoginStatus.WRONG_PASSWORD)
        return LoginResult(LoginStatus.OK, (Character(0, account.title(), 3),))


def test_a_game_logs_in_through_its_own_authenticator(run, tmp_path):
    the_game = game(SayRoom, accounts=TokenAccounts)

    async def go():
        config = the_game.config(port=0)
        accounts = the_game.accounts(config)
        async with GameServer(config, accounts, game=the_game) as server:
            good, bad, guest = await connect(server.port, 3)
            login = await good.login("alice", token("alice"))
            assert login.success
            assert [(p.name, p.playerType) for p in login.players] == [("Alice", 3)]
            assert (await good.enter(0, 1)).success
            assert not (await bad.login("mallory", token("alice"))).success
            assert not (await guest.login()).success        # no guests: asked, refused
            assert server.refusals.counts["login", "wrong_password"] == 2
            await leave(good, bad, guest)
            return accounts.seen

    assert run(go()) == ["alice", "mallory", ""]


class Hero(Player):
    __slots__ = ()


def test_a_game_chooses_the_room_and_the_player_class(run, tmp_path):
    kinds = []

    class Lobby(SayRoom):
        kind = "lobby"

        def on_join(self, player):
            kinds.append((self.kind, self.room_id, type(player).__name__))

    class Arena(Lobby):
        kind = "arena"

    def choose_room(session, pkt):
        return None if pkt.roomId == 99 else 1000 + pkt.roomId

    the_game = game(Lobby, choose_room=choose_room, player_class=Hero,
                    room_for=lambda room_id: Arena if room_id % 2 else Lobby)

    async def go():
        async with serve(tmp_path, the_game) as server:
            a, b = await in_game(server.port, 2, room=1)
            (c,) = await in_game(server.port, 1, room=2)
            (d,) = await connect(server.port)
            assert (await d.login()).success
            assert not (await d.enter(0, 99)).success
            assert server.refusals.counts["enter", "bad_room"] == 1
            assert sorted(server.rooms._rooms) == [1001, 1002]
            await leave(a, b, c, d)

    run(go())
    assert sorted(kinds) == [("arena", 1001, "Hero"), ("arena", 1001, "Hero"),
                             ("lobby", 1002, "Hero")]


# -- the game's own settings ---------------------------------------------------------------

@dataclasses.dataclass
class ArenaConfig(ServerConfig):
    round_seconds: float = setting(90.0, min=1, help="seconds per round")
    secret_key: str = setting("", flag=False)

    def validate(self):
        super().validate()
        if self.round_seconds > 3600:
            raise ValueError(f"round-seconds {self.round_seconds}: at most an hour")


def test_a_games_settings_are_flags_file_keys_and_variables(tmp_path, capsys):
    the_game = game(SayRoom, config=ArenaConfig, version="2.5.0",
                    description="The arena server.")
    parser = server_cli.build_parser(the_game)
    help_text = parser.format_help()
    assert "--round-seconds N" in help_text and "seconds per round (default: 90.0)" in help_text
    assert "--secret-key" not in help_text             # file and environment only
    assert "--workers" in help_text and "--ws-port" in help_text     # and all of netcore's
    assert parser.prog == "testgame-server" and "The arena server." in help_text
    conf = tmp_path / "arena.toml"
    conf.write_text('round-seconds = 30\nsecret-key = "s3cret"\nport = 1234\n')
    got = server_cli.parse(the_game, ["--config", str(conf), "--port", "4321"],
                           {"NETCORE_ROUND_SECONDS": "45"})
    assert isinstance(got.config, ArenaConfig)
    assert (got.config.round_seconds, got.config.secret_key, got.config.port) == (45.0, "s3cret",
                                                                                  4321)
    with pytest.raises(SystemExit) as exit_:
        server_cli.parse(the_game, ["--round-seconds", "7200"], {})
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == ("testgame-server: error: round-seconds 7200.0: "
                                               "at most an hour")
    with pytest.raises(SystemExit):
        server_cli.parse(the_game, ["--version"], {})
    assert capsys.readouterr().out.strip().startswith("testgame-server 2.5.0 (netcore ")


# -- what a Game must be ------------------------------------------------------------------

def test_a_game_is_checked_when_it_is_made():
    with pytest.raises(TypeError, match="room must be a subclass of netcore_server.room.Room"):
        game(object)
    with pytest.raises(TypeError, match="config must be a subclass"):
        game(SayRoom, config=dict)
    import types
    fake = types.SimpleNamespace(__name__="fake_dispatch", ServerPacketDispatcher=object,
                                 make_send_buffer=None,
                                 PACKET_IDS={"C_CHAT": 1000, "S_LOGIN": 1001,
                                             "C_ENTER_GAME": 1002, "S_ENTER_GAME": 1003})
    with pytest.raises(TypeError, match="C_LOGIN must be packet 1000"):
        GameProtocol(pb, fake)
    with pytest.raises(ValueError, match="tick_rate 120 must be 0"):
        type("TooFast", (Room,), {"tick_rate": 120})
    with pytest.raises(TypeError, match="testgame game's settings are its ArenaConfig, not a "
                                        "ServerConfig"):
        GameServer(ServerConfig(port=0), None, game=game(SayRoom, config=ArenaConfig))


# -- the layout: three floors, no cycles -------------------------------------------------

def imports_of(path: Path, package: str) -> set[str]:
    """Every module `path` imports, at any depth (functions and TYPE_CHECKING included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


@pytest.mark.parametrize("package", ["netcore_server", "netcore_game"])
def test_a_package_has_no_import_cycles(package):
    modules = {f"{package}.{p.stem}": p for p in (SRC / package).glob("*.py")
               if p.stem != "__init__"}
    graph = {name: {m for m in imports_of(path, package) if m in modules and m != name}
             for name, path in modules.items()}
    done, stack = set(), []

    def visit(name):
        if name in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(name):] + [name])}")
        if name in done:
            return
        stack.append(name)
        for dep in sorted(graph[name]):
            visit(dep)
        stack.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_the_server_layer_imports_no_game():
    for path in (SRC / "netcore_server").glob("*.py"):
        games = {m for m in imports_of(path, "netcore_server")
                 if m.split(".")[0] in ("netcore_game", "netcore_packets", "netcore_dummy")}
        assert not games, (path.name, games)


# -- what the game gets: its pages, its metrics by room kind -------------------------

def test_a_games_pages_and_room_metrics(run, tmp_path):
    from test_operations import free_port, get, scrape

    ticked = asyncio.Event()

    class Ticking(SayRoom):
        kind = "ticking"
        tick_rate = 50

        def on_tick(self, dt):
            if self.ticker.ticks >= 5:
                ticked.set()

    pages = {"/": lambda: ("text/html; charset=utf-8", b"<h1>arena</h1>"),
             "/rules.txt": lambda: ("text/plain; charset=utf-8", b"no cheating")}
    the_game = game(Ticking, pages=pages)
    metrics_port, ws_port = free_port(), free_port()

    async def go():
        async with serve(tmp_path, the_game, metrics_port=metrics_port,
                         ws_port=ws_port) as server:
            loop = asyncio.get_running_loop()
            fresh = await loop.run_in_executor(None, scrape, metrics_port)
            assert fresh[("netcore_rooms", (("kind", "ticking"),))] == 0
            assert fresh[("netcore_room_ticks_total", (("kind", "ticking"),))] == 0
            page = await loop.run_in_executor(None, get, ws_port, "/rules.txt")
            assert page == (200, "no cheating")
            (c,) = await in_game(server.port, 1, room=9)
            await asyncio.wait_for(ticked.wait(), 10)
            await leave(c)
            await server.rooms.drain()          # the room goes: its ticks stay counted
            later = await loop.run_in_executor(None, scrape, metrics_port)
            return later

    later = run(go())
    assert later[("netcore_rooms", (("kind", "ticking"),))] == 0
    assert later[("netcore_room_ticks_total", (("kind", "ticking"),))] >= 5
    assert later[("netcore_room_tick_seconds_count", (("kind", "ticking"),))] >= 5
    for name in ("late", "skipped", "over_budget"):
        assert (f"netcore_room_ticks_{name}_total", (("kind", "ticking"),)) in later
