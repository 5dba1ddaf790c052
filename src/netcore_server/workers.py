"""A game's server with several workers: the supervisor's side and the worker's side.

`<game>-server --workers N` (or any `--nats`) runs a netcore_cluster
Supervisor, which starts N copies of the same command as workers
(`python -m <Game.command_module>`), each told its slot through the
environment (NETCORE_WORKER_SLOT and friends: internal, not settings). A
worker is the one-process server plus a ClusterLink; the game's rooms need
no code of their own for it (netcore_server.room).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import sys

from netcore_cluster.auth import NatsAuth, redact_url

from netcore_server.config import ServerConfig
from netcore_server.db import DatabaseError, describe_database
from netcore_server.game import Game
from netcore_server.metrics import MetricsServer
from netcore_server.player import PlayerIdAllocator
from netcore_server.listen import listen_error
from netcore_server.server import GameServer

log = logging.getLogger("netcore_server.workers")

ENV_SLOT = "NETCORE_WORKER_SLOT"
ENV_STATUS_FD = "NETCORE_WORKER_STATUS_FD"
ENV_INCARNATION = "NETCORE_WORKER_INCARNATION"
ENV_LIFELINE = "NETCORE_WORKER_LIFELINE_FD"      # end-of-file on it: the supervisor is gone
ENV_METRICS = "NETCORE_WORKER_METRICS"      # "1": serve /metrics on a loopback port for the supervisor
# A rolling restart (netcore_server.restart): where a worker writes its
# handover (<dir>/<slot>.handoff, a directory only this user enters), and
# "1" for a successor, which takes over from that file on SIGUSR2.
ENV_HANDOFF_DIR = "NETCORE_WORKER_HANDOFF_DIR"
ENV_SUCCESSOR = "NETCORE_WORKER_SUCCESSOR"
# Player ids: 2**32 per worker incarnation, so that none is ever issued twice
# while the cluster runs (below 2**53, which JavaScript clients read exactly).
ID_SPACE_BITS = 32
INCARNATIONS_PER_SLOT = 2048


def is_worker() -> bool:
    return ENV_SLOT in os.environ


def cluster_map(config: ServerConfig):
    from netcore_cluster.placement import ClusterMap, check_node_id, default_node_id
    node = check_node_id(config.node_id or default_node_id())
    if config.cluster:
        cmap = ClusterMap.parse(config.cluster)
        if cmap.workers_of(node) != config.workers:
            raise ValueError(f"--cluster {config.cluster} gives node {node} "
                             f"{cmap.workers_of(node)} workers, but --workers is {config.workers}")
    else:
        cmap = ClusterMap.single(node, config.workers)
    return node, cmap


def advertised(config: ServerConfig) -> str:
    """"host:port" of this machine's game port, for the other machines."""
    host = config.advertise_host or config.host
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"[{host}]:{config.port}" if ":" in host else f"{host}:{config.port}"


def nats_servers(config: ServerConfig) -> list[str]:
    return [u.strip() for u in config.nats.split(",") if u.strip()]


# -- the supervisor ------------------------------------------------------------------

def run_cluster(game: Game, config: ServerConfig, argv: list[str]) -> int:
    from netcore_cluster.metrics import MachineMetrics
    from netcore_cluster.supervisor import StartError, Supervisor
    try:
        node, cmap = cluster_map(config)
        import nats  # noqa: F401  (the cluster extra)
    except ImportError:
        print(f'{game.command}: error: --workers and --nats need nats-py: '
              'pip install "netcore[cluster]"', file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"{game.command}: error: {exc}", file=sys.stderr)
        return 2
    slots = [f"{node}-{i}" for i in range(config.workers)]

    def command(worker, status_fd, lifeline_fd):
        """This command again, as the worker of one slot (the later flags win)."""
        args = [sys.executable, "-m", game.command_module, *argv, "--port", str(sup.port),
                "--node-id", node, "--cluster", str(cmap)]
        if not config.nats:
            args += ["--nats", sup.nats_servers[0]]
        if sup.ws_port:
            args += ["--ws-port", str(sup.ws_port)]
        env = {ENV_SLOT: worker.slot, ENV_STATUS_FD: str(status_fd),
               ENV_LIFELINE: str(lifeline_fd),
               ENV_INCARNATION: str(worker.incarnation),
               ENV_METRICS: "1" if config.metrics_port else "0",
               ENV_HANDOFF_DIR: sup.handoff_dir,
               ENV_SUCCESSOR: "1" if worker.successor else "0"}
        return args, env

    sup = Supervisor(slots, command, nats_servers=nats_servers(config),
                     auth=NatsAuth.from_settings(config) if config.nats else None,
                     host=config.host, port=config.port, prefix=config.cluster_prefix,
                     ws_port=config.ws_port)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # SIGHUP: restart the workers one at a time, nobody losing anything
        # (netcore_server.restart); a second one during a restart is ignored.
        loop.add_signal_handler(signal.SIGHUP, sup.request_rolling_restart)
        metrics = None
        try:
            # The database once, before any worker: one that cannot be used is
            # one line here rather than one per worker, and its schema is
            # created or migrated once (each worker's open then finds it current).
            db = game.accounts(config)
            await db.open()
            await db.close()
        except DatabaseError as exc:
            print(f"{game.command}: {exc}", file=sys.stderr)
            return 2

        def start_metrics():            # the machine's one scrape, before any worker listens
            nonlocal metrics
            if config.metrics_port:
                metrics = MachineMetrics(sup, node, config.metrics_host, config.metrics_port)
                try:
                    metrics.start()
                except OSError as exc:
                    metrics = None
                    raise StartError(str(listen_error("metrics port", config.metrics_host,
                                                      config.metrics_port, exc))) from None
        try:
            await sup.start(before_workers=start_metrics)
        except StartError as exc:
            print(f"{game.command}: error: {exc}", file=sys.stderr)
            await sup.stop()
            if metrics is not None:
                metrics.stop()
            return 2
        web = game.web_banner(config.host, sup.ws_port)
        print(f"{game.version_line()} listening on {config.host}:{sup.port} "
              f"({config.workers} worker{'s' if config.workers != 1 else ''} as node {node} "
              f"of cluster {cmap}, "
              f"NATS {','.join(redact_url(u) for u in sup.nats_servers)}, "
              f"database {describe_database(config.db)})"
              f"{web}", flush=True)
        await stop.wait()
        log.info("shutting down %d workers", config.workers)
        code = await sup.stop()
        if metrics is not None:
            metrics.stop()
        return code

    return asyncio.run(main())


