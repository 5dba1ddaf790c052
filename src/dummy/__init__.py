"""netcore-dummy: the load generator that drives a netcore game server.

Clients log in as guests, enter rooms and chat; every S_CHAT they receive is
checked in C (dummy.tally) for loss, duplication, order, sender and latency.
Run it with `netcore-dummy` (dummy.cli) or `await run_dummy(DummyConfig(...))`.
"""
from dummy.client import DummyConfig, DummyError, Report, run_dummy
from dummy.session import DummySession
from dummy.tally import Tally

__all__ = ["DummyConfig", "DummyError", "DummySession", "Report", "Tally", "run_dummy"]
