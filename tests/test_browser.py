"""The chat page in a real browser: headless Chromium logs in, enters a room and
chats with TCP clients in the same room, both ways (tests/browser_support.py)."""
import os
import socket
from pathlib import Path

from netcore_packets import Protocol_pb2 as pb

from netcore_server.db import SQLiteDatabase
from netcore_game.server import GameServer, ServerConfig

from browser_support import Chromium
from game_support import in_game, leave

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chat_page_in_chromium_chats_with_tcp_clients(run, tmp_path):
    room = 7

    async def main():
        config = ServerConfig(port=0, db=str(tmp_path / "game.db"), ws_port=free_port())
        async with GameServer(config, SQLiteDatabase(config.db)) as server:
            tcp = await in_game(server.port, 2, room=room)
            async with Chromium(tmp_path / "profile") as browser:
                page = await browser.open(f"http://127.0.0.1:{server.ws_port}/")
                await page.wait_for("window.chat && chat.state === 'connected'")
                await page.click("login")                   # an empty name: a guest
                await page.wait_for("chat.state === 'logged in'")
                await page.type_into("room", str(room))
                await page.click("enter")
                browser_id = int(await page.wait_for("chat.state === 'in game' && chat.playerId"))
                assert await page.evaluate("document.title") == (
                    f"netcore chat: in game (player {browser_id}, room {room}, 0 chats)")

                # The server has it as a WebSocket session, in game in that room.
                [ws_session] = [s for s in server.service.sessions.values()
                                if s.transport_kind == "ws"]
                assert ws_session.player.player_id == browser_id
                assert ws_session.player.room.room_id == room

                # Browser -> TCP: both TCP players get the page's chat, from its id.
                await page.type_into("say", "hello from the browser")
                await page.click("send")
                for client in tcp:
                    assert await client.wait_chats(1) == [(browser_id, "hello from the browser")]

                # TCP -> browser: the page shows both TCP players' chats, with their ids.
                tcp[0].send_pkt(pb.C_CHAT(msg="hello from tcp 0"))
                tcp[1].send_pkt(pb.C_CHAT(msg="and from tcp 1 ✓"))
                chats = await page.wait_for("chat.chats.length >= 3 && chat.chats")
                assert chats == [
                    {"playerId": str(browser_id), "msg": "hello from the browser"},
                    {"playerId": str(tcp[0].player_id), "msg": "hello from tcp 0"},
                    {"playerId": str(tcp[1].player_id), "msg": "and from tcp 1 ✓"},
                ]
                shown = await page.evaluate(
                    "[...document.querySelectorAll('#log li')].map(li => li.textContent)")
                assert shown == [f"[{browser_id}]hello from the browser",
                                 f"[{tcp[0].player_id}]hello from tcp 0",
                                 f"[{tcp[1].player_id}]and from tcp 1 ✓"]
                for client in tcp:
                    await client.wait_chats(3)
                    assert client.chats[1:] == [(tcp[0].player_id, "hello from tcp 0"),
                                                (tcp[1].player_id, "and from tcp 1 ✓")]
                shot = await page.screenshot(tmp_path / "chat-page.png")
                print(f"screenshot: {tmp_path / 'chat-page.png'}")
                assert shot.startswith(PNG_SIGNATURE) and len(shot) > 5000

                # The server counted the page's session under its transport.
                assert {s.transport_kind for s in server.service.sessions.values()} == {"tcp", "ws"}
            await leave(*tcp)

    run(main(), timeout=120)


