# cython: language_level=3
import asyncio
import itertools
import logging
import socket

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.string cimport memcpy
from cpython.time cimport PyTime_MonotonicRaw, PyTime_t
from libc.math cimport ceil, llround

from netcore.errors import Disconnect, DisconnectReason, ProtocolError
from netcore.framing import header_error
from netcore.logs import format_address, peer_line

from netcore.framing cimport (
    FRAME_OK, FRAME_PARTIAL, HEADER_SIZE, MAX_WIRE_SIZE,
    FrameHeader, FrameReader, FrameStatus, frame_next,
)
from netcore.recvbuffer cimport RecvBuffer
from netcore.sendbuffer cimport SendBuffer, copy_run
from netcore.sentlog cimport (
    SentLog, sl_at, sl_clear, sl_drop_oldest, sl_move, sl_push, sl_start)
from netcore.sendqueue cimport (
    gather_free, sq_clear, sq_free, sq_push, sq_take_joined, sq_take_joined_after, sq_write_to,
)
from netcore.stats cimport PacketStats
from netcore.tcp cimport TcpTransport
from netcore.session cimport RateLimit, rate_admit

log = logging.getLogger("netcore.session")

cdef object _session_ids = itertools.count(1)
cdef object PEER_CLOSED = DisconnectReason.PEER_CLOSED
cdef object CONNECTION_ERROR = DisconnectReason.CONNECTION_ERROR
cdef object PROTOCOL_ERROR = DisconnectReason.PROTOCOL_ERROR
cdef object HANDLER_ERROR = DisconnectReason.HANDLER_ERROR
cdef object SLOW_CONSUMER = DisconnectReason.SLOW_CONSUMER
cdef object RATE_LIMITED = DisconnectReason.RATE_LIMITED
cdef object CLOSED = DisconnectReason.CLOSED
# Reasons that point at a misbehaving peer, or at packets the server lost,
# are worth a warning in the log; limits that refused or ended a session an
# INFO line; the rest (the peer closed, the network broke, we closed it) is
# everyday life, at DEBUG. Each ending is logged once, here, through the
# per-peer line budget (netcore.logs).
cdef frozenset _PEER_FAULTS = frozenset([PROTOCOL_ERROR, HANDLER_ERROR, SLOW_CONSUMER,
                                         RATE_LIMITED])
cdef frozenset _WARNINGS = _PEER_FAULTS | frozenset([DisconnectReason.LOST_PACKETS])
cdef frozenset _REFUSALS = frozenset([DisconnectReason.SERVER_FULL,
                                      DisconnectReason.ADDRESS_FULL,
                                      DisconnectReason.LOGIN_TIMEOUT,
                                      DisconnectReason.IDLE_TIMEOUT])
# The everyday ending, made once (Disconnect is frozen): not a dataclass
# instance per connection.
cdef object _PEER_CLOSED_REASON = Disconnect(PEER_CLOSED)
cdef int DEBUG = logging.DEBUG
cdef int INFO = logging.INFO
cdef int WARNING = logging.WARNING
# TAT is kept below this, so that TAT + interval never overflows an int64.
cdef PyTime_t _MAX_RATE_SPAN = (<PyTime_t>1) << 62


cdef int rate_init(RateLimit* rl, double packet_rate, Py_ssize_t packet_burst) except -1:
    cdef PyTime_t interval
    if not packet_rate >= 0:                # NaN too
        raise ValueError("packet_rate must be >= 0")
    rl.tat = 0
    if packet_rate == 0:
        rl.interval = rl.tolerance = 0
        return 0
    if packet_burst < 1:
        raise ValueError("packet_burst must be >= 1 when there is a packet rate")
    if 1e9 / packet_rate >= <double>_MAX_RATE_SPAN:
        raise ValueError(f"packet_rate {packet_rate:g} is too small to count in nanoseconds")
    interval = <PyTime_t>llround(1e9 / packet_rate)
    if interval < 1:
        interval = 1
    if packet_burst > _MAX_RATE_SPAN // interval:
        raise ValueError(f"packet_burst {packet_burst} at {packet_rate:g} packets/s "
                         f"spans more time than the clock can count")
    rl.interval = interval
    rl.tolerance = (packet_burst - 1) * interval
    return 0


cpdef Py_ssize_t default_burst(double packet_rate, Py_ssize_t packet_burst) except -1:
    """packet_burst, or one second's worth of packet_rate (at least 1) for 0."""
    if packet_rate > 0 and packet_burst == 0:
        return <Py_ssize_t>min(max(ceil(packet_rate), 1.0), <double>_MAX_RATE_SPAN)
    return packet_burst


