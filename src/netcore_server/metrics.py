"""Prometheus metrics of a game's server: /metrics, /healthz, and 404 elsewhere.

The collector reads state only when scraped: packet counters and latency
histograms live in C (netcore.stats), the rest is counted from the live
objects. Scrapes run on the HTTP server's threads; every read here is one
GIL-atomic copy (list(dict.values()), a C counter table) or a plain
attribute, so the event loop never waits for a scrape and a scrape never sees
a half-changed dict.

Conventions (a test scrapes and checks them): label values are snake_case
(state="logging_in", reason="peer_closed"); a labelled series that can move
exists from the start at 0, and one that never can is not exported (packets
"in" are counted for the packets a client sends, "out" for those the server
sends, and ids no handler knows fold into packet="unknown", so a hostile
client cannot mint series); latencies are histograms, which any number of
scrapers can read without disturbing each other.

To add a metric, add a method that yields metric families and list it in
ServerCollector.SECTIONS.
"""
from __future__ import annotations

import json
import platform

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

import netcore
from netcore import DisconnectReason, LatencyHistogram
from netcore import logs as netcore_logs
from netcore.httpd import HTTPEndpoint
from netcore.loop import LagMonitor

from netcore_server.session import State

# The loop beats every 0.1 s: one that has not for this long is stuck.
LOOP_STALLED_SECONDS = 5.0
UNKNOWN_PACKET = "unknown"


def label(text: str) -> str:
    """A label value as Prometheus users write them: "logging in" -> "logging_in"."""
    return text.replace(" ", "_").replace("-", "_").lower()


def histogram(name: str, doc: str, h: LatencyHistogram) -> HistogramMetricFamily:
    buckets, total = h.snapshot()
    return HistogramMetricFamily(
        name, doc, buckets=[("+Inf" if b == float("inf") else repr(b), n) for b, n in buckets],
        sum_value=total)


