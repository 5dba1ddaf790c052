# The dummy's receive side: every S_CHAT is decoded and checked in C, in place,
# without a Python object per packet.
#
# Why in C: one chat fans out to every player of its room, so N clients
# chatting in one room produce N*N deliveries. The load generator must read
# them faster than the server can write them or it measures itself. The
# default deliver() path (a bytes object, a Python call, a protobuf parse per
# packet) tops out near half a million per second on one core; this one is
# a few dozen nanoseconds of C per packet (benchmarks/bench_dummy_ceiling.py).
#
# The message is the dummy's own: ASCII "<sender> <seq> <sent_us> " padded to
# the chat size, where sender is the sender's client index, seq counts that
# sender's chats from 0 and sent_us is the send time in microseconds since the
# Tally's epoch (a monotonic clock, see now_us). So a receiver needs no lookup
# table of what was sent: each chat carries what it should be checked against.
#
# Per receiver and per sender of its room the session keeps the next seq it
# expects (a high-water mark, one uint32 per pair): seq == next is in order,
# seq > next is out of order (a gap: what was skipped is lost unless it comes
# late), seq < next a duplicate (a late arrival after a gap counts here too).
# Unique deliveries (in order + out of order) are what "lost" is computed
# from. Everything shared by all receivers of a run lives in one Tally: the
# counters, the sender table (room, slot in the room, expected playerId, per
# client index) and one latency histogram, small enough to stay in cache
# where a histogram per receiver (1,000 x 30 KiB) would not.
#
# A valid S_CHAT whose msg is not in the dummy's format (a room announcement,
# a human player's line), or one that arrives before the chat phase armed the
# session, is "foreign": counted, not an error. A dummy chat the server
# mangled is therefore not flagged by itself, but it is missing from the
# unique count, so it shows up as lost.
#
# Shards: several dummy processes can load the same rooms (--shard I/K), each
# running the clients I, I+K, ... of one global numbering. Every shard's Tally
# holds the whole sender table (a room and slot are computable for any index)
# but learns the playerIds of its own clients only: another shard's senders
# are entered with UNKNOWN_PLAYER_ID, and their playerId is not checked. The
# send stamps count from one epoch given to every shard, so latency is
# measured across processes on the machine's one monotonic clock.
#
# Time: one clock read per socket read (process()), not per packet: a read
# carries up to 256 KiB, thousands of chats that all arrived together.
#
# The decoder, the checks and the histogram are cdef inline functions of
# tally.pyx (direct C calls, no vtable); only deliver() and process(), the
# hooks PacketSession calls, are methods.

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

from netcore.framing cimport FrameReader
from netcore.session cimport PacketSession

from netcore_dummy.hist cimport HIST_BUCKETS
from netcore_dummy.walk cimport Walker

cdef enum:
    # Must equal netcore_packets.client_dispatch.PKT_S_CHAT (checked at import).
    S_CHAT_ID = 1005
    # A decimal field of the message has at most this many digits.
    MAX_DIGITS = 19

cdef enum DecodeStatus:
    DECODE_OK = 0
    DECODE_MALFORMED = 1        # not a valid protobuf S_CHAT
    DECODE_BAD_MSG = 2          # valid S_CHAT, but msg is not in the dummy's format

# A decoded S_CHAT; msg points into the packet and lives only as long as it.
cdef struct ChatMsg:
    uint64_t player_id
    const unsigned char* msg
    Py_ssize_t msg_len

cdef struct ChatFields:
    uint64_t sender
    uint64_t seq
    uint64_t sent_us

cdef struct ChatCounts:
    uint64_t received           # every S_CHAT that reached a tallying session
    uint64_t unique             # in_order + out_of_order
    uint64_t in_order
    uint64_t out_of_order       # seq beyond the next expected: a gap
    uint64_t duplicates         # seq already passed
    uint64_t wrong_sender       # playerId not the sender's, or a sender not of this room
    uint64_t malformed          # not a valid protobuf S_CHAT: an error
    uint64_t foreign            # a valid S_CHAT the dummy did not send (see above)

cdef struct Member:
    int32_t room                # -1: not in game (a failed client)
    int32_t slot                # index of this client within its room
    uint64_t player_id          # UNKNOWN_PLAYER_ID: another shard's, not checked


cdef class Tally:
    cdef ChatCounts c
    cdef readonly Py_ssize_t n_clients
    cdef readonly int64_t epoch_us          # msg send times count from here
    cdef readonly int64_t first_us          # read time of the first unique delivery
    cdef readonly int64_t last_us           # read time of the last unique delivery
    cdef readonly uint64_t latency_max_us
    cdef Member* members                    # n_clients entries, by client index
    cdef uint64_t* hist                     # HIST_BUCKETS latency counts
    cdef uint64_t* window                   # hist at the last window() call
    cdef uint64_t target                    # fire on_target once unique reaches it
    cdef object on_target

    cdef int check_target(self) except -1


cdef class DummySessionCore(PacketSession):
    cdef readonly Tally tally
    # The field scenario's side of this client (walk.pxd): S_MOVE, S_SPAWN
    # and S_DESPAWN go to it in C; None in the chat scenario.
    cdef public Walker walker
    cdef readonly Py_ssize_t index          # this client's index in the run
    cdef readonly int room
    cdef readonly uint64_t chats_received   # S_CHATs this session tallied
    # A resumed session: chats sent before its S_RESUME came (a clock
    # reading, 0: not resumed) are what the server kept for it and sent again.
    cdef public int64_t replay_before_us
    cdef readonly uint64_t replayed
    cdef int64_t read_us                    # clock at the current read
    cdef uint32_t* next_seq                 # per sender slot of the room; NULL until armed
    cdef Py_ssize_t n_slots

    cdef Py_ssize_t process(self, FrameReader* r) except -1
    cdef int deliver(self, unsigned int pkt_id, const unsigned char* payload,
                     Py_ssize_t size) except -1
