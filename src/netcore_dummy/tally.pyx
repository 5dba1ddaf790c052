# cython: language_level=3
"""S_CHAT decoding and checking in C for netcore-dummy (design in tally.pxd)."""
from libc.stdint cimport UINT32_MAX, UINT64_MAX, int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from cpython.bytes cimport PyBytes_FromStringAndSize

from netcore.framing cimport FrameReader
from netcore.session cimport PacketSession

from netcore_dummy.hist cimport (HIST_BUCKETS, dummy_clock_us, hist_index, hist_percentile)
from netcore_dummy.walk cimport S_DESPAWN_ID, S_MOVE_ID
from netcore_dummy.pbwire cimport WT_LEN, WT_SGROUP, WT_VARINT, read_field, read_tag, skip_group

from netcore_packets import client_dispatch as _dispatch

if _dispatch.PKT_S_CHAT != S_CHAT_ID:
    raise ImportError(f"tally.pxd says S_CHAT is {S_CHAT_ID}, the protocol says "
                      f"{_dispatch.PKT_S_CHAT}: update S_CHAT_ID")

# -- the wire: protobuf S_CHAT and the dummy's msg ---------------------------

cdef inline DecodeStatus decode_s_chat(const unsigned char* p, Py_ssize_t n,
                                       ChatMsg* out) noexcept nogil:
    """Field 1 (varint) playerId, field 2 (length-delimited) msg. Other
    fields, groups, and known fields with another wire type are skipped as
    protobuf skips them; the last occurrence of a field wins."""
    cdef const unsigned char* end = p + n
    cdef uint64_t field, v = 0
    cdef int wt
    out.player_id = 0
    out.msg = p
    out.msg_len = 0
    while p < end:
        if not read_tag(&p, end, &field, &wt, False):
            return DECODE_MALFORMED
        if wt == WT_SGROUP:
            if not skip_group(&p, end, field, 1):
                return DECODE_MALFORMED
        elif not read_field(&p, end, wt, &v):
            return DECODE_MALFORMED
        elif field == 1 and wt == WT_VARINT:
            out.player_id = v
        elif field == 2 and wt == WT_LEN:
            out.msg = p - v
            out.msg_len = <Py_ssize_t>v
    return DECODE_OK


cdef inline bint read_decimal(const unsigned char** pp, const unsigned char* end,
                              uint64_t* out) noexcept nogil:
    """1 to MAX_DIGITS ASCII digits then one space (so no overflow)."""
    cdef const unsigned char* p = pp[0]
    cdef uint64_t v = 0
    cdef int digits = 0
    while p < end and p[0] >= c'0' and p[0] <= c'9':
        if digits == MAX_DIGITS:
            return False
        v = v * 10 + (p[0] - c'0')
        digits += 1
        p += 1
    if digits == 0 or p >= end or p[0] != c' ':
        return False
    pp[0] = p + 1
    out[0] = v
    return True


cdef inline DecodeStatus parse_chat_fields(const unsigned char* p, Py_ssize_t n,
                                           ChatFields* out) noexcept nogil:
    """"<sender> <seq> <sent_us> " then any padding."""
    cdef const unsigned char* end = p + n
    if (read_decimal(&p, end, &out.sender) and read_decimal(&p, end, &out.seq)
            and read_decimal(&p, end, &out.sent_us)):
        return DECODE_OK
    return DECODE_BAD_MSG


cdef inline void record_latency(Tally t, int64_t read_us, uint64_t sent_us) noexcept:
    cdef int64_t rel = read_us - t.epoch_us
    # A send stamp from the future (another clock, a corrupt msg) reads as 0.
    cdef uint64_t lat = <uint64_t>(rel - <int64_t>sent_us) if rel > 0 and sent_us < <uint64_t>rel else 0
    t.hist[hist_index(lat)] += 1
    if lat > t.latency_max_us:
        t.latency_max_us = lat


# -- the per-delivery check ---------------------------------------------------

