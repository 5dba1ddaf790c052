# The dummy's field scenario (netcore-dummy --scenario field): walkers that
# move and check, on every packet, what the field promises (docs/protocol.md,
# "The field"), in C: at thousands of walkers a move reaches dozens of
# observers, hundreds of thousands of field packets a second to read.
#
# Each Walker keeps its view as its packets build it (IdMap: id -> last
# position), its own position (the server's: set by S_ENTER_GAME and by the
# S_MOVE of its own id), and at most one move in flight (its target and send
# time). Every packet is checked:
#   S_SPAWN    of itself, or of an id already in view: a violation; one
#              spawned farther than the radius from us: a violation
#   S_MOVE     of its own id with no move in flight, or to neither the target
#              nor the unchanged position (a correction): a violation;
#              of another id not in view: a violation; to a position farther
#              than the radius: a violation
#   S_DESPAWN  of an id not in view: a violation
#   anything that does not parse: malformed, a violation
# The radius check uses the distance formula of netcore.field (float32
# positions, the difference in double) and this run's --view-radius, which
# must be the server's.
#
# Latency: a move's acknowledgement (its own S_MOVE, from send to read) and
# its observers (an S_MOVE of walker B, read by A, when it is B's move in
# flight: the FieldTally maps every walker's id to its target and send time)
# go to two histograms (hist.pxd). Monsters' moves have no send time: seen,
# not timed.

from libc.stdint cimport int64_t, uint64_t

from netcore.sendbuffer cimport SendBufferPool

cdef enum:
    # Must equal netcore_packets.client_dispatch's (checked at import).
    C_MOVE_ID = 1006
    S_MOVE_ID = 1007
    S_SPAWN_ID = 1008
    S_DESPAWN_ID = 1009

# What a walker can catch the server doing wrong (FieldTally.violations).
cdef enum:  # Violation kinds
    SPAWN_SELF = 0
    SPAWN_TWICE = 1
    SPAWN_FAR = 2
    MOVE_UNSEEN = 3
    MOVE_FAR = 4
    DESPAWN_UNSEEN = 5
    ACK_UNASKED = 6
    ACK_WRONG = 7
    MALFORMED = 8
    VIOLATION_KINDS = 9


# Open addressing, linear probing, keys are player ids (never 0, the empty
# mark; UINT64_MAX marks a deleted entry). Values: a position and a time.
cdef struct IdMap:
    uint64_t* keys
    float* xs
    float* ys
    int64_t* ts
    Py_ssize_t cap              # a power of two, or 0
    Py_ssize_t n                # live entries
    Py_ssize_t used             # live and deleted


cdef class FieldTally:
    cdef readonly double radius
    cdef double radius2
    cdef readonly double size                       # the server's field, for the walk
    cdef readonly double reach                      # a step's length at most
    cdef uint64_t rng                               # xorshift64*: the walks' randomness
    cdef readonly unsigned long long late           # a step skipped: the last move unanswered
    cdef readonly unsigned long long moves_sent
    cdef readonly unsigned long long acked
    cdef readonly unsigned long long corrected
    cdef readonly unsigned long long seen           # S_MOVEs of others read
    cdef readonly unsigned long long spawned        # entities in S_SPAWNs read
    cdef readonly unsigned long long despawned
    cdef unsigned long long bad[VIOLATION_KINDS]     # violations, by kind
    cdef IdMap moving                               # walker id -> its move in flight
    cdef uint64_t* hist_ack
    cdef uint64_t* hist_seen
    cdef uint64_t ack_max_us
    cdef uint64_t seen_max_us
    cdef SendBufferPool pool


cdef class Walker:
    cdef readonly FieldTally tally
    cdef readonly uint64_t player_id
    cdef readonly float x
    cdef readonly float y
    cdef float tx
    cdef float ty
    cdef readonly bint in_flight
    cdef int64_t sent_us
    cdef IdMap view

    cdef int on_packet(self, unsigned int pkt_id, const unsigned char* p, Py_ssize_t n,
                       int64_t read_us) except -1
    cdef int on_spawn(self, const unsigned char* p, const unsigned char* end) except -1
    cdef int on_move(self, const unsigned char* p, const unsigned char* end,
                     int64_t read_us) except -1
    cdef int on_despawn(self, const unsigned char* p, const unsigned char* end) except -1
