"""Fixtures of the adversarial suite: one arena (a real netcore-server, twenty
chatting bystanders) per test module and event loop, shared by its cases."""
import json
import os

import pytest

from netcore.loop import uvloop_available

from arena import Arena

LOOP_KINDS = ["asyncio", "uvloop"]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call":
        item.call_failed = not rep.passed     # failed, or an expected failure
    return rep


@pytest.fixture(scope="module", params=LOOP_KINDS)
def arena(request, tmp_path_factory):
    if request.param == "uvloop" and not uvloop_available():
        pytest.skip("uvloop is not installed on this platform")
    args = getattr(request.module, "SERVER_ARGS", ())
    if callable(args):          # chosen per arena (a free port, say)
        args = args()
    a = Arena(tmp_path_factory.mktemp(f"arena-{request.param}"), request.param, *args)
    try:
        yield a.start()
    finally:
        code = a.stop()
    assert code == 0, f"server exit code {code}"


@pytest.fixture
def case(request, arena):
    """One adversarial case; the test must end it with case.finish().
    With ADVERSARIAL_LOG=path, each finished case appends a JSON line there
    (the bystanders' window, the server's RSS)."""
    c = arena.case()
    yield c
    c.stop_sampling()
    if c.report is not None and os.environ.get("ADVERSARIAL_LOG"):
        with open(os.environ["ADVERSARIAL_LOG"], "a") as f:
            f.write(json.dumps({
                "case": request.node.nodeid, "p50_ms": c.report["p50_ms"],
                "p99_ms": c.report["p99_ms"], "max_ms": c.report["max_ms"],
                "window_s": c.report["seconds"], "sent": c.report["sent"],
                "cpu_share": c.cpu_share,
                "rss_before_kib": c.rss_before, "rss_peak_kib": c.rss_peak,
                "rss_after_kib": c.rss_after}) + "\n")
    if c.report is None:
        if arena.server.proc.poll() is None and arena.bystanders.poll() is None:
            arena.command("check 15 0", timeout=60)    # close the window for the next case
        assert getattr(request.node, "call_failed", False), "the test never called case.finish()"
