"""Prometheus metrics for netcore-server, served by prometheus_client.

The collector reads state only when scraped: packet counters live in C
(netcore.stats), the rest is counted from the live objects. Scrapes run on
prometheus_client's HTTP thread; every read here is one GIL-atomic copy
(list(dict.values()), a C counter table) or a plain attribute, so the event
loop never waits for a scrape and a scrape never sees a half-changed dict.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from netcore import logs as netcore_logs
from netcore.loop import LagMonitor
from netcore_packets.server_dispatch import PACKET_IDS

from netcore_game.session import State

PACKET_NAMES = {pkt_id: name for name, pkt_id in PACKET_IDS.items()}


class ServerCollector:
    def __init__(self, server, lag: LagMonitor):
        self.server = server
        self.lag = lag

    def collect(self):
        service = self.server.service
        sessions = list(service.sessions.values())

        by_state = GaugeMetricFamily("netcore_sessions", "Sessions by state", labels=["state"])
        counts = {state: 0 for state in State}
        for s in sessions:
            counts[s.state] += 1
        for state, n in counts.items():
            by_state.add_metric([state.value], n)
        yield by_state

        rooms = self.server.rooms.all()
        yield GaugeMetricFamily("netcore_rooms", "Rooms with players", value=len(rooms))

        families = [CounterMetricFamily(name, doc, labels=["packet"]) for name, doc in (
            ("netcore_packets_in", "Packets received from clients"),
            ("netcore_bytes_in", "Bytes of packets received from clients"),
            ("netcore_packets_out", "Packets queued to clients (one per recipient)"),
            ("netcore_bytes_out", "Bytes of packets queued to clients"))]
        for pkt_id, values in sorted(service.packet_stats.snapshot().items()):
            label = PACKET_NAMES.get(pkt_id, str(pkt_id))
            for family, value in zip(families, values):
                family.add_metric([label], value)
        yield from families

        disconnects = CounterMetricFamily("netcore_disconnects", "Sessions ended, by reason",
                                          labels=["reason"])
        for reason, n in sorted(dict(service.disconnects).items()):
            disconnects.add_metric([reason], n)
        yield disconnects

        refusals = CounterMetricFamily(
            "netcore_refusals", "Client requests refused: logins, enters, chats dropped",
            labels=["refused", "reason"])
        for (what, reason), n in sorted(dict(self.server.refusals.counts).items()):
            refusals.add_metric([what, reason], n)
        yield refusals
        yield CounterMetricFamily("netcore_log_lines_suppressed",
                                  "Per-client log lines over the --peer-log-rate budget",
                                  value=netcore_logs.PEER_LINES.suppressed)
        yield CounterMetricFamily("netcore_log_records_dropped",
                                  "Log records dropped because the log writer fell behind",
                                  value=netcore_logs.dropped_records())
        yield CounterMetricFamily("netcore_slow_consumers_shed",
                                  "Sessions cut off to keep --max-pending-bytes-total",
                                  value=service.shed_sessions)
        yield GaugeMetricFamily("netcore_logins_in_flight", "Named logins waiting for the database",
                                value=self.server.logins.in_flight)
        yield GaugeMetricFamily("netcore_send_queue_bytes", "Bytes queued, not yet written",
                                value=service.pending_bytes)
        yield GaugeMetricFamily("netcore_event_loop_lag_seconds",
                                "Worst heartbeat delay of the event loop since the last scrape",
                                value=self.lag.take_max())
        yield GaugeMetricFamily("netcore_job_queue_delay_seconds",
                                "Longest a room queue waited to run since the last scrape",
                                value=max((r.take_max_delay() for r in rooms), default=0.0))


class MetricsServer:
    """The /metrics endpoint of one GameServer (a daemon thread)."""

    def __init__(self, server, host: str, port: int):
        self.lag = LagMonitor()
        self.registry = CollectorRegistry()
        self.registry.register(ServerCollector(server, self.lag))
        self.host, self.port = host, port
        self._http = None

    def start(self) -> int:
        self.lag.start()
        self._http, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
        self.port = self._http.server_port
        return self.port

    def stop(self) -> None:
        self.lag.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
