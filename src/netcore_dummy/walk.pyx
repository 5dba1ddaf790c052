# cython: language_level=3
"""The field scenario's walkers: every field packet checked in C (design in walk.pxd)."""
from libc.math cimport cos, sin
from libc.stdint cimport UINT64_MAX, int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from netcore.framing cimport HEADER_SIZE, write_header
from netcore.protowrite cimport put_float
from netcore.sendbuffer cimport SendBuffer, SendBufferPool
from netcore.session cimport Session

from netcore_dummy.hist cimport HIST_BUCKETS, dummy_clock_us, hist_index, hist_percentile
from netcore_dummy.pbwire cimport (WT_I32, WT_LEN, WT_SGROUP, WT_VARINT, read_field, read_tag,
                                   read_varint, skip_group)

from netcore.sendbuffer import default_pool
from netcore_packets import client_dispatch as _dispatch

if (_dispatch.PKT_S_MOVE, _dispatch.PKT_S_SPAWN, _dispatch.PKT_S_DESPAWN,
        _dispatch.PKT_C_MOVE) != (S_MOVE_ID, S_SPAWN_ID, S_DESPAWN_ID, C_MOVE_ID):
    raise ImportError("walk.pxd's field packet ids are not the protocol's: update them")

VIOLATIONS = ("spawn_self", "spawn_twice", "spawn_far", "move_unseen", "move_far",
              "despawn_unseen", "ack_unasked", "ack_wrong", "malformed")     # Violation order


# -- IdMap (walk.pxd) -------------------------------------------------------------

cdef inline Py_ssize_t slot_of(uint64_t key, Py_ssize_t cap) noexcept nogil:
    key ^= key >> 33
    key *= <uint64_t>0xff51afd7ed558ccd
    key ^= key >> 33
    return <Py_ssize_t>(key & <uint64_t>(cap - 1))


cdef Py_ssize_t map_find(IdMap* m, uint64_t key) noexcept nogil:
    """The entry of key, or -1."""
    cdef Py_ssize_t i
    if m.cap == 0:
        return -1
    i = slot_of(key, m.cap)
    while m.keys[i] != 0:
        if m.keys[i] == key:
            return i
        i = (i + 1) & (m.cap - 1)
    return -1


cdef int map_grow(IdMap* m) except -1:
    cdef IdMap old = m[0]
    cdef Py_ssize_t i
    cdef Py_ssize_t cap = 16 if old.cap == 0 else (old.cap * 2 if old.n * 4 >= old.cap
                                                   else old.cap)   # else: clear the deleted
    m.keys = <uint64_t*>calloc(cap, sizeof(uint64_t))
    m.xs = <float*>calloc(cap, sizeof(float))
    m.ys = <float*>calloc(cap, sizeof(float))
    m.ts = <int64_t*>calloc(cap, sizeof(int64_t))
    if m.keys == NULL or m.xs == NULL or m.ys == NULL or m.ts == NULL:
        raise MemoryError()
    m.cap = cap
    m.n = m.used = 0
    for i in range(old.cap):
        if old.keys[i] != 0 and old.keys[i] != UINT64_MAX:
            map_put(m, old.keys[i], old.xs[i], old.ys[i], old.ts[i])
    map_free(&old)
    return 0


cdef int map_put(IdMap* m, uint64_t key, float x, float y, int64_t t) except -1:
    cdef Py_ssize_t i = map_find(m, key)
    if i < 0:
        if (m.used + 1) * 2 > m.cap:
            map_grow(m)
        i = slot_of(key, m.cap)
        while m.keys[i] != 0 and m.keys[i] != UINT64_MAX:
            i = (i + 1) & (m.cap - 1)
        if m.keys[i] == 0:
            m.used += 1
        m.keys[i] = key
        m.n += 1
    m.xs[i] = x
    m.ys[i] = y
    m.ts[i] = t
    return 0


cdef inline void map_drop(IdMap* m, Py_ssize_t i) noexcept nogil:
    m.keys[i] = UINT64_MAX
    m.n -= 1


