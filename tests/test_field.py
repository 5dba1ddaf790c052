"""The field (netcore.field): positions, the grid, view sets and the packets
they cause, checked packet by packet against a brute-force O(n^2) model.

Players here are "remote" (as if connected to another worker), so that every
packet the field makes reaches the test through its remote sink, in order,
framed exactly as a client would get it."""
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netcore.field import REFUSALS, Field, player_tail
from netcore_packets import Protocol_pb2 as pb
from netcore_packets.server_dispatch import PACKET_IDS

MOVE, SPAWN, DESPAWN = PACKET_IDS["S_MOVE"], PACKET_IDS["S_SPAWN"], PACKET_IDS["S_DESPAWN"]
MESSAGES = {MOVE: pb.S_MOVE, SPAWN: pb.S_SPAWN, DESPAWN: pb.S_DESPAWN}
F32 = struct.Struct("<f")


def f32(v):
    return F32.unpack(F32.pack(v))[0]


def sees(a, b, radius):
    dx, dy = a[0] - b[0], a[1] - b[1]
    return dx * dx + dy * dy <= radius * radius


class Recorder:
    """The field's remote sink: every packet, for every recipient, in order."""

    def __init__(self):
        self.inbox = {}             # entity id -> [(pkt id, message)]

    def __call__(self, ids, buf):
        data = bytes(buf)
        size, pkt_id = struct.unpack_from("<HH", data)
        assert size == len(data)
        payload = data[4:]
        msg = MESSAGES[pkt_id].FromString(payload)
        assert msg.SerializeToString() == payload       # byte for byte protobuf's
        for (i,) in struct.iter_unpack("<Q", ids):
            self.inbox.setdefault(i, []).append((pkt_id, msg))

    def take(self, entity_id):
        return self.inbox.pop(entity_id, [])


class Client:
    """What one player knows, from its packets alone; fails on any packet a
    correct server never sends."""

    def __init__(self, entity_id, position):
        self.id = entity_id
        self.position = position
        self.view = {}              # id -> (x, y)

    def apply(self, packets):
        for pkt_id, msg in packets:
            if pkt_id == SPAWN:
                for p in msg.players:
                    assert p.id != self.id, "spawned itself"
                    assert p.id not in self.view, f"second spawn of {p.id}"
                    self.view[p.id] = (p.x, p.y)
            elif pkt_id == DESPAWN:
                for i in msg.playerIds:
                    assert i in self.view, f"despawn of {i}, not in view"
                    del self.view[i]
            else:
                if msg.playerId == self.id:
                    self.position = (msg.x, msg.y)
                else:
                    assert msg.playerId in self.view, f"move of {msg.playerId}, not in view"
                    self.view[msg.playerId] = (msg.x, msg.y)


class World:
    """A Field and the model beside it: every entity's position, and each
    player's view as its packets built it."""

    def __init__(self, size=100.0, radius=25.0, step=10.0):
        self.field = Field(size, radius, step, move_id=MOVE, spawn_id=SPAWN, despawn_id=DESPAWN)
        self.sink = self.field.remote_sink = Recorder()
        self.radius = radius
        self.slots = {}             # id -> slot
        self.positions = {}         # id -> (x, y)
        self.clients = {}           # player id -> Client
        self.names = {}

    def add(self, entity_id, x, y, player=True, name="", ptype=1):
        slot = self.field.add(entity_id, x, y, player_tail(name, ptype), remote=player,
                              observer=player)
        self.slots[entity_id] = slot
        self.positions[entity_id] = self.field.position(slot)
        self.names[entity_id] = (name, ptype)
        if player:
            self.clients[entity_id] = Client(entity_id, self.positions[entity_id])
        self.deliver()
        return slot

    def move(self, entity_id, x, y):
        refused = self.field.move(self.slots[entity_id], x, y)
        self.positions[entity_id] = self.field.position(self.slots[entity_id])
        return refused

    def remove(self, entity_id):
        self.deliver()
        self.field.remove(self.slots.pop(entity_id))
        del self.positions[entity_id]
        self.clients.pop(entity_id, None)
        self.deliver()

    def deliver(self):
        for client in self.clients.values():
            client.apply(self.sink.take(client.id))
        assert not self.sink.inbox, "packets for no player"

    def check(self):
        """Each player's view is exactly what the brute force says, at the
        positions its packets gave; and the field's own view sets agree."""
        for pid, client in self.clients.items():
            assert client.position == self.positions[pid]
            want = {i: p for i, p in self.positions.items()
                    if i != pid and sees(p, self.positions[pid], self.radius)}
            assert client.view == want, pid
        for i, slot in self.slots.items():
            assert self.field.seen(slot) == sorted(
                j for j, p in self.positions.items() if j != i
                and sees(p, self.positions[i], self.radius))


# -- the packets of one move, in order ------------------------------------------------

