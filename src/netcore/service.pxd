# Services own sessions: ServerService accepts them, ClientService dials them
# (the DummyClient's side). Both keep a registry, apply the limits every
# session of theirs runs with, and share one SendFlusher so that all their
# sessions flush in a single callback per event-loop iteration.

from netcore.session cimport SendFlusher

cdef enum:
    DEFAULT_MAX_SESSIONS = 20000


cdef class Service:
    cdef readonly dict sessions             # session_id -> Session
    cdef readonly object session_factory
    cdef readonly Py_ssize_t max_sessions
    cdef readonly Py_ssize_t max_packet_size
    cdef readonly Py_ssize_t max_pending_bytes
    cdef readonly unsigned long long rejected
    cdef readonly double flush_interval_ms
    cdef SendFlusher flusher
    cdef object new_session(self)


cdef class ServerService(Service):
    cdef readonly str host
    cdef readonly int port
    cdef readonly int backlog
    cdef object server


cdef class ClientService(Service):
    cdef readonly str host
    cdef readonly int port
    cdef readonly Py_ssize_t count
    cdef readonly Py_ssize_t connect_concurrency
    cdef readonly list failures
