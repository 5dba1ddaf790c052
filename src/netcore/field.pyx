# cython: language_level=3, cdivision=True
"""Field: positions, a grid and view sets for a room that is a square field (field.pxd)."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.math cimport isfinite
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.string cimport memcpy

from netcore.framing cimport HEADER_SIZE, write_header
from netcore.protowrite cimport float_size, put_float, put_varint, varint_size
from netcore.sendbuffer cimport SendBuffer, SendBufferPool
from netcore.session cimport Session

from netcore.sendbuffer import default_pool

REFUSALS = ("not_finite", "outside", "too_far")     # FieldStats.refused, in MoveRefusal order


# -- the protobuf encoding, by hand (field.pxd) -------------------------------------

cdef inline int player_body_size(Entity* e, Py_ssize_t tail) noexcept:
    return 1 + varint_size(e.id) + <int>tail + float_size(e.x) + float_size(e.y)


cdef inline SendBuffer open_packet(SendBufferPool pool, unsigned int pkt_id, Py_ssize_t payload):
    cdef SendBuffer buf = pool.open(payload + HEADER_SIZE)
    write_header(buf.data, payload + HEADER_SIZE, pkt_id)
    return buf


cdef inline int close_packet(SendBuffer buf, Py_ssize_t payload) except -1:
    buf.close(payload + HEADER_SIZE)
    buf.frames = 1
    return 0


cdef class Field:
    """One room's field: entities (players and monsters) with float32
    positions in the square 0..size, a grid of cells, and each entity's view
    set (those within `radius`). Every change queues the packets it causes
    to the players concerned (see field.pxd); the room calls it from its
    jobs only. `move_id`, `spawn_id` and `despawn_id` are the game's packet
    ids of S_MOVE, S_SPAWN and S_DESPAWN."""

    def __cinit__(self):
        self.free_head = NO_SLOT

    def __init__(self, double size, double radius, double max_step, *,
                 unsigned int move_id, unsigned int spawn_id, unsigned int despawn_id):
        cdef int32_t i
        cdef double cols
        if not (isfinite(size) and size > 0):
            raise ValueError(f"field size must be a finite number > 0, not {size!r}")
        if not (isfinite(radius) and radius > 0):
            raise ValueError(f"view radius must be a finite number > 0, not {radius!r}")
        if not (isfinite(max_step) and max_step > 0):
            raise ValueError(f"max step must be a finite number > 0, not {max_step!r}")
        self.size = size
        self.radius = radius
        self.max_step = max_step
        self.radius2 = radius * radius
        self.step2 = max_step * max_step
        # Cells at least as wide as the radius (the 3x3 around a point hold
        # its whole view), and no more than MAX_COLS a side.
        self.cell = radius if size / radius < MAX_COLS - 1 else size / (MAX_COLS - 1)
        cols = size / self.cell
        self.cols = <int32_t>cols + 1
        self.cells = <int32_t*>PyMem_Malloc(sizeof(int32_t) * self.cols * self.cols)
        if self.cells == NULL:
            raise MemoryError()
        for i in range(self.cols * self.cols):
            self.cells[i] = NO_SLOT
        self.sessions = []
        self.tails = []
        self.move_id = move_id
        self.spawn_id = spawn_id
        self.despawn_id = despawn_id
        self.pool = default_pool()

    def __dealloc__(self):
        cdef int32_t i
        if self.ents != NULL:
            for i in range(self.cap):
                PyMem_Free(self.ents[i].seen)
            PyMem_Free(self.ents)
        PyMem_Free(self.cells)
        PyMem_Free(self.stays)
        PyMem_Free(self.enters)
        PyMem_Free(self.leaves)
        PyMem_Free(self.remote_ids)

    # -- what the room asks ----------------------------------------------------------

    def add(self, uint64_t entity_id, double x, double y, bytes tail, session=None,
            bint observer=True, bint remote=False, bint quiet=False):
        """Put an entity at (x, y), rounded to float32 and clamped into the
        field: S_SPAWN of everything it sees to it (if it observes), S_SPAWN
        of it to every player that sees it. `tail` is its Player's name and
        type, encoded (player_tail); `session` the netcore Session its packets
        go to, None for a monster or (with `remote`) a player of another
        worker, whose packets go to remote_sink. Returns its slot. `quiet`:
        no S_SPAWN either way (a field rebuilt as it was: everyone already
        sees what it saw)."""
        cdef int32_t slot, cell, i
        cdef int32_t n_stay = 0, n_enter = 0
        cdef Entity* e
        cdef float fx = <float>x
        cdef float fy = <float>y
        if not (isfinite(fx) and isfinite(fy)):
            raise ValueError(f"position ({x!r}, {y!r}) is not finite")
        fx = <float>min(max(fx + <float>0.0, <float>0.0), <float>self.size)
        fy = <float>min(max(fy + <float>0.0, <float>0.0), <float>self.size)
        slot = self.take_slot()
        e = &self.ents[slot]
        e.id = entity_id
        e.x = fx
        e.y = fy
        e.n_seen = 0
        e.mark = 0
        e.observer = observer
        e.remote = remote
        self.sessions[slot] = session
        self.tails[slot] = tail
        self.count += 1
        cell = self.cell_of(fx, fy)
        self.stamp += 2                 # a stamp nobody holds: all it finds enter
        self.scan(slot, fx, fy, cell, self.stamp, self.stamp + 1, &n_stay, &n_enter)
        self.cell_insert(slot, cell)
        for i in range(n_enter):
            self.see(slot, self.enters[i])
        if quiet:
            return slot
        if n_enter and observer:
            self.deliver_all(slot, self.spawn_packets(self.enters, n_enter))
        if n_enter:
            self.tell(self.spawn_packets(&slot, 1), self.enters, n_enter)
        return slot

    def remove(self, int32_t slot):
        """Take an entity out: S_DESPAWN of it to every player that saw it."""
        cdef Entity* e = self.entity(slot)
        cdef int32_t n = e.n_seen, i
        self.grow_scratch(n)
        for i in range(n):
            self.leaves[i] = e.seen[i]
        for i in range(n):
            self.unsee(slot, self.leaves[i])
        if n:
            self.tell(self.despawn_packets(&slot, 1), self.leaves, n)
        self.cell_remove(slot)
        e.cell = NO_SLOT
        e.n_seen = 0
        e.next = self.free_head
        self.free_head = slot
        self.sessions[slot] = None
        self.tails[slot] = None
        self.count -= 1

    def move(self, int32_t slot, double x, double y):
        """Move an entity to (x, y) (as float32), or refuse: not finite,
        outside the field, or farther than max_step. Accepted, the packets of
        field.pxd go out; refused, the mover alone gets S_MOVE at its unchanged
        position. Returns "" when accepted, else why refused (REFUSALS)."""
        cdef Entity* e = self.entity(slot)
        cdef float fx = <float>x
        cdef float fy = <float>y
        cdef MoveRefusal why = self.check_move(e, fx, fy)
        if why != MOVE_OK:
            self.refused[<int>why] += 1
            if e.observer:
                self.deliver_all(slot, [self.move_packet(slot)])
            return REFUSALS[<int>why - 1]
        self.apply_move(slot, fx + <float>0.0, fy + <float>0.0)
        return ""

    def position(self, int32_t slot):
        cdef Entity* e = self.entity(slot)
        return (e.x, e.y)

    def set_session(self, int32_t slot, session):
        """A player's packets go to `session` from now on (a resume gave it
        a new connection); only a local player's, whose packets had one."""
        cdef Entity* e = self.entity(slot)
        if not e.observer or e.remote or self.sessions[slot] is None:
            raise ValueError(f"slot {slot} is not a local player's")
        if not isinstance(session, Session):
            raise TypeError("session must be a netcore Session")
        self.sessions[slot] = session

    def entity_id(self, int32_t slot):
        return self.entity(slot).id

    def seen(self, int32_t slot):
        """The ids of the entities in this one's view, sorted (for tests and tools)."""
        cdef Entity* e = self.entity(slot)
        return sorted(self.ents[e.seen[i]].id for i in range(e.n_seen))

    def refusals(self):
        """{reason: moves refused for it}."""
        return {name: self.refused[i + 1] for i, name in enumerate(REFUSALS)}

    # -- the move ----------------------------------------------------------------------

    cdef MoveRefusal check_move(self, Entity* e, float x, float y) noexcept:
        cdef double dx, dy
        if not (isfinite(x) and isfinite(y)):
            return MOVE_NOT_FINITE
        if not (0 <= x <= self.size and 0 <= y <= self.size):
            return MOVE_OUTSIDE
        dx = <double>x - <double>e.x
        dy = <double>y - <double>e.y
        if dx * dx + dy * dy > self.step2:
            return MOVE_TOO_FAR
        return MOVE_OK

    cdef int scan(self, int32_t slot, float x, float y, int32_t cell, uint64_t old_mark,
                  uint64_t new_mark, int32_t* n_stay, int32_t* n_enter) except -1:
        """Everything within the radius of (x, y), but `slot`, from the 3x3
        cells around `cell`: into stays where marked old_mark, else into
        enters; each marked new_mark."""
        cdef int32_t cx = cell % self.cols, cy = cell // self.cols, gx, gy, other
        cdef Entity* o
        cdef double dx, dy
        self.grow_scratch(self.count)
        for gy in range(max(cy - 1, 0), min(cy + 2, self.cols)):
            for gx in range(max(cx - 1, 0), min(cx + 2, self.cols)):
                other = self.cells[gy * self.cols + gx]
                while other != NO_SLOT:
                    o = &self.ents[other]
                    if other != slot:
                        dx = <double>x - <double>o.x
                        dy = <double>y - <double>o.y
                        if dx * dx + dy * dy <= self.radius2:
                            if o.mark == old_mark:
                                self.stays[n_stay[0]] = other
                                n_stay[0] += 1
                            else:
                                self.enters[n_enter[0]] = other
                                n_enter[0] += 1
                            o.mark = new_mark
                    other = o.next
        return 0

    cdef int apply_move(self, int32_t slot, float x, float y) except -1:
        cdef Entity* e = &self.ents[slot]
        cdef uint64_t old_mark, new_mark
        cdef int32_t i, other, cell
        cdef int32_t n_stay = 0, n_enter = 0, n_leave = 0, n_old = e.n_seen
        self.moves += 1
        self.stamp += 2
        old_mark = self.stamp
        new_mark = self.stamp + 1
        for i in range(n_old):
            self.ents[e.seen[i]].mark = old_mark
        e.x = x
        e.y = y
        cell = self.cell_of(x, y)
        if cell != e.cell:
            self.cell_remove(slot)
            self.cell_insert(slot, cell)
        self.scan(slot, x, y, cell, old_mark, new_mark, &n_stay, &n_enter)
        for i in range(n_old):
            other = e.seen[i]
            if self.ents[other].mark != new_mark:
                self.leaves[n_leave] = other
                n_leave += 1
        # The view sets: what left forgets the mover, what entered learns it.
        for i in range(n_leave):
            self.unsee(slot, self.leaves[i])
        for i in range(n_enter):
            self.see(slot, self.enters[i])
        # The packets, in the order of field.pxd.
        move = self.move_packet(slot)
        if e.observer:
            self.deliver_all(slot, [move])
            if n_leave:
                self.deliver_all(slot, self.despawn_packets(self.leaves, n_leave))
            if n_enter:
                self.deliver_all(slot, self.spawn_packets(self.enters, n_enter))
        if n_stay:
            self.tell([move], self.stays, n_stay)
        if n_leave:
            self.tell(self.despawn_packets(&slot, 1), self.leaves, n_leave)
        if n_enter:
            self.tell(self.spawn_packets(&slot, 1), self.enters, n_enter)
        return 0

    # -- packets -------------------------------------------------------------------------

    cdef SendBuffer move_packet(self, int32_t slot):
        cdef Entity* e = &self.ents[slot]
        cdef Py_ssize_t payload = 1 + varint_size(e.id) + float_size(e.x) + float_size(e.y)
        cdef SendBuffer buf = open_packet(self.pool, self.move_id, payload)
        cdef unsigned char* p = buf.data + HEADER_SIZE
        p[0] = 0x08
        p = put_varint(p + 1, e.id)
        p = put_float(p, 0x15, e.x)
        put_float(p, 0x1D, e.y)
        close_packet(buf, payload)
        return buf

    cdef list spawn_packets(self, const int32_t* slots, int32_t n):
        """S_SPAWN of these entities, as few packets as the size field allows."""
        cdef list out = []
        cdef int32_t start = 0, end, i
        cdef Py_ssize_t payload, item, body
        cdef SendBuffer buf
        cdef unsigned char* p
        cdef Entity* e
        cdef bytes tail
        while start < n:
            payload = 0
            end = start
            while end < n:
                e = &self.ents[slots[end]]
                body = player_body_size(e, PyBytes_GET_SIZE(
                    <bytes>PyList_GET_ITEM(self.tails, slots[end])))
                item = 1 + varint_size(body) + body
                if payload + item > MAX_PAYLOAD and end > start:
                    break
                payload += item
                end += 1
            buf = open_packet(self.pool, self.spawn_id, payload)
            p = buf.data + HEADER_SIZE
            for i in range(start, end):
                e = &self.ents[slots[i]]
                tail = <bytes>PyList_GET_ITEM(self.tails, slots[i])
                body = player_body_size(e, PyBytes_GET_SIZE(tail))
                p[0] = 0x0A
                p = put_varint(p + 1, body)
                p[0] = 0x08
                p = put_varint(p + 1, e.id)
                memcpy(p, PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail))
                p += PyBytes_GET_SIZE(tail)
                p = put_float(p, 0x25, e.x)
                p = put_float(p, 0x2D, e.y)
            close_packet(buf, payload)
            out.append(buf)
            start = end
        return out

    cdef list despawn_packets(self, const int32_t* slots, int32_t n):
        """S_DESPAWN of these entities' ids (packed), as few packets as fit."""
        cdef list out = []
        cdef int32_t start = 0, end, i
        cdef Py_ssize_t ids, v
        cdef SendBuffer buf
        cdef unsigned char* p
        while start < n:
            ids = 0
            end = start
            while end < n:
                v = varint_size(self.ents[slots[end]].id)
                if 1 + varint_size(ids + v) + ids + v > MAX_PAYLOAD and end > start:
                    break
                ids += v
                end += 1
            buf = open_packet(self.pool, self.despawn_id, 1 + varint_size(ids) + ids)
            p = buf.data + HEADER_SIZE
            p[0] = 0x0A
            p = put_varint(p + 1, ids)
            for i in range(start, end):
                p = put_varint(p, self.ents[slots[i]].id)
            close_packet(buf, 1 + varint_size(ids) + ids)
            out.append(buf)
            start = end
        return out

    # -- delivery ------------------------------------------------------------------------

    cdef int deliver(self, int32_t slot, SendBuffer buf) except -1:
        """To one player: its session here, or its id gathered for remote_sink."""
        cdef Entity* e = &self.ents[slot]
        cdef object session
        if not e.observer:
            return 0
        if e.remote:
            if self.n_remote == self.cap_remote:
                self.cap_remote = self.cap_remote * 2 + 16
                self.remote_ids = <uint64_t*>PyMem_Realloc(self.remote_ids,
                                                           sizeof(uint64_t) * self.cap_remote)
                if self.remote_ids == NULL:
                    raise MemoryError()
            self.remote_ids[self.n_remote] = e.id
            self.n_remote += 1
            return 0
        session = <object>PyList_GET_ITEM(self.sessions, slot)
        if session is not None:
            (<Session>session).enqueue(buf)
            self.deliveries += 1
        return 0

    cdef int deliver_all(self, int32_t slot, list bufs) except -1:
        """Packets for one player, in order (its remote ones go in order too)."""
        cdef SendBuffer buf
        for buf in bufs:
            self.deliver(slot, buf)
            self.flush_remote(buf)
        return 0

    cdef int tell(self, list bufs, const int32_t* slots, int32_t n) except -1:
        """The same packets to several players: each buffer to all of them, in order."""
        cdef SendBuffer buf
        cdef int32_t i
        for buf in bufs:
            for i in range(n):
                self.deliver(slots[i], buf)
            self.flush_remote(buf)
        return 0

    cdef int flush_remote(self, SendBuffer buf) except -1:
        """Hand the gathered remote recipients of `buf` to remote_sink."""
        cdef Py_ssize_t n = self.n_remote
        if n == 0:
            return 0
        self.n_remote = 0
        if buf is None or self.remote_sink is None:
            return 0
        self.deliveries += n
        self.remote_sink(PyBytes_FromStringAndSize(<char*>self.remote_ids, n * 8), buf)
        return 0

    # -- slots, cells, view sets -----------------------------------------------------------

    cdef Entity* entity(self, int32_t slot) except NULL:
        if slot < 0 or slot >= self.cap or self.ents[slot].cell == NO_SLOT:
            raise KeyError(f"no entity in slot {slot}")
        return &self.ents[slot]

    cdef int32_t take_slot(self) except -2:
        cdef int32_t slot, i, cap
        cdef Entity* grown
        if self.free_head != NO_SLOT:
            slot = self.free_head
            self.free_head = self.ents[slot].next
            return slot
        if self.cap == 0x3FFFFFFF:
            raise MemoryError("field is full")
        cap = self.cap * 2 + 16
        grown = <Entity*>PyMem_Realloc(self.ents, sizeof(Entity) * cap)
        if grown == NULL:
            raise MemoryError()
        self.ents = grown
        for i in range(self.cap, cap):
            self.ents[i].cell = NO_SLOT
            self.ents[i].seen = NULL
            self.ents[i].n_seen = 0
            self.ents[i].cap_seen = 0
            self.ents[i].next = i + 1 if i + 1 < cap else NO_SLOT
            self.sessions.append(None)
            self.tails.append(None)
        self.free_head = self.cap + 1 if self.cap + 1 < cap else NO_SLOT
        slot = self.cap
        self.cap = cap
        return slot

    cdef inline int32_t cell_of(self, float x, float y) noexcept:
        cdef int32_t cx = <int32_t>(<double>x / self.cell)
        cdef int32_t cy = <int32_t>(<double>y / self.cell)
        if cx >= self.cols:
            cx = self.cols - 1
        if cy >= self.cols:
            cy = self.cols - 1
        return cy * self.cols + cx

    cdef inline void cell_insert(self, int32_t slot, int32_t cell) noexcept:
        cdef Entity* e = &self.ents[slot]
        cdef int32_t head = self.cells[cell]
        e.cell = cell
        e.prev = NO_SLOT
        e.next = head
        if head != NO_SLOT:
            self.ents[head].prev = slot
        self.cells[cell] = slot

    cdef inline void cell_remove(self, int32_t slot) noexcept:
        cdef Entity* e = &self.ents[slot]
        if e.prev != NO_SLOT:
            self.ents[e.prev].next = e.next
        else:
            self.cells[e.cell] = e.next
        if e.next != NO_SLOT:
            self.ents[e.next].prev = e.prev

    cdef int grow_seen(self, Entity* e) except -1:
        cdef int32_t cap = e.cap_seen * 2 + 8
        cdef int32_t* grown = <int32_t*>PyMem_Realloc(e.seen, sizeof(int32_t) * cap)
        if grown == NULL:
            raise MemoryError()
        e.seen = grown
        e.cap_seen = cap
        return 0

    cdef int grow_scratch(self, int32_t need) except -1:
        cdef int32_t cap
        if need <= self.cap_scratch:
            return 0
        cap = max(need, self.cap_scratch * 2 + 16)
        self.stays = <int32_t*>PyMem_Realloc(self.stays, sizeof(int32_t) * cap)
        self.enters = <int32_t*>PyMem_Realloc(self.enters, sizeof(int32_t) * cap)
        self.leaves = <int32_t*>PyMem_Realloc(self.leaves, sizeof(int32_t) * cap)
        if self.stays == NULL or self.enters == NULL or self.leaves == NULL:
            raise MemoryError()
        self.cap_scratch = cap
        return 0

    cdef int see(self, int32_t a, int32_t b) except -1:
        """a and b see each other."""
        cdef Entity* e = &self.ents[a]
        if e.n_seen == e.cap_seen:
            self.grow_seen(e)
        e.seen[e.n_seen] = b
        e.n_seen += 1
        e = &self.ents[b]
        if e.n_seen == e.cap_seen:
            self.grow_seen(e)
        e.seen[e.n_seen] = a
        e.n_seen += 1
        return 0

    cdef int unsee(self, int32_t a, int32_t b) except -1:
        """a and b no longer see each other."""
        forget(&self.ents[a], b)
        forget(&self.ents[b], a)
        return 0


cdef inline void forget(Entity* e, int32_t other) noexcept:
    cdef int32_t i
    for i in range(e.n_seen):
        if e.seen[i] == other:
            e.n_seen -= 1
            e.seen[i] = e.seen[e.n_seen]
            return


def player_tail(str name, int player_type):
    """A Player's name and type as S_SPAWN carries them (fields 2 and 3;
    proto3 leaves out an empty name and type 0)."""
    cdef bytes raw = name.encode()
    out = bytearray()
    if raw:
        out.append(0x12)
        _append_varint(out, len(raw))
        out += raw
    if player_type:
        out.append(0x18)
        _append_varint(out, player_type & 0xFFFFFFFFFFFFFFFF)
    return bytes(out)


cdef _append_varint(bytearray out, uint64_t v):
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