# -- a worker --------------------------------------------------------------------------

async def serve_worker(game: Game, config: ServerConfig, kind: str) -> int:
    from netcore_cluster.link import ClusterLink
    slot = os.environ.pop(ENV_SLOT)
    status = os.fdopen(int(os.environ.pop(ENV_STATUS_FD)), "w", buffering=1)
    incarnation = int(os.environ.pop(ENV_INCARNATION, "0"))
    handoff_dir = os.environ.pop(ENV_HANDOFF_DIR, "")
    successor = os.environ.pop(ENV_SUCCESSOR, "0") == "1"
    handoff = os.path.join(handoff_dir, f"{slot}.handoff") if handoff_dir else None
    node, cmap = cluster_map(config)
    index = cmap.slot_index(slot)
    base = ((incarnation % INCARNATIONS_PER_SLOT) * len(cmap.slots) + index) << ID_SPACE_BITS
    # Credentials the supervisor hands over (the private broker's) take precedence.
    link = ClusterLink(cmap, slot, nats_servers(config), prefix=config.cluster_prefix,
                       auth=NatsAuth.from_settings(config), address=advertised(config))
    ids = PlayerIdAllocator(first=base + 1, last=base + (1 << ID_SPACE_BITS) - 1)
    # The machine's metrics port is the supervisor's; a worker serves its own
    # on loopback, for the supervisor to scrape.
    with_metrics = os.environ.pop(ENV_METRICS, "0") == "1"
    config = dataclasses.replace(config, metrics_port=0)
    db = None
    try:
        db = game.accounts(config)
        server = GameServer(config, db, link=link, player_ids=ids, game=game)
        await server.start(successor=successor)
    except (DatabaseError, OSError, Exception) as exc:
        print(f"{game.command}: worker {slot}: {exc}", file=sys.stderr)
        if db is not None:
            await db.close()
        return 2
    loop = asyncio.get_running_loop()
    quiesce, stop, hand = asyncio.Event(), asyncio.Event(), asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR2, hand.set)
    lifeline = int(os.environ.pop(ENV_LIFELINE, "-1"))
    if lifeline >= 0:
        def supervisor_gone():
            loop.remove_reader(lifeline)
            log.error("worker %s: the supervisor is gone; shutting down", slot)
            stop.set()
        loop.add_reader(lifeline, supervisor_gone)
    loop.add_signal_handler(signal.SIGUSR1, quiesce.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if successor:
        # Listening to the slot's messages; SIGUSR2 once the predecessor
        # has written its handover (or is gone without one).
        status.write("attached\n")
        await _first_of(hand, stop)
        hand.clear()
        if stop.is_set():
            await server.stop()
            return 0
        try:
            await server.take_over(handoff if handoff and os.path.exists(handoff) else None)
        except Exception as exc:
            log.exception("worker %s: taking over failed", slot)
            print(f"{game.command}: worker {slot}: taking over failed: {exc}", file=sys.stderr)
            return 2
    metrics_port = 0
    if with_metrics:
        server.metrics = MetricsServer(server, "127.0.0.1", 0)
        metrics_port = server.metrics.start()
    status.write("ready " + json.dumps({"port": server.port, "epoch": link.epoch,
                                        "pid": os.getpid(), "metrics_port": metrics_port}) + "\n")
    log.info("worker %s (pid %d, %s) serving", slot, os.getpid(), kind)
    quiesced = loop.create_task(_quiesce_on(quiesce, server, status))
    while True:
        await _first_of(stop, hand)
        if stop.is_set() or handoff:
            break
        hand.clear()                    # no handover directory: nowhere to hand to
    quiesced.cancel()
    if not stop.is_set():
        await server.hand_off(handoff, lambda counts: status.write(
            "handed " + json.dumps(counts) + "\n"))
        return 0
    log.info("worker %s shutting down: %d sessions", slot, len(server.service))
    await server.stop()
    return 0


async def _first_of(*events) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _quiesce_on(event, server, status):
    await event.wait()
    await server.quiesce()
    status.write("quiesced\n")