cdef inline void tally_chat(DummySessionCore s, Tally t, const unsigned char* payload,
                            Py_ssize_t size) noexcept:
    cdef ChatMsg m
    cdef ChatFields f
    cdef Member* who
    cdef uint32_t* next_seq
    t.c.received += 1
    s.chats_received += 1
    if decode_s_chat(payload, size, &m) != DECODE_OK:
        t.c.malformed += 1
        return
    if (s.next_seq == NULL or parse_chat_fields(m.msg, m.msg_len, &f) != DECODE_OK
            or f.seq >= UINT32_MAX):            # next_seq is a uint32
        t.c.foreign += 1
        return
    if f.sender >= <uint64_t>t.n_clients:
        t.c.wrong_sender += 1
        return
    who = &t.members[f.sender]
    if who.room != s.room or who.slot < 0 or who.slot >= s.n_slots:
        t.c.wrong_sender += 1          # not in game, or of another room
        return
    if m.player_id != who.player_id and who.player_id != UINT64_MAX:  # UNKNOWN_PLAYER_ID
        t.c.wrong_sender += 1          # the chat itself still counts below
    next_seq = &s.next_seq[who.slot]
    if f.seq < next_seq[0]:
        t.c.duplicates += 1
        return
    if f.seq == next_seq[0]:
        t.c.in_order += 1
    else:
        t.c.out_of_order += 1
    next_seq[0] = <uint32_t>(f.seq + 1)
    t.c.unique += 1
    if <int64_t>f.sent_us + t.epoch_us < s.replay_before_us:
        s.replayed += 1                 # kept while it was away, sent again
    if t.first_us == 0:
        t.first_us = s.read_us
    t.last_us = s.read_us
    record_latency(t, s.read_us, f.sent_us)


# -- Python API --------------------------------------------------------------

def now_us():
    """The clock chats are stamped and read with: monotonic microseconds."""
    return dummy_clock_us()


def format_chat(uint64_t sender, uint64_t seq, uint64_t sent_us, Py_ssize_t size):
    """A chat msg in the dummy's format, padded with '.' to size characters
    (never cut: a msg shorter than its three numbers is just those)."""
    return f"{sender} {seq} {sent_us} ".ljust(size, ".")


def decode_chat(const unsigned char[::1] payload):
    """(playerId, msg bytes) of an S_CHAT payload as the C path reads it, or
    None when it is malformed. Any C-contiguous bytes-like object: the
    decoder walks it with a pointer, so a strided view is refused (BufferError)."""
    cdef ChatMsg m
    cdef Py_ssize_t n = payload.shape[0]
    if decode_s_chat(&payload[0] if n else NULL, n, &m) != DECODE_OK:
        return None
    return m.player_id, PyBytes_FromStringAndSize(<const char*>m.msg, m.msg_len)


def parse_chat(const unsigned char[::1] msg):
    """(sender, seq, sent_us) of a msg in the dummy's format, or None (msg:
    C-contiguous, as for decode_chat)."""
    cdef ChatFields f
    cdef Py_ssize_t n = msg.shape[0]
    if parse_chat_fields(&msg[0] if n else NULL, n, &f) != DECODE_OK:
        return None
    return f.sender, f.seq, f.sent_us


# A sender of another shard: in its room and slot, its playerId not known here.
UNKNOWN_PLAYER_ID = UINT64_MAX

COUNTERS = ("received", "unique", "in_order", "out_of_order", "duplicates",
            "wrong_sender", "malformed", "foreign")


cdef class Tally:
    """What every receiver of a run saw: counters, latency histogram, and the
    table of senders (client index -> room, slot in the room, playerId)."""

    def __cinit__(self, Py_ssize_t n_clients, epoch_us=None):
        """epoch_us (a now_us() reading, default now): where send stamps count
        from; another process stamping chats for this tally passes it along."""
        cdef Py_ssize_t i
        if n_clients < 1:
            raise ValueError("n_clients must be >= 1")
        # calloc, not malloc(n * size): it refuses a product that overflows.
        self.members = <Member*>calloc(n_clients, sizeof(Member))
        self.hist = <uint64_t*>calloc(HIST_BUCKETS, sizeof(uint64_t))
        self.window = <uint64_t*>calloc(HIST_BUCKETS, sizeof(uint64_t))
        if self.members == NULL or self.hist == NULL or self.window == NULL:
            raise MemoryError()
        for i in range(n_clients):
            self.members[i].room = -1
            self.members[i].slot = -1
            self.members[i].player_id = 0
        self.n_clients = n_clients
        self.epoch_us = dummy_clock_us() if epoch_us is None else epoch_us
        self.target = UINT64_MAX

    def __dealloc__(self):
        free(self.members)
        free(self.hist)
        free(self.window)

    def set_member(self, Py_ssize_t index, int room, int slot, uint64_t player_id):
        """Client `index` is in game in `room` as its `slot`-th member
        (player_id UNKNOWN_PLAYER_ID: another shard's client, not checked)."""
        if index < 0 or index >= self.n_clients:
            raise IndexError(f"client index {index} not in [0, {self.n_clients})")
        if room < 0 or slot < 0:
            raise ValueError("room and slot must be >= 0")
        self.members[index].room = room
        self.members[index].slot = slot
        self.members[index].player_id = player_id

    def stamp(self):
        """The sent_us to put in a chat sent now."""
        return dummy_clock_us() - self.epoch_us

    def counts(self):
        """Every counter by name (see COUNTERS)."""
        return self.c

    @property
    def unique(self):
        return self.c.unique

    @property
    def received(self):
        return self.c.received

    def latency_us(self, double q):
        """Latency at quantile q (0..1] of every unique delivery so far."""
        if q >= 1.0:
            return self.latency_max_us
        return hist_percentile(self.hist, NULL, q, self.latency_max_us)

    def window_latency_us(self, double q):
        """Latency at quantile q of the deliveries since the previous call
        (None if there were none); starts the next window."""
        cdef uint64_t n = 0
        cdef Py_ssize_t i
        for i in range(HIST_BUCKETS):
            n += self.hist[i] - self.window[i]
        v = hist_percentile(self.hist, self.window, q, UINT64_MAX) if n else None
        memcpy(self.window, self.hist, HIST_BUCKETS * sizeof(uint64_t))
        return v

    def add_latency_us(self, uint64_t latency):
        """Record one latency directly (for tests of the histogram)."""
        record_latency(self, self.epoch_us + <int64_t>latency + 1, 1)

    def expect(self, uint64_t target, callback):
        """Call callback() once, as soon as `target` unique deliveries are in."""
        self.target = target
        self.on_target = callback
        self.check_target()

    cdef int check_target(self) except -1:
        if self.c.unique >= self.target:
            self.target = UINT64_MAX
            callback, self.on_target = self.on_target, None
            if callback is not None:
                callback()
        return 0


