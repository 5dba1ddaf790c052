"""A flood against a server run without a packet rate limit (--packet-rate 0).

An operator may turn the limit off; then the read path alone stands between
one flooding client and everyone else.
"""
import test_load
from test_load import flood

SERVER_ARGS = ("--packet-rate", "0")


def test_a_flood_without_a_rate_limit_loses_nothing_for_the_bystanders(arena, case):
    # 300,000 one-letter chats: every one comes back to the flooder, and the
    # bystanders keep every bound of the arena.
    n = test_load.FLOOD

    async def go():
        c = await flood(case, arena, n, "f")
        await case.finish()
        return c

    c = case.run(go(), timeout=180)
    assert case.reasons(c.port) == [] and c.reason is None
    assert c.echoes == n


def test_a_flood_without_a_rate_limit_keeps_latency_and_memory_bounded(arena, case):
    n = 1_000_000

    async def go():
        c = await flood(case, arena, n, "")
        await case.finish()
        return c

    c = case.run(go(), timeout=180)
    assert c.echoes == n