def rate_limit_admits(double packet_rate, Py_ssize_t packet_burst, reads):
    """What a session with this limit admits from `reads`, (time_ns, packets)
    pairs in time order: the number of packets delivered from each read. The
    first refused packet closes the session, so nothing is admitted after it.
    The session's own arithmetic, for tests and for sizing a limit against the
    reads of a recorded client."""
    cdef RateLimit rl
    cdef Py_ssize_t k, n
    cdef PyTime_t now
    cdef bint closed = False
    rate_init(&rl, packet_rate, packet_burst)
    out = []
    for now, n in reads:
        k = 0
        while not closed and k < n:
            if rl.interval and not rate_admit(&rl, now):
                closed = True
            else:
                k += 1
        out.append(k)
    return out


cdef class SendFlusher:
    """Writes every dirty session's queue once per event-loop iteration.

    One call_soon per iteration for all sessions of a service, not one per
    session: at 2,000 sessions that is the difference between one handle and
    2,000 handles on the loop's ready queue.
    """

    def __cinit__(self, loop, double interval_ms=0):
        if interval_ms < 0:
            raise ValueError("flush interval must be >= 0")
        self.loop = loop
        self.dirty = []
        self.spare = []
        self.interval = interval_ms / 1000.0

    def __dealloc__(self):
        gather_free(&self.gather)
        PyMem_Free(self.run_data)

    cdef int add(self, Session s) except -1:
        self.dirty.append(s)
        return self.schedule()

    cdef int schedule(self) except -1:
        cdef double due
        if not self.scheduled:
            self.scheduled = True
            if self.interval > 0:
                due = self.last_run + self.interval
                if due > self.loop.time():
                    self.loop.call_at(due, _run_flusher, self)
                    return 0
            self.loop.call_soon(_run_flusher, self)
            _due.append(self)
        return 0

    cdef int append_run(self, list targets, SendBuffer buf) except -1:
        cdef Py_ssize_t need
        cdef unsigned char* data
        if targets is not self.run_targets or self.run_size + buf.size > RUN_MAX_BYTES:
            self.close_run()
        if self.run_targets is None:
            # Open: the first packet is only referenced (a run of one is sent
            # as it is, no copy); it closes this turn at the latest.
            self.run_targets = targets
            self.run_first = buf
            self.run_size = buf.size
            self.run_frames = buf.frames
            return self.schedule()
        need = self.run_size + buf.size
        if need > self.run_cap:
            # Grown once to RUN_MAX_BYTES (a run never holds more) and kept.
            data = <unsigned char*>PyMem_Realloc(self.run_data, RUN_MAX_BYTES)
            if data == NULL:
                # No room to coalesce: send what the run holds, and this
                # buffer as a run of its own, in order; nothing is lost.
                self.close_run()
                return self.append_run(targets, buf)
            self.run_data = data
            self.run_cap = RUN_MAX_BYTES
        if self.run_first is not None:
            memcpy(self.run_data, self.run_first.data, self.run_first.size)
            self.run_first = None
        memcpy(self.run_data + self.run_size, buf.data, buf.size)
        self.run_size = need
        self.run_frames += buf.frames
        return 0

    cdef int close_run(self) except -1:
        cdef list targets = self.run_targets
        cdef SendBuffer buf
        cdef Session s
        cdef Py_ssize_t i
        if targets is None:
            return 0
        self.run_targets = None         # first: the enqueues below see no open run
        if self.run_first is not None:
            buf = self.run_first
            self.run_first = None
        else:
            buf = copy_run(self.run_data, self.run_size, self.run_frames)
            self.runs_coalesced += 1
        for i in range(PyList_GET_SIZE(targets)):
            s = <Session?>PyList_GET_ITEM(targets, i)
            if s.keep_bytes or (not s.closing and s.transport is not None):
                s.enqueue(buf)          # a held session keeps it, writes nothing
        return 0

    cdef int run(self) except -1:
        cdef list batch
        cdef Py_ssize_t i
        cdef Session s
        self.close_run()                # its packets leave in this run's writes
        batch = self.dirty
        self.scheduled = False
        self.runs += 1
        if self.interval > 0:
            self.last_run = self.loop.time()
        self.dirty = self.spare      # sessions dirtied during this run go to the next one
        for i in range(PyList_GET_SIZE(batch)):
            s = <Session>PyList_GET_ITEM(batch, i)
            try:
                s.flush()
            except Exception as exc:
                s.close(CONNECTION_ERROR, f"write failed: {exc!r}", True)
        del batch[:]
        self.spare = batch
        return 0


    cdef int shed(self) except -1:
        """The total is past the bound: abort the largest queues first until
        it is under 3/4 of the bound (see session.pxd)."""
        cdef Py_ssize_t pos = 0
        cdef PyObject* key
        cdef PyObject* value
        cdef Session s
        cdef Py_ssize_t target = self.max_pending_bytes - self.max_pending_bytes // 4
        cdef Py_ssize_t total = self.pending_bytes
        cdef list queued = []
        if self.sessions is None:
            return 0
        while PyDict_Next(self.sessions, &pos, &key, &value):
            s = <Session>value
            if s.queue.nbytes and not s.closing:
                queued.append((s.queue.nbytes, s.session_id, s))
        queued.sort(reverse=True)
        for nbytes, _, s in queued:
            if self.pending_bytes <= target:
                break
            self.shed_sessions += 1
            s.close(SLOW_CONSUMER, f"{nbytes} bytes pending, among the largest while all "
                                   f"sessions held {total} > {self.max_pending_bytes}", True)
        return 0