cdef class DummySessionCore(PacketSession):
    """A PacketSession that tallies S_CHAT in C and hands every other packet
    to on_recv_packet. Subclassed in Python by netcore_dummy.DummySession."""

    def __init__(self, Tally tally=None, Py_ssize_t index=0, int room=0):
        self.tally = tally
        self.index = index
        self.room = room

    def __dealloc__(self):
        free(self.next_seq)

    def arm(self, Py_ssize_t room_size):
        """Start checking chats from the room_size members of this room (the
        Tally's members table says who they are); chats before are foreign."""
        cdef uint32_t* seqs
        if self.tally is None:
            raise RuntimeError("a session without a Tally has nothing to tally into")
        if room_size < 1:
            raise ValueError("room_size must be >= 1")
        seqs = <uint32_t*>calloc(room_size, sizeof(uint32_t))
        if seqs == NULL:
            raise MemoryError()
        free(self.next_seq)
        self.next_seq = seqs
        self.n_slots = room_size

    @property
    def armed(self):
        return self.next_seq != NULL

    @property
    def own_chats_back(self):
        """How many of its own chats have come back to it (a room sends a
        chat to its sender too): all it sent reached the server once this is
        its seq. -1 before it is armed."""
        cdef int32_t slot
        if self.next_seq == NULL or self.tally is None or self.index >= self.tally.n_clients:
            return -1
        slot = self.tally.members[self.index].slot
        if slot < 0 or slot >= self.n_slots:
            return -1
        return self.next_seq[slot]

    def take_over(self, DummySessionCore old not None):
        """A resume (--resumable --drop-every): this connection is old's
        client from now on, with old's place in every sender's sequence (so
        a chat missed, or delivered twice, across the drop is caught) and its
        walker; old checks nothing more."""
        if old.tally is not self.tally or old.index != self.index:
            raise ValueError("a session takes over its own client's only")
        free(self.next_seq)
        self.next_seq = old.next_seq
        self.n_slots = old.n_slots
        old.next_seq = NULL
        old.n_slots = 0
        self.chats_received += old.chats_received
        self.walker = old.walker

    cdef Py_ssize_t process(self, FrameReader* r) except -1:
        cdef Py_ssize_t partial
        self.read_us = dummy_clock_us()
        partial = PacketSession.process(self, r)
        if self.tally is not None and self.tally.c.unique >= self.tally.target:
            self.tally.check_target()
        return partial

    cdef int deliver(self, unsigned int pkt_id, const unsigned char* payload,
                     Py_ssize_t size) except -1:
        if pkt_id == S_CHAT_ID and self.tally is not None:
            tally_chat(self, self.tally, payload, size)
            return 0
        if self.walker is not None and S_MOVE_ID <= pkt_id <= S_DESPAWN_ID:
            self.walker.on_packet(pkt_id, payload, size, self.read_us)
            return 0
        return PacketSession.deliver(self, pkt_id, payload, size)
