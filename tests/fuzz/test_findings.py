"""What the coverage-guided fuzz targets (tests/fuzz/fuzz_*.py) found, each
as a plain test of the behaviour it broke. Their inputs are kept in the
targets' corpora too, so the replay in test_fuzz.py runs them again."""
import pytest

from netcore_cluster import wire


# fuzz_wire.py, within 300 runs: a slot name with a byte >= 0x80 in a JOINED,
# LEFT, ACK or REFUSED segment (or an upstream header) raised
# UnicodeDecodeError from the readers, which promise WireError for anything
# that does not parse.
@pytest.mark.parametrize("message", [
    wire.up_header(1, 1, "node-1").replace(b"node-1", b"n\xf3de-1"),
    wire.down_header(1, 1, 0, 1, 0)
    + wire.member_segment(wire.JOINED, 5, 1, "node-2").replace(b"node-2", b"n\xf3de-2"),
    wire.down_header(1, 1, 0, 1, 0) + wire.ack_segment(1, 1, "x-1").replace(b"x-1", b"\xff-1"),
])
def test_a_slot_name_that_is_not_ascii_is_a_wire_error(message):
    reader = wire.read_up if message[:1] == b"U" else wire.read_down
    with pytest.raises(wire.WireError, match="not ASCII"):
        parts = reader(message)
        list(parts[-1])


def test_a_job_name_that_is_not_ascii_is_a_wire_error():
    with pytest.raises(wire.WireError):
        wire.decode_job(b"\x02\xc3\xa9")


# fuzz_config.py, from its seeds: a string setting holding a control
# character (a newline in --host, say) was rendered by --print-config
# (config_file.render) as a raw control character inside a TOML string, which
# is not TOML: the promise that load_file reads render's output back broke.
@pytest.mark.parametrize("host", ["a\nb", "tab\there", "nul\x00", "del\x7f", 'q"uote\\'])
def test_render_writes_toml_that_reads_back_for_any_string(tmp_path, host):
    from netcore_server.config_file import load_file, render, resolve
    config, origins = resolve({}, {}, {"host": host})
    path = tmp_path / "rendered.toml"
    path.write_text(render(config, origins))
    again, _ = resolve(load_file(path), {}, {}, str(path))
    assert again.host == host and again == config


# fuzz_config.py, within 30 runs: a configuration file that is not UTF-8 made
# load_file raise UnicodeDecodeError (netcore-server --config printed a
# traceback) instead of the one-line ConfigError every other bad file gets.
def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    from netcore_server.config_file import ConfigError, load_file
    path = tmp_path / "server.toml"
    path.write_bytes(b"port = 7777\nhost = \"\x85\"\n")
    with pytest.raises(ConfigError, match="not valid TOML: not UTF-8 at byte 20"):
        load_file(path)


# fuzz_websocket.py, within 600 runs: a frame with an RSV bit set was taken
# as a plain frame (its packets handled), where RFC 6455 5.2 requires failing
# the connection when no extension gave the bit a meaning: picows passes the
# bits on and leaves the check to its user, and netcore negotiates none.
@pytest.mark.parametrize("rsv1", [False, True])
def test_a_frame_with_an_rsv_bit_fails_the_connection(rsv1):
    import netcore
    from picows.picows import WSMsgType, _make_test_ws_frame
    from netcore import DisconnectReason
    from support import Recorder, packet
    from test_websocket import hand_fed_connection

    async def go():
        service = netcore.ServerService(Recorder)
        s, tcp, conn, ws = hand_fed_connection(service)
        conn.on_ws_frame(ws, _make_test_ws_frame(WSMsgType.BINARY, packet(1, b"x"), True, rsv1))
        if rsv1:
            assert s.packets == []
            assert s.close_reason.kind is DisconnectReason.PROTOCOL_ERROR
            assert "RSV" in s.close_reason.detail and conn.close_code == 1002
        else:
            assert s.packets == [(1, b"x")] and s.close_reason is None
        tcp.sock.close()
    netcore.run(go(), "asyncio")


# fuzz_websocket.py, on the sanitizer build after 3,800 runs: when picows
# failed the connection itself (here a close frame with an invalid code) it
# sent its close frame and disconnects 10 ms later, but the frames of the
# peer's next reads in between were still handed to the session: packets
# after the failure reached the game's handlers (RFC 6455 7.1.7: an endpoint
# that fails the connection processes nothing more from the peer).
def test_nothing_is_handled_after_picows_failed_the_connection():
    import netcore
    from picows.picows import WSMsgType, _make_test_ws_frame
    from support import Recorder, packet
    from test_websocket import hand_fed_connection

    async def go():
        service = netcore.ServerService(Recorder)
        s, tcp, conn, ws = hand_fed_connection(service)
        conn.on_ws_frame(ws, _make_test_ws_frame(WSMsgType.BINARY, packet(1, b"before"),
                                                 True, False))
        ws.send_close(1002, b"Received CLOSE with invalid close code: 236")   # as picows does
        conn.on_ws_frame(ws, _make_test_ws_frame(WSMsgType.BINARY, packet(2, b"after"),
                                                 True, False))
        assert s.packets == [(1, b"before")]
        tcp.sock.close()
    netcore.run(go(), "asyncio")
