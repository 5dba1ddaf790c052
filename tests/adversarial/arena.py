"""The arena: one real netcore-server, a group of normal players chatting in
room 0 (bystanders.py, a process of its own), and the checks every
adversarial case ends with.

A case is the window between two bystander checks. Its offender runs in this
(the test) process; then `Case.finish()`:
  1. the server process is still alive;
  2. a fresh client connects, logs in, enters a room of its own, chats and
     hears its chat: the server still serves newcomers. This round trip is
     also the fence: the server has handled everything the offender sent
     before it answers, so once the fresh client's own disconnect is in the
     log (written in order by the server's log thread), the log says what
     became of the offender;
  3. the bystanders close their window: every chat any of them sent reached
     every one of them exactly once and in per-sender order (no loss, no
     duplicate, no gap), none of them was disconnected or got a packet that
     does not parse or should not come, their p99 latency
     stayed under LATENCY_P99_MS (scaled by the CPU share the machine gave
     the server and the bystanders, see cpu_share), and the only chats from
     anybody else are exactly the ones the case declared (each once at every
     bystander);
  4. the server's RSS (VmRSS, sampled every 10 ms through the case) peaked
     less than RSS_GROWTH_MIB above where it started, and the server's log
     of the case has no traceback.
A case's coroutine calls `await case.finish()` itself, so that its
offenders are still connected (or not) exactly as the case left them; the
test then asks the log, as finish() read it, what became of them.
"""
from __future__ import annotations

import asyncio
import collections
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import netcore
from netcore import ClientService
from netcore_packets import Protocol_pb2 as pb

from game_support import GameClient, ServerProcess, connect

HERE = Path(__file__).parent
LATENCY_P99_MS = 500.0
RSS_GROWTH_MIB = 50
# The suite runs on the sanitizer build (tools/sanitize.sh sets it).
SANITIZED = os.environ.get("NETCORE_SANITIZED") == "1"
BYSTANDERS = 20
BYSTANDER_RATE = 10.0           # chats per bystander per second
BYSTANDER_SIZE = 64             # bytes per chat
FRESH_ROOM_BASE = 50_000        # the fresh client of case k chats alone in room base + k


# The cases read what became of each offender from the server's log: every
# connect and disconnect (DEBUG) and every refusal, none suppressed. A module's
# SERVER_ARGS come after these and may override them.
BASE_SERVER_ARGS = ("--log-level", "DEBUG", "--peer-log-rate", "0")


def connected_lines(log: str) -> list[tuple[int, str]]:
    """(session id, "host:port") of every "connected from" line."""
    return [(int(sid), addr) for sid, addr in
            re.findall(r"netcore\.session: session (\d+) connected from (\S+)", log)]


def ended_lines(log: str) -> list[tuple[int, str, str]]:
    """(session id, "host:port", reason) of every disconnect line (one per session)."""
    return [(int(sid), addr, why) for sid, addr, why in
            re.findall(r"netcore\.session: session (\d+) from (\S+) disconnected: (.*)", log)]


def _last_value(args, flag):
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag][-1]