class ServerCollector:
    SECTIONS = ("build_info", "sessions", "transports", "rooms", "ticks", "packets",
                "disconnects", "proxies", "send_queue", "refusals", "logs", "latencies",
                "websocket", "resumption", "cluster")

    def __init__(self, server, lag: LagMonitor, lag_histogram: LatencyHistogram):
        self.server = server
        self.lag = lag
        self.lag_histogram = lag_histogram
        # The game's packets by id: what clients send, what the server sends.
        self.received = server.protocol.received()
        self.sent = server.protocol.sent()
        self.kinds = sorted({room.kind for room in server.game.room_classes()})

    def collect(self):
        sessions = list(self.server.service.sessions.values())
        for section in self.SECTIONS:
            yield from getattr(self, section)(sessions)

    def build_info(self, sessions):
        info = GaugeMetricFamily("netcore_build_info", "The running netcore and game: always 1",
                                 labels=["version", "python", "game", "game_version"])
        game = self.server.game
        info.add_metric([netcore.__version__, platform.python_version(), game.name,
                         game.version or netcore.__version__], 1)
        yield info

    def sessions(self, sessions):
        family = GaugeMetricFamily("netcore_sessions", "Sessions by state", labels=["state"])
        counts = {state: 0 for state in State}
        for s in sessions:
            counts[s.state] += 1
        for state, n in counts.items():
            family.add_metric([label(state.value)], n)
        yield family

    def transports(self, sessions):
        family = GaugeMetricFamily("netcore_sessions_by_transport",
                                   "Sessions by transport: tcp, or ws (WebSocket)",
                                   labels=["transport"])
        counts = {"tcp": 0, "ws": 0}
        for s in sessions:
            counts[s.transport_kind] = counts.get(s.transport_kind, 0) + 1
        for transport, n in counts.items():
            family.add_metric([transport], n)
        yield family

    def websocket(self, sessions):
        """With --ws-port: the upgrades, pages and close codes of the WebSocket port."""
        ws = self.server.ws
        if ws is None:
            return
        yield CounterMetricFamily("netcore_websocket_upgrades",
                                  "WebSocket upgrades accepted (sessions begun)", value=ws.upgrades)
        yield GaugeMetricFamily("netcore_websocket_upgrading",
                                "WebSocket connections in their HTTP upgrade now",
                                value=ws.upgrading)
        yield CounterMetricFamily("netcore_websocket_upgrades_refused",
                                  "WebSocket connections aborted before their upgrade: past "
                                  "--ws-max-upgrades or --ws-max-upgrades-per-address",
                                  value=ws.refused_upgrades)
        yield CounterMetricFamily("netcore_websocket_handshake_timeouts",
                                  "WebSocket connections aborted at --ws-handshake-timeout",
                                  value=ws.handshake_timeouts)
        yield CounterMetricFamily("netcore_websocket_origin_refusals",
                                  "WebSocket upgrades refused: origin not allowed (--ws-origins)",
                                  value=ws.refused_origins)
        pages = CounterMetricFamily("netcore_websocket_http_requests",
                                    "Plain HTTP requests on the WebSocket port, by answer",
                                    labels=["answer"])
        pages.add_metric(["page"], ws.pages_served)
        pages.add_metric(["not_found"], ws.not_found)
        yield pages
        closes = CounterMetricFamily("netcore_websocket_closes",
                                     "WebSocket close frames sent, by close code "
                                     "(docs/protocol.md)", labels=["code"])
        for code, n in sorted(dict(ws.closes).items()):
            closes.add_metric([str(code)], n)
        yield closes

    def resumption(self, sessions):
        """Resumable sessions (netcore_server.resume): holds, resumes, replays."""
        holds = self.server.holds
        if holds is None:
            return
        c = holds.counts
        yield GaugeMetricFamily("netcore_resume_holding",
                                "Players held for a resume now: connection gone, still in "
                                "their room", value=holds.holding)
        yield CounterMetricFamily("netcore_resume_holds", "Holds begun", value=c.held)
        yield CounterMetricFamily("netcore_resumes", "Resumes that took over a session",
                                  value=c.resumed)
        yield CounterMetricFamily("netcore_resume_replayed_packets",
                                  "Packets sent again by resumes", value=c.replayed)
        yield CounterMetricFamily("netcore_resume_relayed",
                                  "Resumes relayed to the holder's machine (a WebSocket, or "
                                  "another machine's token)", value=self.server.relays)
        ended = CounterMetricFamily("netcore_resume_holds_ended",
                                    "Holds that ended with the player leaving, by why: past "
                                    "--resume-window or --resume-buffer-bytes",
                                    labels=["why"])
        ended.add_metric(["window"], c.expired)
        ended.add_metric(["buffer"], c.overflowed)
        yield ended

    def rooms(self, sessions):
        family = GaugeMetricFamily("netcore_rooms", "Rooms with players, by kind (Room.kind)",
                                   labels=["kind"])
        counts = dict.fromkeys(self.kinds, 0)
        for room in self.server.rooms.all():
            counts[room.kind] = counts.get(room.kind, 0) + 1
        for kind, n in sorted(counts.items()):
            family.add_metric([kind], n)
        yield family

    def ticks(self, sessions):
        """Room ticks by kind (Room.tick_rate): run, late, skipped, over budget, durations."""
        rooms = self.server.rooms
        kinds = set(self.kinds) | set(rooms.tick_totals)
        families = [CounterMetricFamily(name, doc, labels=["kind"]) for name, doc in (
            ("netcore_room_ticks", "Room ticks run"),
            ("netcore_room_ticks_late", "Room ticks that began a whole period or more after "
                                        "they were due"),
            ("netcore_room_ticks_skipped", "Room tick slots skipped, never run to catch up "
                                           "(the room's queue or the loop was behind)"),
            ("netcore_room_ticks_over_budget", "Room ticks that ran longer than the room's "
                                               "time budget"))]
        live = {kind: [0, 0, 0, 0] for kind in kinds}
        for room in rooms.all():
            t = room.ticker
            if t is not None:
                counts = live.setdefault(room.kind, [0, 0, 0, 0])
                for i, n in enumerate((t.ticks, t.late, t.skipped, t.over_budget)):
                    counts[i] += n
        for kind in sorted(live):
            totals = rooms.tick_totals.get(kind)
            past = ((totals.ticks, totals.late, totals.skipped, totals.over_budget)
                    if totals is not None else (0, 0, 0, 0))
            for family, now, before in zip(families, live[kind], past):
                family.add_metric([kind], now + before)
        yield from families
        durations = HistogramMetricFamily("netcore_room_tick_seconds",
                                          "How long each room tick ran", labels=["kind"])
        for kind in sorted(live):
            totals = rooms.tick_totals.get(kind)    # made on the loop's thread, never here
            buckets, total = (totals.durations if totals is not None
                              else LatencyHistogram()).snapshot()
            durations.add_metric([kind], [("+Inf" if b == float("inf") else repr(b), n)
                                          for b, n in buckets], sum_value=total)
        yield durations

    def packets(self, sessions):
        received = [CounterMetricFamily(name, doc, labels=["packet"]) for name, doc in (
            ("netcore_packets_in", "Packets received from clients"),
            ("netcore_bytes_in", "Bytes of packets received from clients"))]
        sent = [CounterMetricFamily(name, doc, labels=["packet"]) for name, doc in (
            ("netcore_packets_out", "Packets queued to clients (one per recipient)"),
            ("netcore_bytes_out", "Bytes of packets queued to clients"))]
        names_in, names_out = self.received, self.sent
        counts_in = {name: [0, 0] for name in [*names_in.values(), UNKNOWN_PACKET]}
        counts_out = {name: [0, 0] for name in names_out.values()}
        for pkt_id, (p_in, b_in, p_out, b_out) in self.server.service.packet_stats.snapshot().items():
            into = counts_in[names_in.get(pkt_id, UNKNOWN_PACKET)]
            into[0] += p_in
            into[1] += b_in
            if pkt_id in names_out:
                counts_out[names_out[pkt_id]][0] += p_out
                counts_out[names_out[pkt_id]][1] += b_out
        for counts, families in ((counts_in, received), (counts_out, sent)):
            for name, values in counts.items():
                for family, value in zip(families, values):
                    family.add_metric([name], value)
            yield from families

    def disconnects(self, sessions):
        family = CounterMetricFamily("netcore_disconnects", "Sessions ended, by reason",
                                     labels=["reason"])
        counts = dict(self.server.service.disconnects)
        for reason in DisconnectReason:
            family.add_metric([label(reason.value)], counts.get(reason.value, 0))
        yield family

    def proxies(self, sessions):
        """Connections from --trusted-proxies closed before their PROXY header
        was read, by reason (every reason from the start)."""
        family = CounterMetricFamily("netcore_proxy_header_failures",
                                     "Connections from trusted proxies closed before their PROXY "
                                     "header was read, by reason", labels=["reason"])
        for reason, n in dict(self.server.service.proxy_header_failures).items():
            family.add_metric([reason], n)
        yield family
        yield GaugeMetricFamily("netcore_proxy_headers_waiting",
                                "Connections from trusted proxies whose PROXY header is not "
                                "read yet", value=self.server.service.proxied_waiting)

    def send_queue(self, sessions):
        yield GaugeMetricFamily("netcore_send_queue_bytes", "Bytes queued, not yet written",
                                value=self.server.service.pending_bytes)
        yield CounterMetricFamily("netcore_slow_consumers_shed",
                                  "Sessions cut off to keep --max-pending-bytes-total",
                                  value=self.server.service.shed_sessions)

    def refusals(self, sessions):
        refusals = CounterMetricFamily(
            "netcore_refusals", "Client requests refused: logins, enters, room jobs dropped",
            labels=["refused", "reason"])
        for (what, reason), n in sorted(dict(self.server.refusals.counts).items()):
            refusals.add_metric([what, reason], n)
        yield refusals
        yield GaugeMetricFamily("netcore_logins_in_flight", "Named logins waiting for the database",
                                value=self.server.logins.in_flight)

    def logs(self, sessions):
        yield CounterMetricFamily("netcore_log_lines_suppressed",
                                  "Per-client log lines over the --peer-log-rate budget",
                                  value=netcore_logs.PEER_LINES.suppressed)
        yield CounterMetricFamily("netcore_log_records_dropped",
                                  "Log records dropped because the log writer fell behind",
                                  value=netcore_logs.dropped_records())

    def latencies(self, sessions):
        yield histogram("netcore_event_loop_lag_seconds",
                        "How late the event loop ran a heartbeat due every 0.1 s",
                        self.lag_histogram)
        yield histogram("netcore_job_queue_delay_seconds",
                        "How long a room's queued jobs waited for their turn to run",
                        self.server.rooms.delay_histogram)

    def cluster(self, sessions):
        """With several workers: this worker's broker figures (netcore_cluster)."""
        link = getattr(self.server, "link", None)
        if link is not None:
            from netcore_cluster.metrics import link_families
            yield from link_families(link)