# Loop callbacks are module functions given the object as their argument, not
# bound methods kept on it: a bound method stored on its own object is a
# reference cycle, which only the cyclic collector frees, and a server runs
# that collector rarely (netcore.loop.tune_gc_for_serving). The handle holds
# the object only while it is scheduled.
def _run_flusher(SendFlusher flusher):
    if flusher.scheduled:           # else flush_due() ran it already
        flusher.run()


# Flushers due in this event-loop iteration (not the paced ones). A room's job
# slice writes what it produced at its end (flush_due), as a C server writes
# once its epoll batch is handled, rather than one loop iteration later, after
# another poll of every socket: a broadcast leaves in the iteration that made it.
cdef list _due = []


cpdef int flush_due() except -1:
    """Run every flusher that has sessions waiting and no pacing interval."""
    global _due
    cdef list due = _due
    cdef SendFlusher f
    if not due:
        return 0
    _due = []
    for f in due:
        if f.scheduled:
            f.run()
    return 0


def _drain_backlog(Session s):
    s.drain_backlog()


def _direct_fd(transport):
    """The descriptor a flush may write to itself: a plain TCP socket's, not
    one under TLS or anything that frames what it sends (a transport that
    frames says so in get_extra_info("framing"): netcore.websocket's)."""
    if type(transport) is TcpTransport:
        return (<TcpTransport>transport).fd
    if (transport.get_extra_info("sslcontext") is not None
            or transport.get_extra_info("framing") is not None):
        return -1
    sock = transport.get_extra_info("socket")
    if sock is None or getattr(sock, "type", None) != socket.SOCK_STREAM:
        return -1
    try:
        return sock.fileno()
    except (OSError, ValueError):
        return -1