class Arena:
    def __init__(self, tmp_path: Path, loop_kind: str, *server_args: str):
        self.loop_kind = loop_kind
        args = (*BASE_SERVER_ARGS, *server_args)
        self.server = ServerProcess(tmp_path, loop_kind, *args)
        # Whether the log has a line for every connect and disconnect: then
        # the fresh client's disconnect line is a fence for the log too.
        self.logs_every_line = (_last_value(args, "--log-level") == "DEBUG"
                                and float(_last_value(args, "--peer-log-rate")) == 0)
        self.bystanders = None
        self.player_ids: list[int] = []
        self.cases = 0
        self._lines: queue.Queue = queue.Queue()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> "Arena":
        self.server.start()
        self.bystanders = subprocess.Popen(
            [sys.executable, str(HERE / "bystanders.py"), "--port", str(self.server.port),
             "--clients", str(BYSTANDERS), "--rate", str(BYSTANDER_RATE),
             "--size", str(BYSTANDER_SIZE), "--loop", self.loop_kind],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read_lines, daemon=True).start()
        ready = self._answer(60)
        assert ready.get("ready"), ready
        self.player_ids = ready["player_ids"]
        return self

    def _read_lines(self):
        for line in self.bystanders.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _answer(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"bystanders did not answer within {timeout} s") from None
        assert line is not None, f"bystanders exited with {self.bystanders.wait()}"
        return json.loads(line)

    def command(self, line: str, timeout: float = 60) -> dict:
        self.bystanders.stdin.write(line + "\n")
        self.bystanders.stdin.flush()
        return self._answer(timeout)

    def stop(self) -> int:
        """Stop the bystanders, then the server (SIGTERM); the server's exit code."""
        if self.bystanders is not None and self.bystanders.poll() is None:
            try:
                self.bystanders.stdin.write("quit\n")
                self.bystanders.stdin.flush()
                self.bystanders.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.bystanders.kill()
                self.bystanders.wait()
        if self.server.proc is None:
            return 0
        return self.server.stop()          # SIGTERM unless it has exited already

    # -- the server seen from outside -------------------------------------------

    @property
    def pid(self) -> int:
        return self.server.proc.pid

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def sched(self) -> list[tuple[int, int, int]]:
        """(ns on a CPU, ns ready but waiting for one, times run) of the
        server's and the bystanders' event-loop threads."""
        return [_schedstat(pid) for pid in (self.pid, self.bystanders.pid)]

    def log_bytes(self) -> int:
        return self.server.log_path.stat().st_size

    def run(self, coro, timeout: float = 60):
        """Run a coroutine of the test side (the offender) on a fresh loop."""
        return netcore.run(asyncio.wait_for(coro, timeout), self.loop_kind)

    def case(self) -> "Case":
        self.cases += 1
        return Case(self, self.cases)


# A wake-up waits some microseconds for its CPU even on an idle machine
# (57 us each, measured here with other work on the other core): that much
# per wake-up is latency the server can live with, not a sign of load.
WAKEUP_WAIT_NS = 200_000


