"""Shared fixtures: every networking test runs once per supported event loop."""
import asyncio

import pytest

try:
    import resource
except ImportError:        # Windows: no rlimits to raise
    resource = None

import netcore
from netcore.loop import uvloop_available

LOOP_KINDS = ["asyncio", "uvloop"]


def pytest_configure(config):
    if resource is None:
        return
    # A thousand loopback clients are 2,000 descriptors in one process.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request):
    if request.param == "uvloop" and not uvloop_available():
        pytest.skip("uvloop is not installed on this platform")
    return request.param


@pytest.fixture
def run(loop_kind):
    """run(coro, timeout=30): run a coroutine to completion on this test's loop."""

    def _run(coro, timeout=30.0):
        return netcore.run(asyncio.wait_for(coro, timeout), loop_kind)

    return _run