cdef class Session:
    """A connection: lifecycle callbacks, send queue, raw byte receive.

    Subclass (in Python) and override on_connected, on_recv, on_send and
    on_disconnected. Use it as an asyncio protocol: the public classes in
    `netcore` mix in asyncio.BufferedProtocol.
    """

    def __cinit__(self):
        self.session_id = next(_session_ids)
        self.transport_kind = "tcp"
        self.rbuf = RecvBuffer.__new__(RecvBuffer)
        self.max_packet_size = MAX_WIRE_SIZE
        self.max_pending_bytes = DEFAULT_MAX_PENDING_BYTES
        self.wants_on_send = type(self).on_send is not Session.on_send
        self.fd = -1

    def __dealloc__(self):
        sq_free(&self.queue)
        sl_clear(&self.sent_log)

    cdef int configure(self, object service, SendFlusher flusher,
                       Py_ssize_t max_packet_size, Py_ssize_t max_pending_bytes,
                       double packet_rate, Py_ssize_t packet_burst) except -1:
        if max_packet_size < HEADER_SIZE or max_packet_size > MAX_WIRE_SIZE:
            raise ValueError(f"max_packet_size must be in [{HEADER_SIZE}, {MAX_WIRE_SIZE}]")
        if max_pending_bytes < 1:
            raise ValueError("max_pending_bytes must be >= 1")
        rate_init(&self.rate, packet_rate, packet_burst)
        self.service = service
        self.flusher = flusher
        self.max_packet_size = max_packet_size
        self.max_pending_bytes = max_pending_bytes
        self.packet_rate = packet_rate
        self.packet_burst = packet_burst if packet_rate > 0 else 0
        return 0

    # -- user callbacks -------------------------------------------------

    def on_connected(self):
        """The connection is made and its service admitted it: the first
        moment this session can send."""

    def on_recv(self, data):
        """Raw bytes received. Return how many were consumed; the rest is
        offered again, in front of the next bytes."""
        return len(data)

    def on_send(self, Py_ssize_t nbytes):
        """`nbytes` of queued packets were just handed to the transport (one
        call per flush). Only called when a subclass overrides it."""

    def on_disconnected(self, reason):
        """The connection is gone (called once): `reason` is a
        netcore.Disconnect, its `kind` a DisconnectReason and its `detail`
        the words for a log. Nothing can be sent any more."""

    # -- public API -------------------------------------------------------

    @property
    def peername(self):
        """The peer's address (fetched once, on first use)."""
        if self._peername is None and self.transport is not None:
            self._peername = self.transport.get_extra_info("peername")
        return self._peername

    @property
    def half_closed(self):
        """The peer has sent its FIN (it reads on; it sends nothing more)."""
        return self.eof_seen

    @property
    def connected(self):
        """The transport is open and no close has begun: send() delivers."""
        return self.transport is not None and not self.closing

    @property
    def recv_buffer_size(self):
        """Receive memory this session owns (0 when idle: reads use shared scratch)."""
        return self.rbuf.own_cap

    @property
    def pending_bytes(self):
        """Bytes queued in this session and not yet handed to the transport."""
        return self.queue.nbytes

    def send(self, SendBuffer buf not None):
        """Queue a packet; it leaves with the next flush. Dropped when closing."""
        self.enqueue(buf)

    # -- resumption (netcore.sentlog) -------------------------------------

    def keep_sent(self, Py_ssize_t max_bytes):
        """Number and keep every packet queued from now on (the first is
        number 1), at most max_bytes of them (> 0)."""
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        sl_clear(&self.sent_log)
        sl_start(&self.sent_log)
        self.keep_bytes = max_bytes
        self.held = False

    def stop_keeping(self):
        """Numbering is over: the kept packets are let go."""
        sl_clear(&self.sent_log)
        self.keep_bytes = 0
        self.held = False

    def hold(self):
        """The connection is gone, a resume may come: packets queued from
        now on are kept (nothing is written) and never dropped for room;
        past keep_bytes of them keeping stops and on_hold_overflow() runs."""
        if not self.keep_bytes:
            raise ValueError("hold() of a session that keeps nothing")
        self.held = True
        self.hold_from = self.sent_log.next

    def shut_output(self):
        """Send what is queued, then our FIN, and go on reading: the peer's
        packets are still handled until it closes its side (a worker that
        hands its players to its successor: nothing the client sent before
        it saw the FIN is lost). What is queued afterwards is numbered and
        kept as ever (keep_sent), never written. A transport that cannot
        half-close is closed instead."""
        if self.transport is None or self.closing or self.output_shut:
            return
        self.write_paused = False
        self.flush()
        if self.closing or self.transport is None:
            return
        if not self.transport.can_write_eof():
            self.close(CLOSED, "the server hands its players over", False)
            return
        self.output_shut = True
        self.transport.write_eof()

    def kept_run(self):
        """Every packet kept, oldest (number first_kept) first, as one bytes."""
        cdef SentLog* log = &self.sent_log
        cdef Py_ssize_t i
        return b"".join([bytes(sl_at(log, i)) for i in range(log.n)])

    def restore_kept(self, unsigned long long first, SendBuffer run, Py_ssize_t max_bytes):
        """A session with no connection, held, whose kept packets are `run`
        (whole packets, numbered from `first` on; None: none is kept): a
        hold carried over from a worker that restarted, for a resume to take
        over (resume_from)."""
        if self.transport is not None or first < 1 or max_bytes <= 0:
            raise ValueError("restore_kept() of a connected session, or with nothing to keep")
        sl_clear(&self.sent_log)
        self.sent_log.first = first
        self.sent_log.next = first
        if run is not None and run.size:
            sl_push(&self.sent_log, run)
        self.keep_bytes = max(max_bytes, self.sent_log.nbytes)
        self.closing = True             # nothing is ever written: there is no connection
        self.held = True
        self.hold_from = self.sent_log.next

    def on_hold_overflow(self):
        """Keeping stopped during a hold (the bound was passed): the
        owner of the hold ends it. Called soon after, from the loop."""

    @property
    def packets_numbered(self):
        """How many packets were numbered so far (0 when not keeping)."""
        return self.sent_log.next - 1 if self.sent_log.next else 0

    @property
    def first_kept(self):
        """The number of the oldest packet still kept (packets_numbered + 1
        when none is)."""
        return self.sent_log.first

    @property
    def kept_bytes(self):
        return self.sent_log.nbytes

    def resume_from(self, Session old not None, unsigned long long received):
        """Take over old's numbering and kept packets, and queue those
        numbered received + 1 onwards, in order (sent again, not numbered
        again); old keeps nothing after. The packets queued here before this
        call (S_RESUME) were not numbered. Returns how many were queued;
        ValueError when old keeps nothing, received is more than old was
        sent, or packet received + 1 is no longer kept (old is unchanged)."""
        cdef SentLog* log = &old.sent_log
        cdef SendBuffer buf
        cdef unsigned long long seq, end, want = received + 1
        cdef Py_ssize_t i, keep, skip, off
        cdef Py_ssize_t replayed = 0
        if old is self or not old.keep_bytes or not log.next:
            raise ValueError("nothing is kept for that session")
        if received > log.next - 1:
            raise ValueError(f"{received} received, but {log.next - 1} were sent")
        if want < log.first:
            raise ValueError(f"packet {want} is no longer kept (the oldest is {log.first})")
        sl_clear(&self.sent_log)
        sl_move(&self.sent_log, log)
        keep = old.keep_bytes
        old.keep_bytes = 0
        old.held = False
        self.held = False
        self.keep_bytes = 0             # the replay is not numbered again
        log = &self.sent_log
        seq = log.first
        try:
            for i in range(log.n):
                buf = sl_at(log, i)
                end = seq + <unsigned long long>buf.frames
                if end > want:
                    if seq < want:      # the entry starts with packets already read
                        skip = <Py_ssize_t>(want - seq)
                        off = 0
                        while skip:
                            off += buf.data[off] | (buf.data[off + 1] << 8)
                            skip -= 1
                        buf = copy_run(buf.data + off, buf.size - off,
                                       buf.frames - <Py_ssize_t>(want - seq))
                    self.enqueue(buf)
                    replayed += buf.frames
                seq = end
        finally:
            self.keep_bytes = keep
        return replayed

    def pause_reading(self):
        """Read nothing more from this peer until resume_reading() (a
        shutdown's first step). Packets already read are still handled; a
        backlog left by max_packets_per_read drains, but does not resume
        reading when it is done."""
        self.reading_paused = True
        if (self.transport is not None and not self.closing
                and not self.transport.is_closing()):
            self.transport.pause_reading()

    def resume_reading(self):
        """Undo pause_reading() (reading resumes once any backlog has drained)."""
        self.reading_paused = False
        if (self.transport is not None and not self.closing and not self.backlogged
                and not self.transport.is_closing()):
            self.transport.resume_reading()

    def disconnect(self, reason=CLOSED, str detail="", *, bint abort=False):
        """Close this session: queued packets are flushed first unless abort."""
        if not isinstance(reason, DisconnectReason):
            raise TypeError("reason must be a netcore.DisconnectReason")
        self.close(reason, detail, abort)

    def set_limits(self, *, max_packet_size=None, max_pending_bytes=None,
                   packet_rate=None, packet_burst=None, max_packets_per_read=None):
        """Change this session's limits (a service sets them from its own).
        A new packet rate starts from a full bucket; a burst of 0 is one
        second's worth."""
        if max_packets_per_read is not None:
            if max_packets_per_read < 0:
                raise ValueError("max_packets_per_read must be >= 0")
            self.max_packets_per_read = max_packets_per_read
        rate = self.packet_rate if packet_rate is None else packet_rate
        burst = self.packet_burst if packet_burst is None else packet_burst
        self.configure(self.service, self.flusher,
                       self.max_packet_size if max_packet_size is None else max_packet_size,
                       self.max_pending_bytes if max_pending_bytes is None else max_pending_bytes,
                       rate, default_burst(rate, burst))

    def mark_logged_in(self):
        """The login deadline is met: from now on the idle timeout applies."""
        if not self.logged_in:
            self.logged_in = True
            self.last_recv_ns = PyTime_MonotonicRaw()

    async def wait_closed(self):
        """Return once connection_lost (and so on_disconnected) has run."""
        if self.lost:
            return
        if self.closed is None:
            self.closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self.closed)

    # -- asyncio protocol -------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.fd = _direct_fd(transport)
        self.connected_ns = self.last_recv_ns = PyTime_MonotonicRaw()
        if self.flusher is None:
            self.flusher = SendFlusher(asyncio.get_running_loop())
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self.service is not None and not self.service._session_started(self):
            return
        if peer_line(log, DEBUG):
            log.debug("session %d connected from %s", self.session_id,
                      format_address(self.peername))
        self.on_connected()

    def connection_lost(self, exc):
        reason = self.close_reason
        if reason is None:
            reason = (_PEER_CLOSED_REASON if exc is None
                      else Disconnect(CONNECTION_ERROR, str(exc) or type(exc).__name__))
            self.close_reason = reason
        self.closing = True
        self.drop_queue()
        if not self.rbuf.parsing:       # else the parse in progress releases it when done
            self.rbuf.release()
        if self.linger_timer is not None:
            self.linger_timer.cancel()
            self.linger_timer = None
        level = (WARNING if reason.kind in _WARNINGS else
                 INFO if reason.kind in _REFUSALS else DEBUG)
        if peer_line(log, level):
            log.log(level, "session %d from %s disconnected: %s", self.session_id,
                    format_address(self.peername), reason)
        try:
            if self.service is not None:
                self.service._session_ended(self)
            self.on_disconnected(reason)
        finally:
            # CPython before 3.12: the selector transport keeps a bound method
            # of itself (_read_ready_cb), a reference cycle that outlives the
            # connection until a full collection; 3.12 drops it on close
            # (CPython gh-100348). It has read its last once we are told the
            # connection is lost, so drop it here as well.
            if (type(self.transport) is not TcpTransport
                    and getattr(self.transport, "_read_ready_cb", None) is not None):
                self.transport._read_ready_cb = None
            self.transport = None
            self.lost = True
            if self.closed is not None and not self.closed.done():
                self.closed.set_result(reason)

    def pause_writing(self):
        self.write_paused = True

    def resume_writing(self):
        self.write_paused = False
        if self.queue.nbytes and not self.flush_scheduled and not self.closing:
            self.flush_scheduled = True
            self.flusher.add(self)

    def on_eof(self):
        """The peer half-closed: everything it sent has been handled. Return
        True to keep the session open for sending (answers still on their way,
        e.g. from the database), then disconnect() when done; the default
        closes now, after what is queued."""
        return False

    def eof_received(self):
        # What the peer sent before its FIN has been processed (end_input).
        # False lets the transport close, which it has begun already (it
        # also ends a lingering close of ours); True: answers still to come.
        return self.end_input("") != 0

    def get_buffer(self, Py_ssize_t sizehint):
        return self.rbuf.get_buffer()

    def buffer_updated(self, Py_ssize_t nbytes):
        cdef FrameReader r
        self.rbuf.begin(nbytes, &r)
        if self.closing:
            self.rbuf.end_parse()
            self.rbuf.release()
            return
        self.consume(&r)
        if self.backlogged and not self.closing:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(_drain_backlog, self)

    cdef int drain_backlog(self) except -1:
        """Handle the next packets a capped read left behind, one cap's worth
        per loop iteration; read again once they are all handled, unless
        reading was paused meanwhile (pause_reading)."""
        cdef FrameReader r
        self.backlogged = False
        if self.closing or self.transport is None:
            return 0
        self.rbuf.resume(&r)
        self.consume(&r)
        if self.closing:
            return 0
        if self.backlogged:
            asyncio.get_running_loop().call_soon(_drain_backlog, self)
        elif self.deferred_end is not None:
            # The peer ended behind the backlog (peer_ended): now, in order.
            detail, self.deferred_end = self.deferred_end, None
            self.end_input(detail)
        elif not self.reading_paused:
            self.transport.resume_reading()
        return 0

    cdef int consume(self, FrameReader* r) except -1:
        """Parse what r holds, then keep its unparsed tail for later, or drop
        everything when parsing closed the session."""
        cdef Py_ssize_t partial
        try:
            partial = self.process(r)
            if self.closing:
                self.rbuf.release()
            else:
                self.rbuf.keep_tail(r, partial)
        finally:
            self.rbuf.end_parse()
        return 0

    # -- C level ----------------------------------------------------------

    cdef Py_ssize_t process(self, FrameReader* r) except -1:
        """Consume what it can of r; return the size of the partial packet
        left over when known, else 0."""
        cdef Py_ssize_t consumed
        consumed = self.on_recv(PyBytes_FromStringAndSize(<char*>r.buf + r.pos, r.len - r.pos))
        if consumed < 0 or consumed > r.len - r.pos:
            raise ValueError(f"on_recv returned {consumed} of {r.len - r.pos} bytes")
        if consumed:
            self.last_recv_ns = PyTime_MonotonicRaw()
        r.pos += consumed
        if r.len - r.pos > self.max_packet_size:
            self.close(PROTOCOL_ERROR,
                       f"{r.len - r.pos} unconsumed bytes > maximum {self.max_packet_size}", True)
        return 0

    cdef int enqueue(self, SendBuffer buf) except -1:
        if buf.is_open:
            raise ValueError("send buffer is still open: commit() it before sending")
        if self.flusher is not None and self.flusher.run_targets is not None:
            self.flusher.close_run()     # what was broadcast before goes first
        if self.keep_bytes:
            self.keep(buf)
        if self.closing or self.output_shut:
            return 0
        if self.transport is None:
            raise ConnectionError("session is not connected")
        sq_push(&self.queue, buf)
        self.flusher.pending_bytes += buf.size
        if self.stats is not None and buf.size >= HEADER_SIZE:
            if buf.frames <= 1:
                self.stats.count_out(buf.data[2] | (buf.data[3] << 8), buf.size)
            else:
                self.stats.count_out_run(buf.data, buf.size)
        if self.queue.nbytes > self.max_pending_bytes:
            self.close(SLOW_CONSUMER,
                       f"{self.queue.nbytes} bytes pending > {self.max_pending_bytes}", True)
            return 0
        if self.flusher.max_pending_bytes and \
                self.flusher.pending_bytes > self.flusher.max_pending_bytes:
            self.flusher.shed()
            if self.closing:
                return 0
        if not self.flush_scheduled and not self.write_paused:
            self.flush_scheduled = True
            self.flusher.add(self)
        return 0

    cdef int keep(self, SendBuffer buf) except -1:
        cdef SentLog* log = &self.sent_log
        sl_push(log, buf)
        if log.nbytes <= self.keep_bytes:
            return 0
        if not self.held:
            while log.nbytes > self.keep_bytes and log.n:
                sl_drop_oldest(log)      # live: the client has almost surely read it
            return 0
        while log.nbytes > self.keep_bytes and log.n and log.first < self.hold_from:
            sl_drop_oldest(log)          # from before the hold
        if log.nbytes > self.keep_bytes:
            # What was sent during the hold alone is past the bound: the
            # hold is over (its owner takes the player out).
            sl_clear(log)
            self.keep_bytes = 0
            asyncio.get_running_loop().call_soon(self.on_hold_overflow)
        return 0

    cdef void drop_queue(self) noexcept:
        if self.flusher is not None:
            self.flusher.pending_bytes -= self.queue.nbytes
        sq_clear(&self.queue)

    cdef int flush(self) except -1:
        cdef Py_ssize_t n = self.queue.n
        cdef Py_ssize_t total = self.queue.nbytes, written = -1
        self.flush_scheduled = False
        if n == 0 or self.write_paused or self.transport is None:
            return 0
        try:
            # The direct path (as picows does): the kernel usually takes it
            # all, and then there is no joined copy and no transport call at
            # all. Only while the transport holds nothing, or bytes would
            # overtake its own.
            if self.fd >= 0 and not self.closing:
                # Asking the transport costs a Python call: only after we
                # handed it bytes, until it says it has written them all.
                if self.transport_holds and self.transport.get_write_buffer_size() == 0:
                    self.transport_holds = False
                if not self.transport_holds:
                    written = sq_write_to(&self.queue, self.fd, &self.flusher.gather)
            if written == total:
                sq_clear(&self.queue)
                self.direct_writes += 1
            else:
                self.transport_holds = True
                if written > 0:
                    self.transport.write(sq_take_joined_after(&self.queue, written))
                else:
                    self.transport.write(sq_take_joined(&self.queue))
        finally:
            # What left the queue leaves the server-wide total, also when
            # the transport's write raised after the queue was emptied: a
            # total that drifted up would cut off sessions holding nothing.
            self.flusher.pending_bytes -= total - self.queue.nbytes
        self.writes += 1
        self.packets_sent += n
        self.bytes_sent += total
        if self.wants_on_send:
            self.on_send(total)
        return 0

    cdef int close(self, object kind, str detail, bint abort) except -1:
        if self.flusher is not None and self.flusher.run_targets is not None:
            self.flusher.close_run()     # broadcasts made before the close reach it
        if self.closing:
            if abort and not self.aborted and self.transport is not None:
                # A graceful close that is taking too long (the peer neither
                # reads nor closes): cut it short, and say so.
                self.close_reason = Disconnect(kind, detail)
                self.aborted = True
                self.drop_queue()
                self.transport.abort()
            return 0
        self.closing = True
        self.close_reason = (_PEER_CLOSED_REASON if kind is PEER_CLOSED and not detail
                             else Disconnect(kind, detail))
        if self.transport is None:
            return 0
        if kind in _PEER_FAULTS:
            self.peername           # fetched while the socket is open: the log names the peer
        if abort:
            self.aborted = True
            self.drop_queue()
            self.transport.abort()
            return 0
        try:
            # A final flush even while paused: bounded by max_pending_bytes.
            self.write_paused = False
            self.flush()
            if self.transport.can_write_eof() and not self.eof_seen:
                self.transport.write_eof()
                self.transport.resume_reading()
                self.arm_linger()
            else:
                # The peer half-closed already (or the transport cannot):
                # close once what is buffered is sent, which a peer that
                # reads nothing would put off for ever without the deadline.
                self.transport.close()
                if not (type(self.transport) is TcpTransport
                        and (<TcpTransport>self.transport).lost_scheduled):
                    self.arm_linger()
        except RuntimeError:
            # uvloop closes the transport of a cancelled create_connection
            # itself (is_closing() still False) and refuses every later call
            # on it; its connection_lost, which ends this session, follows.
            self.drop_queue()
        return 0

    cdef int arm_linger(self) except -1:
        if self.linger_timer is None and self.transport is not None:
            self.linger_timer = asyncio.get_running_loop().call_later(
                LINGER_MS / 1000.0, self.transport.abort)
        return 0

    cdef int end_input(self, str detail) except -1:
        """The peer sends nothing more (TCP's FIN, a WebSocket close frame):
        what it sent before has been handled. Deliver what is queued for it,
        then close gracefully, with the linger deadline, unless the session
        has answers still to come (on_eof). 1 when it stays open."""
        self.eof_seen = True
        self.flush()
        if self.closing:
            return 0
        if self.on_eof():
            return 1
        self.close(PEER_CLOSED, detail, False)
        return 0

    cdef int peer_ended(self, str detail) except -1:
        if self.backlogged and not self.closing:
            if self.deferred_end is None:
                self.deferred_end = detail
            return 1
        return self.end_input(detail)

    cdef int admit_frame(self) except -1:
        if self.rate.interval and not rate_admit(&self.rate, PyTime_MonotonicRaw()):
            self.close(RATE_LIMITED, f"more than {self.packet_rate:g} packets/s "
                                     f"(burst {self.packet_burst})", True)
            return 0
        return 1


