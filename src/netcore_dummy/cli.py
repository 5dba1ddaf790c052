"""netcore-dummy: load a netcore game server with chatting guest clients.

    netcore-dummy [--host 127.0.0.1] [--port 7777] [--clients 100] [--rate 1]
                  [--duration 10] [--rooms 1] [--size 32] [--connect-rate 1000]
                  [--enter-timeout 10] [--drain-timeout 5] [--transport tcp|ws]
                  [--hold] [--loop uvloop|asyncio] [--json] [--version]
                  [--shard 0/1] [--epoch-us 0] [--go-on-stdin]
                  [--scenario chat|field] [--move-rate 10] [--field-size 1000]
                  [--max-step 10] [--view-radius 50]

Exit status: 0 when every client got in game and every expected chat arrived
exactly once from the right sender (--scenario field: every move was
answered and no field packet broke a rule of docs/protocol.md's "The
field"); 1 when anything was lost, duplicated, misattributed or malformed, a
rule was broken, or a client failed; 2 when the run could not start (bad
arguments, nothing listening).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import netcore
from netcore.loop import LOOP_ENV, LOOP_KINDS, tune_gc_for_serving

from netcore_dummy.client import (SCENARIOS, TRANSPORTS, DummyConfig, DummyError, Report,
                                  run_dummy)

EXIT_CANNOT_RUN = 2
EXIT_INTERRUPTED = 130      # Ctrl-C (128 + SIGINT, as shells report it)


def build_parser() -> argparse.ArgumentParser:
    d = DummyConfig()
    ap = argparse.ArgumentParser(prog="netcore-dummy",
                                 description="Load a netcore game server with chatting clients.")

    def option(flag, text, default, **kwargs):
        ap.add_argument(flag, default=default, help=f"{text} (default: {default:g})"
                        if isinstance(default, float) else f"{text} (default: {default})",
                        **kwargs)

    option("--host", "server address", d.host)
    option("--port", "server port", d.port, type=int)
    option("--clients", "clients to connect", d.clients, type=int)
    option("--rate", "chats per client per second", d.rate, type=float)
    option("--duration", "seconds of chatting", d.duration, type=float)
    option("--rooms", "client i enters room i %% rooms", d.rooms, type=int)
    option("--size", "chat length in bytes (ASCII; at most the server's 512)", d.size, type=int)
    option("--connect-rate", "new connections per second", d.connect_rate, type=float)
    option("--enter-timeout", "seconds a client has to connect, log in and enter",
           d.enter_timeout, type=float)
    option("--drain-timeout", "seconds to wait for outstanding chats after the last send",
           d.drain_timeout, type=float)
    ap.add_argument("--transport", choices=TRANSPORTS, default=d.transport,
                    help="tcp, or ws to speak the same packets over WebSocket to the server's "
                         "--ws-port (give that port as --port) (default: tcp)")
    ap.add_argument("--hold", action="store_true",
                    help="get every client in game, then stay idle for --duration, no chat "
                         "(default: chat)")
    ap.add_argument("--resumable", action="store_true",
                    help="enter as resumable clients: the server numbers and keeps what it "
                         "sends each for a resume (default: not)")
    option("--drop-every", "with --resumable: each client cuts its connection (an RST) and "
           "resumes on a new one about once every this many seconds, while chatting "
           "(0: never)", d.drop_every, type=float)
    option("--rolling-restart", "with --resumable: send SIGHUP to this process id (a "
           "netcore-server --workers N) halfway through the chat, so that it restarts its "
           "workers one at a time; the clients it closes resume (0: none)", d.rolling_restart,
           type=int, metavar="PID")
    ap.add_argument("--loop", choices=LOOP_KINDS,
                    help="event loop (default: NETCORE_LOOP, else uvloop when installed)")
    ap.add_argument("--shard", type=parse_shard, default=f"{d.shard}/{d.shards}", metavar="I/K",
                    help="one of K processes loading the same rooms: run clients I, I+K, "
                         "I+2K, ... of --clients; its figures are its own (default: 0/1)")
    ap.add_argument("--epoch-us", type=int, default=0,
                    help="count send stamps from this CLOCK_MONOTONIC microsecond, the same "
                         "for every shard, so latency is measured across them (0: now) "
                         "(default: 0)")
    ap.add_argument("--go-on-stdin", action="store_true",
                    help="once every client is in game, print a JSON line {\"ready\": ...} "
                         "and chat (or, with --hold, start holding) only after a line "
                         "arrives on stdin, to start shards together (default: at once)")
    ap.add_argument("--scenario", choices=SCENARIOS, default=d.scenario,
                    help="chat, or field: walk the server's field (one move in flight each) "
                         "and check every field packet (default: chat)")
    option("--move-rate", "field: moves per client per second", d.move_rate, type=float)
    option("--field-size", "field: the server's --field-size", d.field_size, type=float)
    option("--max-step", "field: the server's --max-step", d.max_step, type=float)
    option("--view-radius", "field: the server's --view-radius", d.view_radius, type=float)
    ap.add_argument("--json", action="store_true",
                    help="print one JSON line on stdout instead of the table (default: table)")
    ap.add_argument("--version", action="version", version=f"netcore-dummy {netcore.__version__}")
    return ap


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, k = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/K such as 0/4, not {text!r}") from None
    return i, k


def parse_args(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    config = DummyConfig(
        host=args.host, port=args.port, clients=args.clients, rate=args.rate,
        duration=args.duration, rooms=args.rooms, size=args.size,
        connect_rate=args.connect_rate, enter_timeout=args.enter_timeout,
        drain_timeout=args.drain_timeout, hold=args.hold, transport=args.transport,
        resumable=args.resumable, drop_every=args.drop_every,
        rolling_restart=args.rolling_restart,
        shard=args.shard[0], shards=args.shard[1], epoch_us=args.epoch_us or None,
        scenario=args.scenario, move_rate=args.move_rate, field_size=args.field_size,
        max_step=args.max_step, view_radius=args.view_radius)
    try:
        config.validate()
    except ValueError as exc:
        ap.error(str(exc))
    return config, args


def run_parameters(config: DummyConfig) -> dict:
    """What the run was asked to do, for --json: a line read on its own says it."""
    return {"clients": config.clients, "rooms": config.rooms, "rate": config.rate,
            "duration": config.duration, "size": config.size,
            "connect_rate": config.connect_rate, "hold": config.hold,
            "transport": config.transport, "shard": f"{config.shard}/{config.shards}",
            "scenario": config.scenario, "move_rate": config.move_rate}


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


def field_table(config: DummyConfig, kind: str, r: Report) -> str:
    f = r.field
    moves, seen, bad = f["moves"], f["seen"], f["violations"]

    def ms(d):
        return "  ".join(f"{k} {d[k]:.2f}" for k in ("p50", "p99", "max"))

    rows = [
        ("run", f"{config.clients:,} walkers in {config.rooms:,} field(s), {config.move_rate:g} "
                f"moves/s each for {config.duration:g} s, {kind}, {config.transport}"),
        ("clients", f"{r.connected:,} connected, {r.in_game:,} in game, {r.failed:,} failed"),
        ("moves", f"{moves['sent']:,} sent, {moves['acked']:,} acked, {moves['corrected']:,} "
                  f"corrected, {moves['late']:,} late, {moves['unanswered']:,} unanswered"),
        ("seen", f"{seen['moves']:,} moves, {seen['spawned']:,} spawned, "
                 f"{seen['despawned']:,} despawned"),
        ("violations", ", ".join(f"{k} {v:,}" for k, v in bad.items() if v) or "0"),
        ("moves/s", f"{f['moves_per_s']:,.0f}"),
        ("deliveries/s", f"{f['deliveries_per_s']:,.0f}"),
        ("ack ms", ms(f["ack_ms"])),
        ("observers ms", ms(f["observers_ms"])),
        ("result", "OK" if r.ok else "FAILED"),
    ]
    rows += [("error", e) for e in r.errors]
    return "\n".join(f"{name:<13} {value}" for name, value in rows)


def table(config: DummyConfig, kind: str, r: Report) -> str:
    if r.field:
        return field_table(config, kind, r)
    lat = r.latency_ms
    rows = [
        ("run", f"{config.clients:,} clients in {config.rooms:,} room(s), {config.rate:g} "
                f"chat/s each for {config.duration:g} s, {config.size}-byte chats, {kind}, "
                f"{config.transport}"),
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
    ]
    if r.resumes:
        gap = r.resumes["gap_ms"]
        rows.append(("resumes", f"{r.resumes['dropped']:,} cut, "
                                f"{r.resumes['server_closed']:,} closed by the server, "
                                f"{r.resumes['resumed']:,} resumed, {r.resumes['failed']:,} "
                                f"failed, {r.resumes['replayed']:,} chats replayed; "
                                "lost to S_RESUME ms "
                                + "  ".join(f"{k} {gap[k]:.2f}" for k in ("p50", "p99", "max"))))
    rows += [
        ("result", "OK" if r.ok else "FAILED"),
    ]
    rows += [("error", e) for e in r.errors]
    if r.errors_not_listed:
        rows.append(("error", f"... and {r.errors_not_listed:,} more not listed"))
    return "\n".join(f"{name:<13} {value}" for name, value in rows)


def main(argv=None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("\nnetcore-dummy: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv=None) -> int:
    config, args = parse_args(argv)
    try:
        kind = netcore.resolve_loop_kind(args.loop)
    except (ValueError, RuntimeError) as exc:
        given = f"--loop {args.loop}" if args.loop else f"{LOOP_ENV}={os.environ.get(LOOP_ENV)}"
        print(f"netcore-dummy: error: {given}: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    # With --json stdout carries one JSON line only; progress may use stderr.
    live = sys.stderr if args.json else sys.stdout
    progress = ProgressLine(live) if live.isatty() else None
    tune_gc_for_serving()
    before_chat = wait_for_go if args.go_on_stdin else None
    try:
        report = netcore.run(run_dummy(config, progress, before_chat), kind)
    except DummyError as exc:
        if progress:
            progress.end()
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        print(f"netcore-dummy: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if progress:
        progress.end()
    if args.json:
        print(json.dumps({**report.as_dict(), "loop": kind, "run": run_parameters(config)},
                         separators=(",", ":")))
    else:
        print(table(config, kind, report))
    return report.exit_code


async def wait_for_go(in_game: int, failed: int) -> None:
    """--go-on-stdin: say we are ready, then wait for the go (any line, or EOF)."""
    print(json.dumps({"ready": True, "in_game": in_game, "failed": failed}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


if __name__ == "__main__":
    sys.exit(main())