def _schedstat(pid: int) -> tuple[int, int, int]:
    """Linux's scheduler statistics of a process's main thread: ns on a CPU,
    ns runnable but waiting for one, and how many times it ran ((0, 0, 0)
    where absent)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            ran, waited, runs = f.read().split()[:3]
        return int(ran), int(waited), int(runs)
    except (OSError, ValueError):
        return 0, 0, 0


def cpu_share(before: list[tuple[int, int, int]], after: list[tuple[int, int, int]]) -> float:
    """The smallest share, over the server and the bystanders, of the time
    each was ready to run that it actually ran during the window, beyond an
    ordinary wake-up's wait. A machine loaded by other work (or by the
    offender, on the same cores) runs them for a fraction of that time, and
    everything they do takes that much longer in wall-clock time: the
    latency bound is scaled by 1 / share, so it holds the server to what it
    causes, not to what the machine allows. 1.0 on an idle machine, and
    wherever the statistics are missing."""
    shares = []
    for (ran0, waited0, runs0), (ran1, waited1, runs1) in zip(before, after):
        ran = ran1 - ran0
        waited = max(0, (waited1 - waited0) - (runs1 - runs0) * WAKEUP_WAIT_NS)
        if ran + waited > 10_000_000:          # 10 ms: enough to say anything
            shares.append(ran / (ran + waited))
    return max(min(shares, default=1.0), 0.05)


async def eventually(predicate, timeout: float, what: str) -> None:
    """Wait for a condition only the server process can make true and that
    it does not tell us about (a log line, its descriptor count), checking
    every 20 ms until `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


class Case:
    def __init__(self, arena: Arena, number: int):
        self.arena = arena
        self.number = number
        self.rss_before = arena.rss_kib()
        self.rss_peak = self.rss_before
        self.sched_before = arena.sched()
        self.cpu_share: float | None = None
        self.log_start = arena.log_bytes()
        self._sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample_rss, daemon=True)
        self._sampler.start()
        self.expected_foreign: list[tuple[int, str]] = []
        self.report: dict | None = None
        self.log_text: str | None = None
        self.rss_after: int | None = None
        self.fresh_port: int | None = None      # the local port of finish()'s fresh client

    def _sample_rss(self):
        """The server's peak RSS over the case, sampled every 10 ms."""
        while not self._sampling.wait(0.01):
            try:
                self.rss_peak = max(self.rss_peak, self.arena.rss_kib())
            except (OSError, AttributeError):
                return

    def stop_sampling(self):
        self._sampling.set()
        self._sampler.join()

    def rebaseline_rss(self) -> None:
        """Measure RSS growth from now on: for a case whose first step warms
        memory the server keeps by design (the database pool's scrypt
        buffers, 16 MiB a worker), so that the bound is on what the abuse adds."""
        self.rss_before = self.rss_peak = self.arena.rss_kib()

    # -- declaring what the bystanders may hear --------------------------------

    def expect_chat(self, player_id: int, msg: str) -> None:
        """A chat of the offender's that every bystander must hear, exactly once."""
        self.expected_foreign.append((player_id, msg))

    # -- the offender's side -----------------------------------------------------

    def run(self, coro, timeout: float = 60):
        return self.arena.run(coro, timeout)

    # -- the server log of this case -----------------------------------------------

    def log(self) -> str:
        with open(self.arena.server.log_path, "rb") as f:
            f.seek(self.log_start)
            return f.read().decode("utf-8", "replace")

    def session_id(self, port: int, log: str | None = None) -> int:
        """The server's id for the connection from our local `port`."""
        found = [sid for sid, addr in connected_lines(self.log_text if log is None else log)
                 if addr == f"127.0.0.1:{port}"]
        if len(found) > 1 and port == self.fresh_port:
            found.pop()     # the fresh client of finish() got a port the offender had freed
        assert len(found) == 1, f"{len(found)} sessions from port {port} in this case's log"
        return found[0]

    def reasons_now(self, port: int) -> list[str]:
        """reasons(), from the log as it is now (no fence)."""
        log = self.log()
        sid = self.session_id(port, log)
        return [why for s, _, why in ended_lines(log) if s == sid]

    def session_lines(self, port: int) -> list[str]:
        """The game's log messages about the session from `port`, in order
        (as of finish()), without their time stamps."""
        assert self.log_text is not None, "call finish() first: it is the fence"
        sid = self.session_id(port)
        return re.findall(rf" INFO netcore_server\.\w+: (session {sid}[: ].*)", self.log_text)

    def reasons(self, port: int) -> list[str]:
        """How the game had logged the end of the session from `port` when
        finish() ran (its fence makes sure the server had got that far)."""
        assert self.log_text is not None, "call finish() first: it is the fence"
        sid = self.session_id(port)
        return [why for s, _, why in ended_lines(self.log_text) if s == sid]

    def assert_reason(self, port: int, reason: str) -> None:
        got = self.reasons(port)
        assert got == [reason], f"session from port {port}: {got}, expected [{reason!r}]"

    def assert_reason_starts(self, port: int, prefix: str) -> None:
        got = self.reasons(port)
        assert len(got) == 1 and got[0].startswith(prefix), \
            f"session from port {port}: {got}, expected one starting {prefix!r}"

    def assert_still_connected(self, port: int) -> None:
        assert self.reasons(port) == [], f"session from port {port} was disconnected"

    # -- the end of a case ------------------------------------------------------------

    async def finish(self, *, foreign_check=None, check_timeout: float = 15,
                     latency_ms: float | None = LATENCY_P99_MS,
                     rss_mib: float | None = RSS_GROWTH_MIB) -> dict:
        """End the case from inside its coroutine, offenders still connected:
        the fresh client (the fence), the bystanders' window, the server's
        RSS and log. The log is read here, so what it says about a session
        is as of this moment."""
        arena = self.arena
        assert arena.server.proc.poll() is None, \
            f"server died: exit {arena.server.proc.returncode}\n{self.log()[-3000:]}"
        port = self.fresh_port = await asyncio.wait_for(
            fresh_client_chats(arena.server.port, FRESH_ROOM_BASE + self.number), 30)
        if arena.logs_every_line:
            # The server logs from a thread of its own, in order: once the
            # fresh client's end is in the file, so is everything before it.
            await eventually(lambda: f"from 127.0.0.1:{port} disconnected" in self.log(), 15,
                             "the server's log to catch up with the fresh client")
        self.log_text = self.log()
        self.report = r = await asyncio.get_running_loop().run_in_executor(
            None, arena.command, f"check {check_timeout} {2 * BYSTANDERS}", check_timeout + 30)
        self.stop_sampling()
        self.cpu_share = cpu_share(self.sched_before, arena.sched())
        self.rss_after = arena.rss_kib()
        self.rss_peak = max(self.rss_peak, self.rss_after)
        assert r["disconnected"] == [], f"bystanders disconnected: {r['disconnected']}"
        assert r["malformed"] == 0, f"bystanders got malformed packets: {r['malformed_quoted']}"
        assert r["lost"] == 0 and r["duplicates"] == 0 and r["gaps"] == 0, r
        assert r["sent"] > 0 and r["deliveries"] > 0, r
        if latency_ms is not None:
            bound = latency_ms / self.cpu_share
            assert r["p99_ms"] < bound, (
                f"bystander p99 {r['p99_ms']} ms > {bound:.0f} ms ({latency_ms:g} ms at a "
                f"CPU share of {self.cpu_share:.2f}): {r}")
        if foreign_check is not None:
            foreign_check(r)
        else:
            assert r["foreign_count"] == len(r["foreign"]), "foreign chats beyond those quoted"
            got = collections.Counter((rcv, pid, msg) for rcv, pid, msg in r["foreign"])
            want = collections.Counter((rcv, pid, msg) for rcv in range(BYSTANDERS)
                                       for pid, msg in self.expected_foreign)
            assert got == want, (f"bystanders heard {_quote(got - want)} they should not "
                                 f"have; missed {_quote(want - got)}")
        growth_mib = (self.rss_peak - self.rss_before) / 1024
        if rss_mib is not None and SANITIZED:
            # ASan's allocator holds freed memory in its quarantine (32 MiB:
            # tools/sanitize.sh) and adds shadow memory for what is live, and
            # scrypt's blocks come from it: the bound is the plain build's,
            # three times over here.
            rss_mib *= 3
        if rss_mib is not None:
            assert growth_mib < rss_mib, (
                f"server RSS grew {growth_mib:.1f} MiB at its peak ({self.rss_before} -> "
                f"peak {self.rss_peak}, end {self.rss_after} KiB)")
        assert "Traceback" not in self.log_text, self.log_text[-3000:]
        return r


def _quote(chats: collections.Counter) -> str:
    shown = [(rcv, pid, msg if len(msg) < 40 else f"{msg[:30]}...({len(msg)} chars)")
             for rcv, pid, msg in sorted(chats)[:6]]
    return f"{sum(chats.values())} chats: {shown}"


async def fresh_client_chats(port: int, room: int) -> int:
    """A newcomer logs in, enters, chats and hears it; returns its local port."""
    (c,) = await connect(port)
    local = c.transport.get_extra_info("sockname")[1]
    assert (await c.login()).success
    entered = await c.enter(0, room)
    assert entered.success
    c.send_pkt(pb.C_CHAT(msg="fresh"))
    assert await c.wait_chats(1) == [(entered.playerId, "fresh")]
    c.disconnect()
    await c.wait_closed()
    return local


# -- the offender's tools -------------------------------------------------------------

def local_port(client: GameClient) -> int:
    return client.transport.get_extra_info("sockname")[1]


async def offender(port: int, *, room: int | None = None, index: int = 0,
                   factory=GameClient) -> GameClient:
    """A GameClient, connected; logged in as a guest and entered into `room` unless None."""
    service = ClientService(factory, port=port)
    (c,) = await service.start()
    c.port = local_port(c)
    c.player_id = None
    if room is not None:
        assert (await c.login()).success
        entered = await c.enter(index, room)
        assert entered.success
        c.player_id = entered.playerId
    return c


async def closed_by_server(c: GameClient, timeout: float = 10) -> None:
    """Wait until the server has closed the connection (FIN or RST)."""
    await c.until(lambda: c.reason is not None, timeout)


def chats_from(c: GameClient, player_ids) -> dict[int, list[str]]:
    out = collections.defaultdict(list)
    for pid, msg in c.chats:
        if pid in player_ids:
            out[pid].append(msg)
    return out


def assert_heard_bystanders_once_in_order(c: GameClient, player_ids) -> int:
    """Every bystander chat the offender heard came once, in its sender's order,
    with no gap; returns how many it heard."""
    total = 0
    for pid, msgs in chats_from(c, player_ids).items():
        seqs = [int(m.split(":")[2]) for m in msgs]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), \
            f"from player {pid}: seqs {seqs[:5]}..{seqs[-5:]} not consecutive"
        total += len(seqs)
    return total
