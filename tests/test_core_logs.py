"""netcore.logs: one budget for lines about single peers, writes off the loop."""
import logging
import threading
import time

import pytest

from netcore import logs
from netcore.logs import (
    PeerLineLimiter, format_address, peer_line, start_queued_logging,
)


@pytest.fixture
def budget():
    """The process's peer-line budget, restored after the test."""
    saved = (logs.PEER_LINES.rate, logs.PEER_LINES.burst)
    yield logs.PEER_LINES
    logs.configure_peer_lines(*saved)


def test_the_limiter_lets_a_burst_through_then_counts_what_it_suppresses():
    # One line per 1,000 s: nothing refills while the test runs.
    limiter = PeerLineLimiter(rate=0.001, burst=5)
    allowed = [limiter.allow() for _ in range(1000)]
    assert allowed == [True] * 5 + [False] * 995
    assert limiter.suppressed == 995


def test_the_limiter_refills_at_its_rate():
    limiter = PeerLineLimiter(rate=50, burst=1)
    assert limiter.allow() and not limiter.allow()
    deadline = time.monotonic() + 5
    while not limiter.allow():          # back after 1/50 s, not never
        assert time.monotonic() < deadline
    assert limiter.suppressed >= 1


def test_rate_zero_is_no_limit_and_bad_settings_are_refused():
    limiter = PeerLineLimiter(rate=0)
    assert all(limiter.allow() for _ in range(100_000)) and limiter.suppressed == 0
    with pytest.raises(ValueError, match="peer log rate must be >= 0"):
        PeerLineLimiter(rate=-1)
    with pytest.raises(ValueError, match="peer log rate must be >= 0"):
        PeerLineLimiter(rate=float("nan"))
    with pytest.raises(ValueError, match="peer log burst must be >= 1"):
        PeerLineLimiter(rate=1, burst=0)


def test_a_level_that_is_off_takes_nothing_from_the_budget(budget):
    logs.configure_peer_lines(0.001, 2)
    quiet = logging.getLogger("test.quiet")
    quiet.setLevel(logging.WARNING)
    assert not any(peer_line(quiet, logging.DEBUG) for _ in range(100))
    assert budget.suppressed == 0
    assert [peer_line(quiet, logging.WARNING) for _ in range(3)] == [True, True, False]
    assert budget.suppressed == 1


@pytest.mark.parametrize("peer, text", [
    (("127.0.0.1", 5555), "127.0.0.1:5555"),
    (("::1", 7777, 0, 0), "[::1]:7777"),
    (None, "unknown"),
    ("/tmp/sock", "/tmp/sock"),
])
def test_addresses_print_as_host_and_port(peer, text):
    assert format_address(peer) == text


class StuckStream:
    """A stream whose write blocks until released: a pipe nobody reads. A
    watchdog releases it after 20 s, so that a caller it blocks fails the
    test (watchdog_fired) instead of hanging it."""

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.lines = []
        self.watchdog_fired = False
        self._watchdog = threading.Timer(20, self._fire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _fire(self):
        self.watchdog_fired = True
        self.release.set()

    def cancel_watchdog(self):
        self._watchdog.cancel()

    def write(self, text):
        self.entered.set()
        self.release.wait()
        self.lines.append(text)

    def flush(self):
        pass


def test_logging_to_a_stuck_stream_never_blocks_the_caller_and_drops_past_its_queue():
    stream = StuckStream()
    logger = logging.getLogger("test.stuck")
    logger.propagate = False
    queued = start_queued_logging(logging.INFO, "%(message)s", stream, queue_size=10,
                                  logger=logger)
    try:
        logger.info("first")
        assert stream.entered.wait(5)       # the writer thread holds "first" in write()
        for i in range(1000):
            logger.info("line %d", i)
        assert not stream.watchdog_fired, "the caller waited for the stream"
        assert queued.dropped == 1000 - 10
    finally:
        stream.cancel_watchdog()
        stream.release.set()
        queued.stop()
        logger.propagate = True
    assert [s.strip() for s in stream.lines] == ["first"] + [f"line {i}" for i in range(10)]


def test_stopping_gives_up_on_a_stream_stuck_for_good():
    stream = StuckStream()
    logger = logging.getLogger("test.stuck-for-good")
    logger.propagate = False
    queued = start_queued_logging(logging.INFO, "%(message)s", stream, queue_size=2,
                                  logger=logger)
    logger.info("held")
    assert stream.entered.wait(5)
    for i in range(5):
        logger.info("line %d", i)               # the queue is full: its sentinel cannot go in
    queued.stop(timeout=0.2)
    assert not stream.watchdog_fired, "stop() waited for the stream"
    stream.cancel_watchdog()
    assert logger.handlers == []
    stream.release.set()
    logger.propagate = True