def artifacts_dir(tmp_path):
    """Where screenshots are kept: $NETCORE_ARTIFACTS (.ci/run sets it), else tmp_path."""
    folder = Path(os.environ.get("NETCORE_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_field_page_walks_a_player_into_anothers_view_and_both_draw_it(run, tmp_path):
    """Two chat pages in one room's field: one walks (the page's click-to-walk,
    one move in flight) until the other is within its view radius; each page
    then draws the other on its canvas. Screenshots of both are kept."""
    room = 3

    async def enter(page):
        await page.wait_for("window.chat && chat.state === 'connected'")
        await page.click("login")
        await page.wait_for("chat.state === 'logged in'")
        await page.type_into("room", str(room))
        await page.click("enter")
        return await page.wait_for("chat.state === 'in game' && chat.field.me && chat.playerId")

    async def main():
        config = ServerConfig(port=0, db=str(tmp_path / "game.db"), ws_port=free_port(),
                              field_size=300, view_radius=50, max_step=10)
        async with GameServer(config, SQLiteDatabase(config.db)) as server:
            async with Chromium(tmp_path / "profile") as browser:
                url = f"http://127.0.0.1:{server.ws_port}/?radius=50&step=10"
                walker, stayer = await browser.open(url), await browser.open(url)
                walker_id, stayer_id = await enter(walker), await enter(stayer)
                assert await walker.evaluate("chat.field.on") is True
                # Apart first (the start positions are the server's, at random).
                await walker.evaluate(
                    "chat.goTo(chat.field.me.x < 150 ? 295 : 5, chat.field.me.y < 150 ? 295 : 5)")
                await walker.wait_for("chat.field.target === null", timeout=60)
                far = await stayer.evaluate("chat.field.me")
                # Up to 30 short of it: in view (50), and both dots apart on the canvases.
                await walker.evaluate(
                    f"chat.goTo({far['x']} + ({far['x']} < 150 ? 30 : -30), {far['y']})")
                await walker.wait_for(f"chat.field.drawn.includes('{stayer_id}')", timeout=60)
                await stayer.wait_for(f"chat.field.drawn.includes('{walker_id}')", timeout=60)
                # Each draws the other where the server has it.
                room_field = server.rooms.get(room).field
                slots = {p.player_id: p.slot for p in server.rooms.get(room).players.values()}
                await walker.wait_for("chat.field.target === null", timeout=60)
                seen = await stayer.evaluate(f"chat.field.view['{walker_id}']")
                assert (seen["x"], seen["y"]) == room_field.position(slots[int(walker_id)])
                folder = artifacts_dir(tmp_path)
                for name, page in (("field-walker", walker), ("field-stayer", stayer)):
                    shot = await page.screenshot(folder / f"{name}.png")
                    assert shot.startswith(PNG_SIGNATURE) and len(shot) > 5000
                    print(f"screenshot: {folder / name}.png")

    run(main(), timeout=180)


def test_the_chat_page_comes_back_after_a_drop_and_misses_no_chat(run, tmp_path):
    room = 3

    async def main():
        config = ServerConfig(port=0, db=str(tmp_path / "game.db"), ws_port=free_port())
        async with GameServer(config, SQLiteDatabase(config.db)) as server:
            (tcp,) = await in_game(server.port, 1, room=room)
            async with Chromium(tmp_path / "profile") as browser:
                page = await browser.open(f"http://127.0.0.1:{server.ws_port}/")
                await page.wait_for("window.chat && chat.state === 'connected'")
                await page.click("login")
                await page.wait_for("chat.state === 'logged in'")
                await page.type_into("room", str(room))
                await page.click("enter")
                browser_id = int(await page.wait_for("chat.state === 'in game' && chat.playerId"))
                for i in range(5):
                    tcp.send_pkt(pb.C_CHAT(msg=f"before {i}"))
                await page.wait_for("chat.chats.length >= 5")
                # The network drops the page's connection; the room talks on.
                await page.evaluate("chat.drop()")
                for i in range(5):
                    tcp.send_pkt(pb.C_CHAT(msg=f"during {i}"))
                await tcp.wait_chats(10)
                await page.wait_for("chat.resumes === 1 && chat.state === 'in game'")
                tcp.send_pkt(pb.C_CHAT(msg="after"))
                chats = await page.wait_for("chat.chats.length >= 11 && chat.chats")
                assert [c["msg"] for c in chats] == (
                    [f"before {i}" for i in range(5)] + [f"during {i}" for i in range(5)]
                    + ["after"])
                assert int(await page.evaluate("chat.playerId")) == browser_id
                assert server.holds.counts.resumed == 1
                # Still the same player to the room: the page's chat reaches tcp.
                await page.type_into("say", "back")
                await page.click("send")
                assert (await tcp.wait_chats(12))[-1] == (browser_id, "back")
            await leave(tcp)

    run(main(), timeout=120)