cdef void map_free(IdMap* m) noexcept nogil:
    free(m.keys)
    free(m.xs)
    free(m.ys)
    free(m.ts)
    m.keys = NULL
    m.cap = m.n = m.used = 0


# -- decoding ------------------------------------------------------------------------

cdef inline bint read_float(const unsigned char** pp, const unsigned char* end,
                            float* out) noexcept nogil:
    cdef const unsigned char* p = pp[0]
    cdef uint32_t bits
    if end - p < 4:
        return False
    bits = p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)
    memcpy(out, &bits, 4)
    pp[0] = p + 4
    return True


cdef inline bint skip(const unsigned char** pp, const unsigned char* end, uint64_t field,
                      int wt) noexcept nogil:
    cdef uint64_t v
    if wt == WT_SGROUP:
        return skip_group(pp, end, field, 1)
    return read_field(pp, end, wt, &v)


cdef inline bint far(FieldTally t, float ax, float ay, float bx, float by) noexcept nogil:
    cdef double dx = <double>ax - <double>bx
    cdef double dy = <double>ay - <double>by
    return dx * dx + dy * dy > t.radius2


cdef inline void observe(uint64_t* hist, uint64_t* top, int64_t read_us, int64_t sent_us) noexcept:
    cdef uint64_t lat = <uint64_t>(read_us - sent_us) if read_us > sent_us else 0
    hist[hist_index(lat)] += 1
    if lat > top[0]:
        top[0] = lat


cdef inline double uniform(FieldTally t) noexcept nogil:
    """A number in [0, 1): xorshift64* (plenty for random walks, and C speed)."""
    t.rng ^= t.rng >> 12
    t.rng ^= t.rng << 25
    t.rng ^= t.rng >> 27
    return <double>((t.rng * <uint64_t>0x2545F4914F6CDD1D) >> 11) * (1.0 / 9007199254740992.0)


cdef class FieldTally:
    """What every walker of a run counts into: moves, their answers, what was
    seen, the violations by kind, and the latency histograms. `size` and
    `max_step` (the server's) bound the walk: a step goes at most 95% of
    max_step, so float32 rounding keeps it within."""

    def __cinit__(self, double radius, double size=1000.0, double max_step=10.0,
                  uint64_t seed=0x9E3779B97F4A7C15):
        if not (radius > 0 and size > 0 and max_step > 0):
            raise ValueError("view radius, field size and max step must be > 0")
        self.radius = radius
        self.radius2 = radius * radius
        self.size = size
        self.reach = max_step * 0.95
        self.rng = seed or 1
        self.pool = default_pool()
        self.hist_ack = <uint64_t*>calloc(HIST_BUCKETS, sizeof(uint64_t))
        self.hist_seen = <uint64_t*>calloc(HIST_BUCKETS, sizeof(uint64_t))
        if self.hist_ack == NULL or self.hist_seen == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.hist_ack)
        free(self.hist_seen)
        map_free(&self.moving)

    def violations(self):
        """{kind: count} of every kind (walk.pxd)."""
        return {name: self.bad[i] for i, name in enumerate(VIOLATIONS)}

    def ack_latency_us(self, double q):
        """The move-to-acknowledgement latency at quantile q (0..1]."""
        return self.ack_max_us if q >= 1 else hist_percentile(self.hist_ack, NULL, q,
                                                              self.ack_max_us)

    def seen_latency_us(self, double q):
        """The move-to-observer latency at quantile q (0..1]."""
        return self.seen_max_us if q >= 1 else hist_percentile(self.hist_seen, NULL, q,
                                                               self.seen_max_us)


