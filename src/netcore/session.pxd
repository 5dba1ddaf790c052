# Sessions: one per TCP connection, the asyncio protocol object itself.
#
# Session       transport, lifecycle and the send queue; raw byte receive.
# PacketSession the 4-byte-header framing on top: one on_recv_packet per packet.
#
# Receive path (no copy per read): the transport asks get_buffer() for room,
# reads into it, and calls buffer_updated(n); the RecvBuffer hands that span to
# _process, which parses every whole packet and leaves the partial tail to
# keep_tail (moved at most once). Payloads reach user code as bytes they may keep.
#
# Send path: send() appends a shared SendBuffer to the session's SendQueue (a
# C struct inside the session, sendqueue.pxd; a buffer still open, its size
# not yet known, is refused) and marks the session dirty in its SendFlusher;
# once per event-loop iteration the flusher writes every dirty session's queue
# in one write each (sendmsg on the socket, the rest through the transport). The
# queue is bounded (max_pending_bytes): past it the session is a slow consumer
# and is aborted, so a reader that stalls costs the server a bounded amount of
# memory and never delays anyone else. While the transport is paused (its own
# buffer over WRITE_HIGH_WATER) packets wait in the queue, counted against the
# same bound.

from cpython.time cimport PyTime_t

from netcore.framing cimport FrameReader
from netcore.recvbuffer cimport RecvBuffer
from netcore.sendbuffer cimport SendBuffer
from netcore.sendqueue cimport Gather, SendQueue
from netcore.sentlog cimport SentLog
from netcore.stats cimport PacketStats

cdef enum:
    # A coalesced run is sent once it would pass this many bytes.
    RUN_MAX_BYTES = 65536
    DEFAULT_MAX_PENDING_BYTES = 1048576
    WRITE_HIGH_WATER = 65536
    # A graceful close sends FIN after the queued bytes and reads (discarding)
    # until the peer closes too, for at most this long. Closing with unread
    # input instead would make the kernel send RST, and an RST can destroy
    # the very bytes the close was meant to deliver. Every graceful close has
    # this deadline, the one that follows the peer's own FIN too: a peer that
    # half-closes and then reads nothing would otherwise keep its session,
    # its buffers and its room place for as long as it likes, waiting for a
    # drain that never comes. Past it the transport is aborted.
    LINGER_MS = 3000


# Inbound rate limit: a token bucket per session, `burst` packets deep,
# refilled at `rate` packets/s; a packet that finds it empty closes the session
# (RATE_LIMITED) before it is delivered. Kept as GCRA, the same bucket in one
# int64: `tat` is the time the bucket will be full again, and a packet is
# admitted when that is at most (burst - 1) intervals ahead of now. So the
# per-packet cost is two compares and an add, with no floating point whose
# rounding would make the limit depend on how reads happen to be split.
#
# `now` is read once per socket read, not per packet: every packet of one read
# arrived together, and a flood comes in 256 KiB reads of thousands of packets.
# That clock read (tens of ns next to a read syscall of microseconds) also
# stamps last_recv_ns for the idle sweep, so it is taken on every read.
cdef struct RateLimit:
    PyTime_t interval           # ns per packet: 1e9 / rate; 0 is no limit
    PyTime_t tolerance          # (burst - 1) * interval
    PyTime_t tat                # when the bucket is full again (0: full)


cdef int rate_init(RateLimit* rl, double packet_rate, Py_ssize_t packet_burst) except -1
cpdef Py_ssize_t default_burst(double packet_rate, Py_ssize_t packet_burst) except -1


cdef inline bint rate_admit(RateLimit* rl, PyTime_t now) noexcept:
    if rl.tat < now:
        rl.tat = now            # quiet long enough: a full bucket
    elif rl.tat - now > rl.tolerance:
        return False
    rl.tat += rl.interval
    return True


