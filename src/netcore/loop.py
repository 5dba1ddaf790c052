"""Event loop choice: uvloop where installed, stdlib asyncio always available.

The choice is, in order: the explicit argument, the NETCORE_LOOP environment
variable (``uvloop`` or ``asyncio``), then uvloop if it imports, else asyncio.
"""
from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import threading
import time
from typing import Any, Coroutine

LOOP_ENV = "NETCORE_LOOP"
# Descriptors a server needs besides one per session: listening sockets (a
# group of 16 per address), epoll sets, the database and its journal per
# worker thread, logs, a refused connection or two.
DESCRIPTOR_HEADROOM = 64
LOOP_KINDS = ("uvloop", "asyncio")


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_loop_kind(kind: str | None = None) -> str:
    kind = kind or os.environ.get(LOOP_ENV) or ("uvloop" if uvloop_available() else "asyncio")
    if kind not in LOOP_KINDS:
        raise ValueError(f"unknown event loop {kind!r}: choose one of {', '.join(LOOP_KINDS)}")
    if kind == "uvloop" and not uvloop_available():
        raise RuntimeError("uvloop was asked for but is not installed (pip install uvloop)")
    return kind


def new_event_loop(kind: str | None = None) -> asyncio.AbstractEventLoop:
    if resolve_loop_kind(kind) == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def wait_for(aw, timeout: float | None):
    """asyncio.wait_for, without its race before Python 3.12 (gh-86296): when
    the awaited thing finished in the same iteration as the caller was
    cancelled, wait_for returned its result and the cancellation was lost, so
    a Ctrl-C that landed as a connection completed was ignored. asyncio.wait
    never swallows the caller's cancellation."""
    if sys.version_info >= (3, 12):
        return await asyncio.wait_for(aw, timeout)
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        raise asyncio.TimeoutError
    return task.result()


def run(main: Coroutine[Any, Any, Any], kind: str | None = None) -> Any:
    """asyncio.run on the chosen loop, with the Ctrl-C handling a command needs.

    Ctrl-C (SIGINT, where nothing else handles it) cancels `main` and waits for
    it to unwind (its `finally` and `async with` blocks run, so sessions and
    files close), then raises KeyboardInterrupt from run(): a command catches
    that and exits 130, with no traceback. A Ctrl-C that comes before `main`
    has started cancels it as it starts; a second Ctrl-C interrupts at once.
    """
    task = None
    interrupted = False

    def on_sigint(signum, frame):
        nonlocal interrupted
        if interrupted:
            raise KeyboardInterrupt
        interrupted = True
        if task is not None:
            task.get_loop().call_soon_threadsafe(task.cancel)

    # Installed first, so that no Ctrl-C lands between creating the loop and
    # the try that closes it.
    handle_sigint = (threading.current_thread() is threading.main_thread()
                     and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if handle_sigint:
        signal.signal(signal.SIGINT, on_sigint)
    loop = None
    try:
        loop = new_event_loop(kind)
        asyncio.set_event_loop(loop)
        task = loop.create_task(main)
        if interrupted:
            task.cancel()
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
    finally:
        if handle_sigint and signal.getsignal(signal.SIGINT) is on_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if loop is None:
            getattr(main, "close", lambda: None)()      # never started: no "never awaited" warning
        else:
            try:
                _cancel_all_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def tune_gc_for_serving(young_threshold: int = 50_000) -> None:
    """Call once start-up is done, in a long-running server or load generator.

    What start-up allocated lives as long as the process: freeze it out of
    every collection. And collect the young generation far less often: a
    login storm allocates sessions by the thousand, all freed by reference
    counting, and the default threshold of 700 made the collector a quarter
    of a storm's CPU time. That is only sound because netcore leaves no
    reference cycle behind a connection, a room or a timer (loop callbacks
    are module functions given their object, never bound methods kept on
    it): tests/test_game_lifecycle.py churns with the collector off and
    fails if the live-object count grows.
    """
    gc.freeze()
    gc.set_threshold(young_threshold, 20, 20)


def raise_open_files_limit(want: int) -> int | None:
    """Raise this process's soft limit on open files to `want` if it is lower,
    as far as the hard limit allows; return the soft limit now in force, or
    None when it is unlimited or the platform has none (Windows).

    Every connection is a descriptor, and the usual default of 1024 would
    otherwise cap a server at about a thousand clients, whatever its
    max_sessions says.
    """
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):      # macOS caps the soft limit below "unlimited"
            pass
    return soft


def reserve_descriptors(count: int) -> int:
    """Grow this process's descriptor table now to hold descriptors up to
    `count` (no further than the open-files soft limit); return how many it
    holds for certain (0 where the platform has no such table: Windows).

    Linux grows the table by doubling when a new descriptor does not fit,
    and in a process with more than one thread (a database's thread pool, a
    logging thread) the call that crossed the size waits out an RCU grace
    period before it returns (expand_files -> synchronize_rcu): an accept4()
    sleeps 10-30 ms with the event loop inside it, at 64, 128, ... 16,384
    descriptors. That was about 150 ms of stalls in the first login storm
    after start-up (10,000 clients: 32,000 logins/s against 48,000 for the
    same server once its table had grown; benchmarks/README.md). Asking once,
    at start-up, for a descriptor at the top makes the table its final size
    before any client waits on it. F_DUPFD takes the lowest free number at or
    above the one asked for, so no open descriptor is ever replaced.
    """
    try:
        import fcntl
        import resource
    except ImportError:
        return 0
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        count = min(count, soft)
    if count < 1:
        return 0
    fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.close(fcntl.fcntl(fd, getattr(fcntl, "F_DUPFD_CLOEXEC", fcntl.F_DUPFD), count - 1))
    except OSError:
        # Every number from count - 1 up is taken, or past a system-wide cap
        # (fs.nr_open): the table is as large as it can get already.
        pass
    finally:
        os.close(fd)
    return count


class LagMonitor:
    """Measures how late the event loop runs a heartbeat callback.

    Every `interval` seconds a callback is due; how late it actually runs is
    the time the loop spent on other work: the latency every client sees on
    top of the network. Each lag goes into `histogram` (a LatencyHistogram,
    when given); take_max() returns the worst since its last call; last_beat
    (time.monotonic()) says, from any thread, whether the loop still runs.
    """

    def __init__(self, interval: float = 0.1, histogram=None):
        self.interval = interval
        self.histogram = histogram
        self.max_lag = 0.0
        self.last_beat = time.monotonic()
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.last_beat = time.monotonic()
        self._due = loop.time() + self.interval
        self._handle = loop.call_at(self._due, self._beat, loop)

    def _beat(self, loop) -> None:
        now = loop.time()
        lag = max(now - self._due, 0.0)
        self.max_lag = max(self.max_lag, lag)
        if self.histogram is not None:
            self.histogram.observe(lag)
        self.last_beat = time.monotonic()
        self._due = now + self.interval
        self._handle = loop.call_at(self._due, self._beat, loop)

    def seconds_since_beat(self) -> float:
        return time.monotonic() - self.last_beat

    def take_max(self) -> float:
        lag, self.max_lag = self.max_lag, 0.0
        return lag

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
