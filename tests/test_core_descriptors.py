"""The descriptor table is grown once, at start-up (netcore.loop.reserve_descriptors).

Linux grows a process's descriptor table by doubling, and in a process with
threads each growth waits out an RCU grace period inside the accept4() that
needed it: the event loop stalls at every power of two unless the table has
its final size before the clients come. Each check runs in a fresh
interpreter, whose table is still small (this test process has opened
thousands of sockets already), and reads the table's size from
/proc/self/status (FDSize).
"""
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="/proc/self/status FDSize is Linux's")

PRELUDE = """
import os, resource, threading
from netcore.loop import reserve_descriptors

def table():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("FDSize:"))

def open_fds():
    return sorted(int(n) for n in os.listdir("/proc/self/fd"))

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft != resource.RLIM_INFINITY and soft < 4096 <= hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
# A second thread, as a server has (thread pool, logging): the case that stalls.
stop = threading.Event()
threading.Thread(target=stop.wait, daemon=True).start()
"""


def in_fresh_python(body: str) -> str:
    """Run PRELUDE + body in a new interpreter; return what it printed."""
    import resource         # here: the module is Linux's, and so are these tests
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 4096:      # PRELUDE's soft limit
        pytest.skip(f"the open-files hard limit is {hard}, below 4096")
    out = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_table_holds_the_count_asked_for_and_nothing_stays_open():
    out = in_fresh_python("""
        before, fds = table(), open_fds()
        assert before < 3000, before            # a fresh interpreter's table is small
        assert reserve_descriptors(3000) == 3000
        assert table() >= 3000, table()
        assert open_fds() == fds, (open_fds(), fds)
        # Descriptors opened now fit: the table does not grow again.
        grown = table()
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(2500)]
        assert table() == grown
        print("ok")
    """)
    assert out.strip() == "ok"


def test_the_open_files_soft_limit_caps_the_table():
    out = in_fresh_python("""
        resource.setrlimit(resource.RLIMIT_NOFILE, (1500, hard))
        assert reserve_descriptors(100_000) == 1500
        assert 1500 <= table() < 100_000, table()
        print("ok")
    """)
    assert out.strip() == "ok"


def test_a_descriptor_already_at_the_top_is_left_as_it_is():
    out = in_fresh_python("""
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 2999)
        mine = os.fstat(2999)
        fds = open_fds()
        assert reserve_descriptors(3000) == 3000
        still = os.fstat(2999)
        assert (still.st_dev, still.st_ino) == (mine.st_dev, mine.st_ino)
        assert open_fds() == fds
        print("ok")
    """)
    assert out.strip() == "ok"


def test_nothing_is_asked_for_below_one():
    out = in_fresh_python("""
        before = table()
        assert reserve_descriptors(0) == 0
        assert table() == before
        print("ok")
    """)
    assert out.strip() == "ok"


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_server_grows_the_table_for_its_sessions_when_it_starts(loop_kind):
    if loop_kind == "uvloop":
        pytest.importorskip("uvloop")
    out = in_fresh_python(f"""
        import asyncio
        import netcore
        from netcore import PacketSession, ServerService
        from netcore.loop import DESCRIPTOR_HEADROOM

        async def main():
            service = ServerService(PacketSession, max_sessions=3000)
            before = table()
            async with service:
                assert before < 3000, before
                assert table() >= 3000 + DESCRIPTOR_HEADROOM, table()
            print("ok")

        netcore.run(main(), {loop_kind!r})
    """)
    assert out.strip() == "ok"


def test_a_client_service_grows_the_table_for_its_sessions_when_it_starts():
    out = in_fresh_python("""
        import socket
        import netcore
        from netcore import ClientService, PacketSession
        from netcore.loop import DESCRIPTOR_HEADROOM

        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]       # bound, not listening: every dial is refused

        async def main():
            before = table()
            service = ClientService(PacketSession, "127.0.0.1", port, count=3000)
            sessions = await service.start()
            assert before < 3000, before
            assert table() >= 3000 + DESCRIPTOR_HEADROOM, table()
            assert sessions == [] and len(service.failures) == 3000
            await service.close()
            print("ok")

        netcore.run(main(), "asyncio")
    """)
    assert out.strip() == "ok"
