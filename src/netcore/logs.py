"""Logging for a server on an event loop: lines about single peers are rate
limited, and nothing is written to a file or a pipe from the loop's thread.

One budget for the whole process. Every line that is about one client (it
connected, it was refused, it was cut off) asks `peer_line(logger, level)`
first; past `rate` lines a second (bursts of `burst`) the line is not made
at all, only counted in `PEER_LINES.suppressed`, which the server reports in
its periodic summary and its metrics. So a client that provokes a line per
packet costs the loop one clock read and a compare per packet, not a log
record, and the log grows by at most `rate` lines a second whatever the
clients do. Counters, not lines, say how many: the refusals and disconnects
are counted in full elsewhere.

`start_queued_logging` moves the writing itself to a thread (stdlib
QueueHandler + QueueListener): a log on a slow disk, or a stderr pipe that
nobody reads, blocks that thread, never the loop. Its queue is bounded; when
the writer cannot keep up, records are dropped and counted (`dropped`)
instead of piling up in memory.
"""
from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import time
import typing

DEFAULT_PEER_LINE_RATE = 20.0           # lines per second about single peers
BURST_SECONDS = 10.0                    # a burst of this many seconds' worth
DEFAULT_QUEUE_SIZE = 10_000             # records waiting for the writer thread


class PeerLineLimiter:
    """A token bucket of log lines (GCRA: one float, no timer)."""

    __slots__ = ("rate", "burst", "_interval", "_tolerance", "_tat", "suppressed")

    def __init__(self, rate: float = DEFAULT_PEER_LINE_RATE, burst: int | None = None):
        self.suppressed = 0
        self.configure(rate, burst)

    def configure(self, rate: float, burst: int | None = None) -> None:
        """rate lines/s (0: no limit), in bursts of `burst` (default: BURST_SECONDS' worth)."""
        if not rate >= 0:
            raise ValueError(f"peer log rate must be >= 0, not {rate}")
        if burst is None:
            burst = max(1, round(rate * BURST_SECONDS))
        if burst < 1:
            raise ValueError(f"peer log burst must be >= 1, not {burst}")
        self.rate, self.burst = rate, burst
        self._interval = 1.0 / rate if rate else 0.0
        self._tolerance = (burst - 1) * self._interval
        self._tat = 0.0

    def allow(self) -> bool:
        """Take one line from the budget; False (and counted) when it is spent."""
        if not self._interval:
            return True
        now = time.monotonic()
        tat = self._tat if self._tat > now else now
        if tat - now > self._tolerance:
            self.suppressed += 1
            return False
        self._tat = tat + self._interval
        return True


PEER_LINES = PeerLineLimiter()


def configure_peer_lines(rate: float, burst: int | None = None) -> None:
    """Set the process's budget for lines about single peers."""
    PEER_LINES.configure(rate, burst)


def peer_line(logger: logging.Logger, level: int) -> bool:
    """Whether to log a line about one peer now: its level is enabled and the
    process's budget has room. Call it before building the line's arguments."""
    return logger.isEnabledFor(level) and PEER_LINES.allow()


def format_address(peername) -> str:
    """host:port ([host]:port for IPv6), as an operator reads and greps it."""
    if not peername:
        return "unknown"
    if isinstance(peername, (tuple, list)) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        if ":" in str(host):
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    return str(peername)


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler whose queue is bounded: a record that finds it full is
    dropped and counted, never waited for."""

    def __init__(self, q: queue.Queue):
        super().__init__(q)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _Listener(logging.handlers.QueueListener):
    def stop(self, timeout: float = 5.0) -> None:
        # The stdlib's stop() puts its sentinel with put_nowait (an error on a
        # full queue) and joins without a limit (forever, on a stderr nobody
        # reads). The writer is a daemon thread: past the timeout the process
        # may exit without the last records.
        if self._thread is None:
            return
        bounded = typing.cast(queue.Queue, self.queue)
        try:
            # _sentinel: the stdlib's own end marker, absent from its type stubs.
            bounded.put(self._sentinel, timeout=timeout)  # type: ignore[attr-defined]
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None


_active: "QueuedLogging | None" = None


def dropped_records() -> int:
    """Records the queued logging of this process has dropped so far (0 without it)."""
    return _active.dropped if _active is not None else 0


class QueuedLogging:
    """The root logger's handler and its writer thread; stop() flushes and ends it."""

    def __init__(self, handler: DroppingQueueHandler, listener: _Listener,
                 logger: logging.Logger):
        self.handler = handler
        self.listener = listener
        self.logger = logger

    @property
    def dropped(self) -> int:
        return self.handler.dropped

    def stop(self, timeout: float = 5.0) -> None:
        global _active
        if self.handler in self.logger.handlers:
            self.logger.removeHandler(self.handler)
        self.listener.stop(timeout)     # writes what is queued, then joins the thread
        if _active is self:
            _active = None


def start_queued_logging(level: int | str, fmt: str, stream=None,
                         queue_size: int = DEFAULT_QUEUE_SIZE,
                         logger: logging.Logger | None = None) -> QueuedLogging:
    """Log to `stream` (stderr) from a thread of its own: `logger` (the root
    logger) gets a DroppingQueueHandler in place of its handlers."""
    target = logging.StreamHandler(sys.stderr if stream is None else stream)
    target.setFormatter(logging.Formatter(fmt))
    q: queue.Queue = queue.Queue(maxsize=queue_size)
    handler = DroppingQueueHandler(q)
    logger = logging.getLogger() if logger is None else logger
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.addHandler(handler)
    logger.setLevel(level)
    listener = _Listener(q, target, respect_handler_level=False)
    listener.start()
    global _active
    _active = QueuedLogging(handler, listener, logger)
    return _active