def test_a_move_tells_the_mover_first_then_who_saw_it_and_who_sees_it_now():
    w = World(size=100, radius=10, step=10)
    w.add(1, 50, 50)
    w.add(2, 55, 50)                # in view of 1
    w.add(3, 65, 50)                # 15 from 1: out of view
    w.add(4, 40, 50, player=False, name="Orc", ptype=4)     # a monster, in view of 1
    for c in w.clients.values():
        c.apply(w.sink.take(c.id))
    assert w.field.move(w.slots[1], 58, 50) == ""          # 2 stays, 3 enters, 4 leaves
    got = [(pkt_id, msg) for pkt_id, msg in w.sink.take(1)]
    assert [p for p, _ in got] == [MOVE, DESPAWN, SPAWN]
    assert (got[0][1].playerId, got[0][1].x, got[0][1].y) == (1, 58.0, 50.0)
    assert list(got[1][1].playerIds) == [4]
    assert [(p.id, p.x, p.y) for p in got[2][1].players] == [(3, 65.0, 50.0)]
    assert [(p, m.playerId) for p, m in w.sink.take(2)] == [(MOVE, 1)]
    (spawn,) = w.sink.take(3)
    assert spawn[0] == SPAWN and [(p.id, p.name, p.x) for p in spawn[1].players] == [
        (1, "", 58.0)]
    assert not w.sink.inbox             # the monster gets nothing


@pytest.mark.parametrize("target, why", [
    ((50, 70), "too_far"), ((150, 50), "outside"), ((-0.5, 50), "outside"),
    ((math.nan, 50), "not_finite"), ((50, math.inf), "not_finite"), ((-math.inf, 1), "not_finite"),
])
def test_a_refused_move_corrects_the_mover_alone(target, why):
    w = World(size=100, radius=10, step=10)
    w.add(1, 50, 50)
    w.add(2, 55, 50)
    w.deliver()
    assert w.field.move(w.slots[1], *target) == why
    (correction,) = w.sink.take(1)
    assert correction[0] == MOVE
    assert (correction[1].playerId, correction[1].x, correction[1].y) == (1, 50.0, 50.0)
    assert not w.sink.inbox and w.field.position(w.slots[1]) == (50.0, 50.0)
    assert w.field.refusals()[why] == 1 and set(REFUSALS) == set(w.field.refusals())


def test_the_edges_are_inside_and_the_view_edge_is_seen():
    w = World(size=100, radius=10, step=10)
    w.add(1, 0, 0)
    w.add(2, 10, 0)                 # exactly the radius: seen
    w.add(3, 100, 100)
    w.check()
    assert w.move(3, 100, 91) == ""    # the field's edge is inside
    assert w.move(1, -0.0, 0) == ""    # -0.0 is 0.0, and is never sent
    w.deliver()
    w.check()


def test_leaving_despawns_it_for_everyone_who_saw_it():
    w = World()
    for i, x in enumerate((10, 20, 30, 90), start=1):
        w.add(i, x, 10)
    w.remove(2)
    w.check()
    assert 2 not in w.clients[1].view and 2 not in w.clients[3].view


def test_a_crowd_larger_than_one_packet_spawns_in_several_in_order():
    w = World(size=10, radius=20, step=10)
    for i in range(1, 4001):            # 4,000 in view: about 100 KB of players
        w.add(i, (i % 10), (i // 10) % 10, player=False, name=f"monster number {i}", ptype=4)
    w.add(100_000, 5, 5)
    assert len(w.clients[100_000].view) == 4000
    w.check()


# -- random walks against the brute force ------------------------------------------------

walks = st.lists(st.tuples(st.integers(0, 11), st.floats(-12, 12), st.floats(-12, 12)),
                 max_size=120)


@settings(max_examples=60, deadline=None)
@given(starts=st.lists(st.tuples(st.floats(0, 60), st.floats(0, 60)), min_size=2,
                       max_size=12),
       walk=walks, leave_at=st.integers(0, 120))
def test_random_walks_keep_every_view_exact(starts, walk, leave_at):
    w = World(size=60, radius=15, step=10)
    for i, (x, y) in enumerate(starts, start=1):
        w.add(i, x, y, player=(i % 3 != 0), ptype=1 if i % 3 else 4)   # a third are monsters
    w.check()
    for step, (k, dx, dy) in enumerate(walk):
        ids = sorted(w.slots)
        if not ids:
            break
        mover = ids[k % len(ids)]
        x, y = w.positions[mover]
        w.move(mover, x + dx, y + dy)
        w.deliver()
        if step == leave_at and len(ids) > 1:
            w.remove(ids[-1])
        w.check()


def test_a_field_rebuilt_quietly_from_its_positions_goes_on_as_it_was():
    # A rolling restart's successor rebuilds a room's field from where
    # everyone is (FieldRoom.on_restore): nobody is sent anything, every view
    # is the one its players already hold, and moves go on from there.
    import random
    rng = random.Random(25)
    w = World()
    for i in range(1, 41):
        w.add(i, rng.uniform(0, 100), rng.uniform(0, 100), player=i <= 30)

    def wander():
        for _ in range(200):
            i = rng.randrange(1, 41)
            x, y = w.positions[i]
            w.move(i, x + rng.uniform(-9, 9), y + rng.uniform(-9, 9))
            w.deliver()
        w.check()
    wander()
    old = w.field
    w.field = Field(100.0, 25.0, 10.0, move_id=MOVE, spawn_id=SPAWN, despawn_id=DESPAWN)
    w.field.remote_sink = w.sink
    for i in rng.sample(sorted(w.positions), len(w.positions)):
        player = i <= 30
        w.slots[i] = w.field.add(i, *w.positions[i], player_tail(*w.names[i]), remote=player,
                                 observer=player, quiet=True)
    assert not w.sink.inbox, "a quiet add sent something"
    assert w.field.count == old.count
    w.check()
    wander()