class MetricsServer:
    """The HTTP endpoint of one GameServer, on daemon threads:

    /metrics  Prometheus text (or OpenMetrics, as the scraper asks)
    /healthz  200 when the server accepts connections and its event loop runs,
              else 503; a JSON body says which
    """

    def __init__(self, server, host: str, port: int):
        self.server = server
        self.lag_histogram = LatencyHistogram()
        self.lag = LagMonitor(histogram=self.lag_histogram)
        self.registry = CollectorRegistry()
        self.registry.register(ServerCollector(server, self.lag, self.lag_histogram))
        # What the default registry would carry: process (CPU, memory, descriptors),
        # platform (python_info) and the garbage collector.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.metrics_app = make_wsgi_app(self.registry)
        self.http = HTTPEndpoint(self.app, host, port, name="netcore-metrics")

    def health(self) -> tuple[bool, dict]:
        accepting = bool(self.server.service.listening)
        since = self.lag.seconds_since_beat()
        loop_alive = since < LOOP_STALLED_SECONDS
        return accepting and loop_alive, {
            "accepting": accepting, "loop_alive": loop_alive,
            "seconds_since_loop_beat": round(since, 3)}

    def app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self.metrics_app(environ, start_response)
        if path == "/healthz":
            healthy, body = self.health()
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "application/json")])
            return [json.dumps(body).encode() + b"\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: see /metrics or /healthz\n"]

    @property
    def port(self) -> int:
        return self.http.port

    def start(self) -> int:
        """Bind and serve; an OSError (socket.gaierror for a host that does not
        resolve) when the address cannot be had."""
        port = self.http.start()
        self.lag.start()
        return port

    def stop(self) -> None:
        self.lag.stop()
        self.http.stop()
