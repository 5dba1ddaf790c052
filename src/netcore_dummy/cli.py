"""netcore-dummy: load a netcore game server with chatting guest clients.

    netcore-dummy [--host 127.0.0.1] [--port 7777] [--clients 100] [--rate 1.0]
                  [--duration 10] [--rooms 1] [--size 32] [--connect-rate 1000]
                  [--loop uvloop|asyncio] [--json]

Exit status: 0 when every client got in game and every expected chat arrived
exactly once from the right sender; 1 when anything was lost, duplicated,
misattributed or malformed, or a client failed; 2 when the run could not
start (bad arguments, nothing listening).
"""
from __future__ import annotations

import argparse
import json
import sys

import netcore
from netcore.loop import LOOP_KINDS, tune_gc_for_serving

from netcore_dummy.client import DummyConfig, DummyError, Report, run_dummy

EXIT_CANNOT_RUN = 2


def parse_args(argv=None):
    d = DummyConfig()
    ap = argparse.ArgumentParser(prog="netcore-dummy",
                                 description="Load a netcore game server with chatting clients.")
    ap.add_argument("--host", default=d.host)
    ap.add_argument("--port", type=int, default=d.port)
    ap.add_argument("--clients", type=int, default=d.clients)
    ap.add_argument("--rate", type=float, default=d.rate, help="chats per client per second")
    ap.add_argument("--duration", type=float, default=d.duration, help="seconds of chatting")
    ap.add_argument("--rooms", type=int, default=d.rooms, help="client i enters room i %% rooms")
    ap.add_argument("--size", type=int, default=d.size,
                    help="chat length in bytes (ASCII; at most the server's 512)")
    ap.add_argument("--connect-rate", type=float, default=d.connect_rate,
                    help="new connections per second")
    ap.add_argument("--enter-timeout", type=float, default=d.enter_timeout,
                    help="seconds a client has to connect, log in and enter")
    ap.add_argument("--drain-timeout", type=float, default=d.drain_timeout,
                    help="seconds to wait for outstanding chats after the last send")
    ap.add_argument("--hold", action="store_true",
                    help="get every client in game, then stay idle for --duration (no chat)")
    ap.add_argument("--loop", choices=LOOP_KINDS, help="default: uvloop when installed")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON line on stdout instead of the table")
    ap.add_argument("--version", action="version", version=f"netcore-dummy {netcore.__version__}")
    args = ap.parse_args(argv)
    config = DummyConfig(
        host=args.host, port=args.port, clients=args.clients, rate=args.rate,
        duration=args.duration, rooms=args.rooms, size=args.size,
        connect_rate=args.connect_rate, enter_timeout=args.enter_timeout,
        drain_timeout=args.drain_timeout, hold=args.hold)
    try:
        config.validate()
    except ValueError as exc:
        ap.error(str(exc))
    return config, args


class ProgressLine:
    """Rewrites one terminal line a second: \\r, the figures, clear to end."""

    def __init__(self, stream):
        self.stream = stream
        self.shown = False

    def __call__(self, p: dict) -> None:
        p99 = "-" if p["p99_ms"] is None else f"{p['p99_ms']:.2f} ms"
        self.stream.write(
            f"\r{p['phase']:>7}: {p['connected']:,} connected, {p['in_game']:,} in game, "
            f"{p['failed']:,} failed, {p['sent']:,} sent, {p['received']:,} received, "
            f"p99 {p99}\x1b[K")
        self.stream.flush()
        self.shown = True

    def end(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def table(config: DummyConfig, kind: str, r: Report) -> str:
    lat = r.latency_ms
    rows = [
        ("run", f"{config.clients:,} clients in {config.rooms:,} room(s), {config.rate:g} "
                f"chat/s each for {config.duration:g} s, {config.size}-byte chats, {kind}"),
        ("clients", f"{r.connected:,} connected, {r.in_game:,} in game, {r.failed:,} failed"),
        ("chats", f"{r.sent:,} sent, {r.expected:,} deliveries expected"),
        ("received", f"{r.received:,} ({r.unique:,} unique, {r.foreign:,} foreign)"),
        ("lost", f"{r.lost:,}"),
        ("duplicated", f"{r.duplicated:,}"),
        ("out of order", f"{r.out_of_order:,}"),
        ("wrong sender", f"{r.wrong_sender:,}"),
        ("malformed", f"{r.malformed:,}"),
        ("deliveries/s", f"{r.deliveries_per_s:,.0f}"),
        ("logins/s", f"{r.logins_per_s:,.0f}  (login + enter, first dial to last enter)"),
        ("latency ms", "  ".join(f"{k} {lat[k]:.2f}" for k in ("p50", "p90", "p99", "max"))),
        ("result", "OK" if r.ok else "FAILED"),
    ]
    rows += [("error", e) for e in r.errors]
    return "\n".join(f"{name:<13} {value}" for name, value in rows)


def main(argv=None) -> int:
    config, args = parse_args(argv)
    kind = netcore.resolve_loop_kind(args.loop)
    # With --json stdout carries one JSON line only; progress may use stderr.
    live = sys.stderr if args.json else sys.stdout
    progress = ProgressLine(live) if live.isatty() else None
    tune_gc_for_serving()
    try:
        report = netcore.run(run_dummy(config, progress), kind)
    except DummyError as exc:
        if progress:
            progress.end()
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        print(f"netcore-dummy: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        print("\nnetcore-dummy: interrupted", file=sys.stderr)
        return 130
    if progress:
        progress.end()
    if args.json:
        print(json.dumps({**report.as_dict(), "loop": kind}, separators=(",", ":")))
    else:
        print(table(config, kind, report))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
