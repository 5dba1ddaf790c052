# Field: positions, a grid, and who sees whom, for a room that is a square field.
#
# An MMO room does not send every move to every member: a player sees what is
# within its view radius, so the server keeps positions, each entity's view
# set, and sends a move only to those who see the mover (the area of
# interest). This is that bookkeeping, in C, for one room; the room (a
# JobQueue: netcore_game.room.FieldRoom) calls it from its jobs only.
#
# Geometry. The field is the square 0 <= x, y <= size. Positions are float32,
# the values that go on the wire; B is in A's view when
#     dx = (double)ax - (double)bx, dy likewise, dx*dx + dy*dy <= radius**2
# (the same formula in the C reference server and the checking clients, so
# everyone agrees on every edge case). The relation is symmetric: the
# entities A sees are exactly those that see A, so one neighbour list per
# entity serves both ("what I see" and "who sees me").
#
# Grid. Square cells of side cell >= radius (wider where the field would
# need more than MAX_COLS per side), each an intrusive doubly linked list of
# the entities in it (next/prev slots in the Entity itself): insert, remove
# and move between cells are O(1); everything within the radius of a point
# lies in the 3x3 cells around its own. A move costs the entities of those
# nine cells plus the mover's old neighbours: no Python object per neighbour.
#
# A move. Mark the old neighbours with stamp A; scan the nine cells, each
# entity within the radius is "stays" (marked A) or "enters" (not), and is
# marked B; an old neighbour left unmarked by B "leaves". Then the packets,
# each framed once into a pooled SendBuffer and queued (Session.enqueue, a C
# call) to every recipient, in this order, so that what a client holds is
# always exactly what the server holds for it:
#     the mover: S_MOVE(its own id, new position), S_DESPAWN(leaves), S_SPAWN(enters)
#     stays:     S_MOVE(mover)        leaves: S_DESPAWN(mover)
#     enters:    S_SPAWN(mover at its new position)
# A refused move (not finite, outside, farther than max_step) sends the mover
# alone S_MOVE with its unchanged position. Recipients on other workers
# (`remote`) are collected by id and handed, with the same buffer, to the
# room's remote sink (netcore_cluster's RoomStream.multicast): one call per
# packet, not per recipient.
#
# Packets are laid out by hand, byte for byte what protobuf makes (tests pin
# it): S_MOVE {1: id varint, 2: x fixed32, 3: y fixed32}; S_SPAWN {1: Player
# {1: id, 2: name, 3: type, 4: x, 5: y}}; S_DESPAWN {1: packed ids}; a float
# of bits 0 is left out, as proto3 does (a -0.0 position is stored as 0.0, so
# none is ever sent). A list that would pass the 65,535 bytes a packet can
# hold goes as several packets of the same kind, in order. Each entity's
# name and type ("tail") are encoded once, when it is added.

from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t

from netcore.sendbuffer cimport SendBuffer, SendBufferPool

cdef enum:
    NO_SLOT = -1
    MAX_COLS = 256                  # cells per side at most: 256 KiB of grid a room
    MAX_PAYLOAD = 65531             # 65,535 less the 4-byte header

# Why a move was refused (FieldStats.refused index).
cdef enum MoveRefusal:
    MOVE_OK = 0
    MOVE_NOT_FINITE = 1
    MOVE_OUTSIDE = 2
    MOVE_TOO_FAR = 3


cdef struct Entity:
    uint64_t id
    float x
    float y
    int32_t cell                    # its cell, or NO_SLOT when the slot is free
    int32_t next                    # the next entity in its cell (free slots: the next free)
    int32_t prev
    int32_t* seen                   # its neighbours' slots, unordered
    int32_t n_seen
    int32_t cap_seen
    uint64_t mark                   # scratch for a move (stamps; 64 bits never wrap)
    uint8_t observer                # it gets packets: a player (not a monster)
    uint8_t remote                  # its session is on another worker


cdef class Field:
    cdef Entity* ents
    cdef int32_t cap                # slots allocated
    cdef int32_t free_head          # first free slot, or NO_SLOT
    cdef readonly int32_t count     # entities in the field
    cdef int32_t* cells             # first entity of each cell, or NO_SLOT
    cdef int32_t cols
    cdef readonly double size
    cdef readonly double radius
    cdef readonly double max_step
    cdef double radius2
    cdef double step2
    cdef double cell
    cdef uint64_t stamp
    cdef list sessions              # slot -> the netcore Session it is sent to, or None
    cdef list tails                 # slot -> bytes: its Player's name and type, encoded
    cdef public object remote_sink  # callable(ids: bytes of u64, buf) for other workers
    cdef unsigned int move_id
    cdef unsigned int spawn_id
    cdef unsigned int despawn_id
    cdef SendBufferPool pool
    # Scratch of a move, grown as needed: slots that stay, enter, leave, and
    # the ids of recipients on other workers.
    cdef int32_t* stays
    cdef int32_t* enters
    cdef int32_t* leaves
    cdef int32_t cap_scratch
    cdef uint64_t* remote_ids
    cdef Py_ssize_t n_remote
    cdef Py_ssize_t cap_remote
    cdef readonly unsigned long long moves          # accepted
    cdef readonly unsigned long long deliveries     # packets queued to players, all kinds
    cdef unsigned long long refused[4]

    cdef Entity* entity(self, int32_t slot) except NULL
    cdef int32_t take_slot(self) except -2
    cdef int grow_seen(self, Entity* e) except -1
    cdef int grow_scratch(self, int32_t need) except -1
    cdef inline int32_t cell_of(self, float x, float y) noexcept
    cdef inline void cell_insert(self, int32_t slot, int32_t cell) noexcept
    cdef inline void cell_remove(self, int32_t slot) noexcept
    cdef int unsee(self, int32_t a, int32_t b) except -1
    cdef int see(self, int32_t a, int32_t b) except -1
    cdef MoveRefusal check_move(self, Entity* e, float x, float y) noexcept
    cdef int scan(self, int32_t slot, float x, float y, int32_t cell, uint64_t old_mark,
                  uint64_t new_mark, int32_t* n_stay, int32_t* n_enter) except -1
    cdef int apply_move(self, int32_t slot, float x, float y) except -1
    cdef SendBuffer move_packet(self, int32_t slot)
    cdef list spawn_packets(self, const int32_t* slots, int32_t n)
    cdef list despawn_packets(self, const int32_t* slots, int32_t n)
    cdef int deliver(self, int32_t slot, SendBuffer buf) except -1
    cdef int deliver_all(self, int32_t slot, list bufs) except -1
    cdef int tell(self, list bufs, const int32_t* slots, int32_t n) except -1
    cdef int flush_remote(self, SendBuffer buf) except -1