# Flush pacing: with interval 0 the flusher runs in the next loop iteration.
# With an interval, two runs are at least that far apart, but only under load:
# a flusher idle for longer than the interval still runs in the next
# iteration, so a quiet server adds no latency. Under load it turns N writes
# of one packet each into one write of N packets: on loopback a send() costs
# microseconds of TCP work, and at 1,000 chatting players a write per chat per
# player is a million syscalls a second.
#
# Server-wide bound on unsent bytes: every session of a service shares its
# flusher, so the flusher keeps the total its sessions hold queued
# (`pending_bytes`, two integer additions per packet: one at enqueue, one at
# flush or drop; a flush takes off whatever left the queue even when the
# transport's write raised after the queue was emptied, else the total would
# drift up and cut off sessions that hold nothing). Past `max_pending_bytes`
# (0: no bound) shed() walks the service's registry once and aborts the
# sessions with the largest queues first, as slow consumers, until the total
# is back under 3/4 of the bound: the hysteresis keeps a server that sits at
# its bound from walking the registry per packet. Bytes already handed to a
# transport (at most its high water mark plus one write per session) are not
# counted.
#
# Coalesced fan-out (send_to_all_coalesced): a room that broadcasts k chats in
# one job slice queued k entries at each of its N members, k*N pushes, each
# touching the member's session and queue (cache misses at every one: at
# 3,000 members in one room, 12% of the server's time). Instead the flusher
# keeps one open run per turn: the packets broadcast to one list of sessions
# one after another are appended (copied) into one buffer, and the run fans
# out as ONE queue entry per member when it closes: when a broadcast goes to
# another list, when anything else is queued to any session of this flusher
# or a session closes (so no packet overtakes another: a run holds only
# packets queued before them), and when the flusher runs (the end of a job
# slice, or of the loop turn, the same write as before). The list must not
# be changed in place meanwhile (a room replaces its list when its members
# change): the run goes to the members the broadcasts were made to.
cdef class SendFlusher:
    cdef object loop
    cdef list dirty
    cdef list spare
    cdef bint scheduled
    cdef double interval            # seconds between runs under load; 0: every iteration
    cdef double last_run            # loop time of the last run
    cdef readonly unsigned long long runs
    cdef readonly Py_ssize_t pending_bytes      # queued in all sessions of this flusher
    cdef readonly Py_ssize_t max_pending_bytes  # the bound on pending_bytes; 0: none
    cdef readonly unsigned long long shed_sessions  # sessions cut off to keep the bound
    cdef dict sessions                          # the service's registry, for shed()
    cdef Gather gather                          # long queues are copied here to be written
    cdef list run_targets                       # the open run's sessions; None: no run
    cdef SendBuffer run_first                   # its first packet(s), not copied yet
    cdef unsigned char* run_data                # then: every packet of the run, copied
    cdef Py_ssize_t run_size
    cdef Py_ssize_t run_cap
    cdef Py_ssize_t run_frames
    cdef readonly unsigned long long runs_coalesced  # runs of more than one broadcast
    cdef int add(self, Session s) except -1
    cdef int schedule(self) except -1
    cdef int append_run(self, list targets, SendBuffer buf) except -1
    cdef int close_run(self) except -1
    cdef int run(self) except -1
    cdef int shed(self) except -1


