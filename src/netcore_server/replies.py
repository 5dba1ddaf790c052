"""The login's success replies: laid out by hand, or through protobuf.

A login storm after a restart is thousands of logins a second, and each
login's S_LOGIN and S_ENTER_GAME differ from the last only in the ids. The
hand-laid bytes are what protobuf's SerializeToString() makes for the same
message (tests pin it against the protobuf library); protobuf stays the
source of truth for every other reply, and for these two as well where the
server's `fast_replies` setting is off (ProtobufReplies, through the game's
own message classes).

The refusals, S_LOGIN{success: false} and S_ENTER_GAME{success: false}, are
empty payloads (proto3 leaves a false out): LOGIN_REFUSED, ENTER_REFUSED.
"""
from __future__ import annotations

from netcore import SendBufferPool, make_packet

from netcore_server.protocol import PKT_S_ENTER_GAME, PKT_S_LOGIN

# S_LOGIN: each character's name and type are encoded once (its "tail"); a
# reply is the success flag plus, per character, a Player submessage of its
# new id and that tail.

_SUCCESS = b"\x08\x01"          # field 1 (success), varint 1
_PLAYERS_TAG = b"\x12"          # field 2 (players), length-delimited
_ID_TAG = b"\x08"               # Player field 1 (id), varint
_NAME_TAG = b"\x12"             # Player field 2 (name), length-delimited
_TYPE_TAG = b"\x18"             # Player field 3 (playerType), varint


def _varint(n: int) -> bytes:
    # Unrolled for the sizes ids have for a long time (up to 2**28).
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x200000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 0x10000000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def character_tail(c) -> bytes:
    """The encoded name and type of a character (proto3 leaves out defaults)."""
    name = c.name.encode()
    out = _NAME_TAG + _varint(len(name)) + name if name else b""
    if c.player_type:
        out += _TYPE_TAG + _varint(c.player_type & 0xFFFFFFFFFFFFFFFF)  # enums: int32 varint
    return out


def login_reply_payload(tails, ids) -> bytes:
    """S_LOGIN{success: true, players: [{id, name, playerType}, ...]}."""
    parts = [_SUCCESS]
    for tail, player_id in zip(tails, ids):
        body = _ID_TAG + _varint(player_id) + tail
        parts.append(_PLAYERS_TAG + _varint(len(body)) + body)
    return b"".join(parts)


def login_reply(tails, ids):
    """The framed S_LOGIN success reply, ready to send."""
    return make_packet(PKT_S_LOGIN, login_reply_payload(tails, ids))


def _varint_size(n: int) -> int:
    return (n.bit_length() + 6) // 7 or 1


class LoginReply:
    """The S_LOGIN success reply for one list of characters, their ids left
    open: what login_reply makes, from bytes laid out once.

    The guest login is the storm's path (thousands a second after a restart)
    and a reply differs per login only in the ids. Between two ids everything
    is fixed once the ids' varint size is known (a Player's length prefix
    counts it), so per size the reply is kept as the pieces around the ids
    and a login costs one varint per id and one join. The ids of one login
    come from one take() and are ascending: all of one size unless they
    straddle a 7-bit boundary, which takes the general path.
    """

    __slots__ = ("tails", "_pieces")

    def __init__(self, tails):
        self.tails = tuple(tails)
        self._pieces: dict[int, list] = {}     # id varint size -> pieces, None where ids go

    def payload(self, ids) -> bytes:
        if len(ids) != len(self.tails) or not ids:
            return login_reply_payload(self.tails, ids)
        size = _varint_size(ids[0])
        if _varint_size(ids[-1]) != size:
            return login_reply_payload(self.tails, ids)
        pieces = self._pieces.get(size)
        if pieces is None:
            pieces = self._pieces[size] = self._lay_out(size)
        parts = pieces.copy()
        parts[1::2] = [_varint(i) for i in ids]
        return b"".join(parts)

    def packet(self, ids):
        """The framed reply, ready to send."""
        return make_packet(PKT_S_LOGIN, self.payload(ids))

    def _lay_out(self, size: int) -> list:
        # [success + players tag + length + id tag, <id>, tail + next player's
        # tag + length + id tag, <id>, ..., last tail]
        pieces = [_SUCCESS]
        for tail in self.tails:
            pieces[-1] += _PLAYERS_TAG + _varint(len(_ID_TAG) + size + len(tail)) + _ID_TAG
            pieces += [None, tail]
        return pieces


# S_ENTER_GAME{success: true, playerId}: the flag, then the id's tag and varint.
_ENTER_OK = b"\x08\x01\x10"


def enter_reply(player_id: int):
    """The framed S_ENTER_GAME success reply, ready to send."""
    return make_packet(PKT_S_ENTER_GAME, _ENTER_OK + _varint(player_id))


class HandLaidReplies:
    """The success replies of a login and an enter, laid out by hand (the
    default). `guest` is the characters every guest plays."""

    __slots__ = ("_guest",)

    def __init__(self, guest):
        self._guest = LoginReply(character_tail(c) for c in guest)

    def guest_login(self, ids):
        return self._guest.packet(ids)

    def login(self, characters, ids):
        return login_reply([character_tail(c) for c in characters], ids)

    def enter(self, player_id: int):
        return enter_reply(player_id)


class ProtobufReplies:
    """The same replies through the protobuf library and the game's message
    classes (`protocol`, a GameProtocol): `fast_replies = false`, to rule the
    hand-laid bytes out when looking for a fault."""

    __slots__ = ("_guest", "_protocol")

    def __init__(self, guest, protocol):
        self._guest = tuple(guest)
        self._protocol = protocol

    def guest_login(self, ids):
        return self.login(self._guest, ids)

    def login(self, characters, ids):
        msg = self._protocol.messages.S_LOGIN(success=True)
        for c, i in zip(characters, ids):
            msg.players.add(id=i, name=c.name, playerType=c.player_type)
        return self._protocol.make_send_buffer(msg)

    def enter(self, player_id: int):
        return self._protocol.make_send_buffer(
            self._protocol.messages.S_ENTER_GAME(success=True, playerId=player_id))


def replies_for(fast: bool, guest, protocol=None) -> HandLaidReplies | ProtobufReplies:
    """The replies a server with `fast_replies = fast` sends (`protocol`, the
    game's GameProtocol, is needed for protobuf's)."""
    if fast:
        return HandLaidReplies(guest)
    if protocol is None:
        raise ValueError("fast_replies = false builds the replies through the game's "
                         "protocol: pass it")
    return ProtobufReplies(guest, protocol)


# Framed once and kept for ever, each in a pool of its own, so that they pin
# no chunk of the shared one; a SendBuffer goes to any number of sessions.
LOGIN_REFUSED = SendBufferPool(64).write(PKT_S_LOGIN, b"")
ENTER_REFUSED = SendBufferPool(64).write(PKT_S_ENTER_GAME, b"")
