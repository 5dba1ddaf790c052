"""netcore-dummy: the load generator that drives a netcore game server.

Clients log in as guests, enter rooms and chat; every S_CHAT they receive is
checked in C (netcore_dummy.tally) for loss, duplication, order, sender and latency.
Run it with `netcore-dummy` (netcore_dummy.cli) or `await run_dummy(DummyConfig(...))`.
"""
from netcore_dummy.client import DummyConfig, DummyError, Report, run_dummy
from netcore_dummy.session import DummySession
from netcore_dummy.tally import Tally

__all__ = ["DummyConfig", "DummyError", "DummySession", "Report", "Tally", "run_dummy"]