cdef class Session:
    cdef readonly object transport
    cdef readonly object service
    cdef readonly unsigned long long session_id
    # "tcp", or "ws" when netcore.websocket carries it: for metrics and logs
    # only, nothing else looks at it.
    cdef readonly str transport_kind
    cdef object _peername                   # fetched on first use: a syscall per connection
    cdef readonly Py_ssize_t max_packet_size
    cdef readonly Py_ssize_t max_pending_bytes
    cdef readonly double packet_rate        # packets/s; 0: no limit
    cdef readonly Py_ssize_t packet_burst
    cdef RateLimit rate
    # Deadlines, checked by the service's sweep rather than a timer each: a
    # session stays under its login deadline until mark_logged_in(), then
    # (or from the start, when there is no login deadline) under the idle one.
    cdef readonly bint logged_in
    cdef PyTime_t connected_ns              # monotonic, at connection_made
    cdef PyTime_t last_recv_ns              # the last read that completed a packet
    cdef readonly object close_reason        # a netcore.errors.Disconnect once closing
    cdef object closed                      # future for wait_closed, made on first use
    cdef bint lost                          # connection_lost has run
    cdef readonly unsigned long long packets_received
    cdef readonly unsigned long long packets_sent
    cdef readonly unsigned long long bytes_sent
    cdef readonly unsigned long long writes
    cdef readonly unsigned long long direct_writes  # of which the kernel took whole (sendmsg)
    cdef RecvBuffer rbuf
    cdef SendQueue queue                    # a struct, embedded: see sendqueue.pxd
    cdef SendFlusher flusher
    cdef PacketStats stats                  # the service's counters; None: not counted
    # Fairness under a flood: at most this many packets are handled per read
    # (0: no cap). The rest waits in the receive buffer with reading paused
    # and is handled in the next loop iterations, so one client's 256 KiB read
    # of tiny packets cannot hold the loop, nor pile up its room's job queue,
    # while everyone else waits.
    cdef readonly Py_ssize_t max_packets_per_read
    cdef bint backlogged                    # stopped at the cap with packets left
    cdef bint reading_paused                # pause_reading(): a backlog must not resume it
    cdef object linger_timer                # the deadline of a graceful close (LINGER_MS)
    # The peer's end of input (its log detail) that a transport handed over
    # while a capped read's backlog still waited: picows parses a whole socket
    # read at once, so a WebSocket close frame can come right behind a
    # message that was only partly handled. It is acted on once the backlog
    # has drained, so that nothing the peer sent before it is dropped.
    cdef object deferred_end
    # A graceful close asked to abort (close_sessions' timeout) is cut short:
    # the transport aborted once, the reason replaced by the one that did it.
    cdef bint closing
    cdef bint aborted                       # close() aborted the transport
    cdef bint eof_seen                      # the peer half-closed: nothing more to read
    cdef bint write_paused
    # The socket's descriptor where the transport is a plain TCP one: a flush
    # then writes the queue itself (sendmsg) when the transport holds nothing,
    # and hands the transport only what the kernel did not take; -1 (TLS, a
    # WebSocket, a pipe) always goes through the transport.
    cdef int fd
    cdef bint transport_holds               # we handed the transport bytes it may not have sent
    cdef bint flush_scheduled
    cdef bint wants_on_send
    # Resumption (netcore.sentlog): with keep_bytes > 0 every packet queued
    # is numbered and kept in sent_log, at most keep_bytes of them. A held
    # session's connection is gone and packets queued to it are still
    # numbered and kept (nothing is written), those from hold_from on never
    # dropped: past the bound keeping stops and on_hold_overflow() is
    # called soon. resume_from() moves a log to the session that resumes it.
    cdef SentLog sent_log
    cdef readonly Py_ssize_t keep_bytes
    cdef readonly bint held
    cdef unsigned long long hold_from
    # shut_output() (a rolling restart): our FIN is sent, the peer's packets
    # are still read and handled until it closes; what is queued from then
    # on is kept by the sent log, never written.
    cdef readonly bint output_shut

    cdef int keep(self, SendBuffer buf) except -1

    cdef int configure(self, object service, SendFlusher flusher,
                       Py_ssize_t max_packet_size, Py_ssize_t max_pending_bytes,
                       double packet_rate, Py_ssize_t packet_burst) except -1
    cdef int enqueue(self, SendBuffer buf) except -1
    cdef int flush(self) except -1
    cdef int close(self, object kind, str detail, bint abort) except -1
    cdef int arm_linger(self) except -1     # the deadline of a graceful close
    # The peer sends nothing more: deliver what is queued, then close (with
    # the linger deadline) unless on_eof() keeps it open; 1 when kept open.
    cdef int end_input(self, str detail) except -1
    # end_input, or deferred_end while a backlog waits; 1: the transport stays open.
    cdef int peer_ended(self, str detail) except -1
    # One unit of the packet rate for something the peer sent that carries no
    # packet (a WebSocket control frame, an empty message, a fragment): every
    # frame costs at least what a packet costs. 1 admitted; 0: it closed the
    # session as rate limited.
    cdef int admit_frame(self) except -1
    cdef void drop_queue(self) noexcept     # clear the queue, keeping the flusher's total
    cdef Py_ssize_t process(self, FrameReader* r) except -1
    cdef int consume(self, FrameReader* r) except -1
    cdef int drain_backlog(self) except -1


# deliver() is the per-packet hook: the payload is only valid during the call.
# The default makes it a bytes object and calls on_recv_packet; a Cython
# subclass (a load generator counting millions of packets) can override it
# to read the payload in place.
cdef class PacketSession(Session):
    cdef int deliver(self, unsigned int pkt_id, const unsigned char* payload,
                     Py_ssize_t size) except -1


cpdef Py_ssize_t send_to_all(object sessions, SendBuffer buf) except -1
cpdef Py_ssize_t send_to_all_coalesced(list sessions, SendBuffer buf) except -1
cpdef int flush_due() except -1