cdef class Walker:
    """One client's side of the field: its position, its view, its move in flight."""

    def __cinit__(self, FieldTally tally not None):
        self.tally = tally

    def __dealloc__(self):
        map_free(&self.view)

    def start(self, uint64_t player_id, float x, float y):
        """In game at (x, y), as its S_ENTER_GAME says."""
        self.player_id = player_id
        self.x = x
        self.y = y

    def move(self, float x, float y):
        """A C_MOVE to (x, y) is sent now: wait for its answer. False (and
        nothing recorded) while the last one is still in flight."""
        if self.in_flight or self.player_id == 0:
            return False
        self.tx = x
        self.ty = y
        self.in_flight = True
        self.sent_us = dummy_clock_us()
        self.tally.moves_sent += 1
        map_put(&self.tally.moving, self.player_id, x, y, self.sent_us)
        return True

    def step(self, Session session not None):
        """One step of the walk: a random point within reach, inside the
        field, sent as C_MOVE on `session` now (C all the way). False when
        the last move is still unanswered (counted late)."""
        cdef FieldTally t = self.tally
        cdef double angle, length, x, y
        cdef SendBuffer buf
        cdef unsigned char* p
        if self.player_id == 0:
            return False
        if self.in_flight:
            t.late += 1
            return False
        angle = uniform(t) * 6.283185307179586
        length = uniform(t) * t.reach
        x = min(max(<double>self.x + length * cos(angle), 0.0), t.size)
        y = min(max(<double>self.y + length * sin(angle), 0.0), t.size)
        self.move(<float>x, <float>y)
        buf = t.pool.open(HEADER_SIZE + 10)
        p = put_float(put_float(buf.data + HEADER_SIZE, 0x0D, self.tx), 0x15, self.ty)
        write_header(buf.data, p - buf.data, C_MOVE_ID)
        buf.close(p - buf.data)
        buf.frames = 1
        session.enqueue(buf)
        return True

    def position(self):
        return (self.x, self.y)

    def seen(self):
        """{id: (x, y)} of its view."""
        return {self.view.keys[i]: (self.view.xs[i], self.view.ys[i])
                for i in range(self.view.cap)
                if self.view.keys[i] != 0 and self.view.keys[i] != UINT64_MAX}

    def feed(self, unsigned int pkt_id, const unsigned char[::1] payload):
        """One field packet, from Python (tests)."""
        cdef const unsigned char* p = <const unsigned char*>b""
        if payload.shape[0]:
            p = &payload[0]
        self.on_packet(pkt_id, p, payload.shape[0], dummy_clock_us())

    cdef int on_packet(self, unsigned int pkt_id, const unsigned char* p, Py_ssize_t n,
                       int64_t read_us) except -1:
        if pkt_id == S_MOVE_ID:
            return self.on_move(p, p + n, read_us)
        if pkt_id == S_SPAWN_ID:
            return self.on_spawn(p, p + n)
        return self.on_despawn(p, p + n)

    cdef int on_spawn(self, const unsigned char* p, const unsigned char* end) except -1:
        cdef FieldTally t = self.tally
        cdef const unsigned char* q
        cdef const unsigned char* stop
        cdef uint64_t field, length, pid
        cdef int wt
        cdef float x, y
        while p < end:
            if not read_tag(&p, end, &field, &wt, False):
                t.bad[MALFORMED] += 1
                return 0
            if field != 1 or wt != WT_LEN:
                if not skip(&p, end, field, wt):
                    t.bad[MALFORMED] += 1
                    return 0
                continue
            if not read_varint(&p, end, &length) or length > <uint64_t>(end - p):
                t.bad[MALFORMED] += 1
                return 0
            q = p
            stop = p + length
            p = stop
            pid = 0
            x = y = 0
            while q < stop:
                if not read_tag(&q, stop, &field, &wt, False):
                    t.bad[MALFORMED] += 1
                    return 0
                if field == 1 and wt == WT_VARINT:
                    if not read_varint(&q, stop, &pid):
                        t.bad[MALFORMED] += 1
                        return 0
                elif field == 4 and wt == WT_I32:
                    if not read_float(&q, stop, &x):
                        t.bad[MALFORMED] += 1
                        return 0
                elif field == 5 and wt == WT_I32:
                    if not read_float(&q, stop, &y):
                        t.bad[MALFORMED] += 1
                        return 0
                elif not skip(&q, stop, field, wt):
                    t.bad[MALFORMED] += 1
                    return 0
            t.spawned += 1
            if pid == self.player_id:
                t.bad[SPAWN_SELF] += 1
            elif map_find(&self.view, pid) >= 0:
                t.bad[SPAWN_TWICE] += 1
            else:
                if far(t, self.x, self.y, x, y):
                    t.bad[SPAWN_FAR] += 1
                map_put(&self.view, pid, x, y, 0)
        return 0

    cdef int on_move(self, const unsigned char* p, const unsigned char* end,
                     int64_t read_us) except -1:
        cdef FieldTally t = self.tally
        cdef uint64_t field, pid = 0
        cdef int wt
        cdef float x = 0, y = 0
        cdef Py_ssize_t i
        while p < end:
            if not read_tag(&p, end, &field, &wt, False):
                t.bad[MALFORMED] += 1
                return 0
            if field == 1 and wt == WT_VARINT:
                if not read_varint(&p, end, &pid):
                    t.bad[MALFORMED] += 1
                    return 0
            elif field == 2 and wt == WT_I32:
                if not read_float(&p, end, &x):
                    t.bad[MALFORMED] += 1
                    return 0
            elif field == 3 and wt == WT_I32:
                if not read_float(&p, end, &y):
                    t.bad[MALFORMED] += 1
                    return 0
            elif not skip(&p, end, field, wt):
                t.bad[MALFORMED] += 1
                return 0
        if pid == self.player_id:                   # the answer to our own move
            if not self.in_flight:
                t.bad[ACK_UNASKED] += 1
                return 0
            self.in_flight = False
            observe(t.hist_ack, &t.ack_max_us, read_us, self.sent_us)
            i = map_find(&t.moving, pid)
            if i >= 0:
                map_drop(&t.moving, i)
            if x == self.tx and y == self.ty:
                t.acked += 1
            elif x == self.x and y == self.y:
                t.corrected += 1
            else:
                t.bad[ACK_WRONG] += 1
            self.x = x
            self.y = y
            return 0
        i = map_find(&self.view, pid)
        t.seen += 1
        if i < 0:
            t.bad[MOVE_UNSEEN] += 1
            return 0
        if far(t, self.x, self.y, x, y):
            t.bad[MOVE_FAR] += 1
        self.view.xs[i] = x
        self.view.ys[i] = y
        i = map_find(&t.moving, pid)            # a walker's move in flight: time it
        if i >= 0 and t.moving.xs[i] == x and t.moving.ys[i] == y:
            observe(t.hist_seen, &t.seen_max_us, read_us, t.moving.ts[i])
        return 0

    cdef int on_despawn(self, const unsigned char* p, const unsigned char* end) except -1:
        cdef FieldTally t = self.tally
        cdef const unsigned char* stop
        cdef uint64_t field, length, pid
        cdef int wt
        cdef Py_ssize_t i
        while p < end:
            if not read_tag(&p, end, &field, &wt, False):
                t.bad[MALFORMED] += 1
                return 0
            if field == 1 and wt == WT_LEN:         # packed, as proto3 writes it
                if not read_varint(&p, end, &length) or length > <uint64_t>(end - p):
                    t.bad[MALFORMED] += 1
                    return 0
                stop = p + length
            elif field == 1 and wt == WT_VARINT:    # one unpacked, which parsers accept too
                stop = NULL
            else:
                if not skip(&p, end, field, wt):
                    t.bad[MALFORMED] += 1
                    return 0
                continue
            while stop == NULL or p < stop:
                if not read_varint(&p, end if stop == NULL else stop, &pid):
                    t.bad[MALFORMED] += 1
                    return 0
                t.despawned += 1
                i = map_find(&self.view, pid)
                if i < 0:
                    t.bad[DESPAWN_UNSEEN] += 1
                else:
                    map_drop(&self.view, i)
                if stop == NULL:
                    break
        return 0