cdef class PacketSession(Session):
    """A Session speaking the 4-byte-header protocol.

    Override on_recv_packet(pkt_id, payload). A ProtocolError raised from it
    closes the session as a protocol error; any other exception is logged with
    its traceback and closes the session as a handler error. Either way only
    this session is affected.
    """

    def on_recv_packet(self, unsigned int pkt_id, bytes payload):
        """One whole packet, in the order the peer sent them: the header's
        id and the payload (bytes this session may keep)."""

    cdef Py_ssize_t process(self, FrameReader* r) except -1:
        cdef FrameHeader h
        cdef FrameStatus st
        cdef const unsigned char* p
        cdef PyTime_t now = PyTime_MonotonicRaw()
        cdef unsigned long long before = self.packets_received
        cdef Py_ssize_t partial = 0
        cdef Py_ssize_t budget = self.max_packets_per_read
        while not self.closing:
            st = frame_next(r, self.max_packet_size, &h)
            if st == FRAME_OK:
                if budget and self.packets_received - before >= <unsigned long long>budget:
                    self.backlogged = True      # the rest waits for the next iteration
                    break
                if self.rate.interval and not rate_admit(&self.rate, now):
                    self.close(RATE_LIMITED, f"more than {self.packet_rate:g} packets/s "
                                             f"(burst {self.packet_burst})", True)
                    break
                p = r.buf + r.pos
                r.pos += h.size
                self.packets_received += 1
                if self.stats is not None:
                    self.stats.count_in(h.pkt_id, h.size)
                self.deliver(h.pkt_id, p + HEADER_SIZE, h.size - HEADER_SIZE)
            elif st == FRAME_PARTIAL:
                if r.len - r.pos >= HEADER_SIZE:
                    partial = h.size
                break
            else:
                self.close(PROTOCOL_ERROR, header_error(h.size, self.max_packet_size), True)
        if self.packets_received != before:
            self.last_recv_ns = now
        return partial

    cdef int deliver(self, unsigned int pkt_id, const unsigned char* payload,
                     Py_ssize_t size) except -1:
        try:
            self.on_recv_packet(pkt_id, PyBytes_FromStringAndSize(<char*>payload, size))
        except ProtocolError as exc:
            self.close(PROTOCOL_ERROR, str(exc), True)
        except Exception as exc:
            if peer_line(log, logging.ERROR):
                log.exception("session %d: handler for packet %d raised", self.session_id, pkt_id)
            self.close(HANDLER_ERROR, f"packet {pkt_id}: {exc!r}", True)
        return 0


