"""The chat page in a real browser: headless Chromium logs in, enters a room and
chats with TCP clients in the same room, both ways (tests/browser_support.py)."""
import asyncio
import socket

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