cpdef Py_ssize_t send_to_all_coalesced(list sessions, SendBuffer buf) except -1:
    """Queue one buffer to every session of a list, coalesced with the
    buffers broadcast to the same list right after it: each session gets one
    queue entry for the whole run (see SendFlusher in session.pxd). Every
    session of the list must share one flusher (one service), and the list
    must not be changed in place until the loop turn ends (replace it)."""
    cdef Session first
    if buf.is_open:
        raise ValueError("send buffer is still open: commit() it before sending")
    if not sessions:
        return 0
    first = <Session?>sessions[0]
    if first.flusher is None:
        return send_to_all(sessions, buf)       # not started yet: nothing to coalesce with
    first.flusher.append_run(sessions, buf)
    return PyList_GET_SIZE(sessions)


cpdef Py_ssize_t send_to_all(object sessions, SendBuffer buf) except -1:
    """Queue one buffer to every session of a list (or any iterable): the
    fan-out primitive. A C loop, no Python call per recipient."""
    cdef Py_ssize_t i, n
    cdef list seq
    if type(sessions) is list:
        seq = <list>sessions
    else:
        seq = list(sessions)
    n = PyList_GET_SIZE(seq)
    for i in range(n):
        (<Session?>PyList_GET_ITEM(seq, i)).enqueue(buf)
    return n
