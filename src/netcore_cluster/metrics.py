"""The cluster's metrics: one worker's broker figures, and one machine's scrape.

`link_families(link)` is what a worker's /metrics adds about its link. The
supervisor's /metrics (`MachineMetrics`) scrapes every worker of the machine
on loopback and serves their series together, each labelled with its
`worker` slot and `node`, plus the supervisor's own: workers up and restarts.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from netcore.httpd import HTTPEndpoint


class Histogram:
    """Cumulative buckets, as Prometheus wants them; observed from the loop thread."""

    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, n in zip((*map(str, self.buckets), "+Inf"), self.counts):
            total += n
            out.append((bound, total))
        return out

# link.stats keys by metric: (name, help, label, {label value: stats key}).
_COUNTERS = (
    ("netcore_cluster_messages", "Broker messages", "direction",
     {"in": "messages_in", "out": "messages_out", "dropped": "messages_dropped"}),
    ("netcore_cluster_bytes", "Bytes of broker messages", "direction",
     {"in": "bytes_in", "out": "bytes_out"}),
    ("netcore_cluster_ops", "Room ops a gateway forwarded and an owner ran, by what happened",
     "event", {"forwarded": "ops_forwarded", "resent": "ops_resent", "dropped": "ops_dropped",
               "given_up": "ops_given_up", "applied": "ops_in", "repeated": "ops_repeated",
               "out_of_order": "ops_out_of_order", "stale": "ops_stale",
               "misrouted": "ops_misrouted", "refused": "ops_refused"}),
    ("netcore_cluster_broker_events", "Broker connection events", "event",
     {"disconnect": "broker_disconnects", "reconnect": "broker_reconnects",
      "error": "broker_errors", "slow_consumer": "slow_consumer_drops"}),
)
_SINGLE = (
    ("netcore_cluster_stream_gaps", "Room stream messages that never arrived (gaps seen)",
     "stream_gaps"),
    ("netcore_cluster_packets_lost", "Packets of room streams lost between workers",
     "packets_lost"),
    ("netcore_cluster_deliveries_relayed",
     "Deliveries to local players of rooms owned by other workers", "deliveries_relayed"),
    ("netcore_cluster_owner_restarts", "Times an owner of rooms came back as a new incarnation",
     "owner_restarts"),
    ("netcore_cluster_bad_messages",
     "Broker messages dropped whole because a field did not parse or was out of range",
     "bad_messages"),
    ("netcore_cluster_stale_stream_messages",
     "Room stream messages of another owner incarnation than the ops are numbered for",
     "stream_stale"),
    ("netcore_cluster_stale_acks", "ACKs of an earlier numbering of a gateway's ops",
     "acks_stale"),
    ("netcore_cluster_acks", "ACK segments an owner put in its room streams", "acks_out"),
    ("netcore_cluster_members_given_up",
     "Members disconnected because their room's owner did not answer for give_up_after",
     "members_given_up"),
    ("netcore_cluster_outbox_full",
     "Messages dropped because max_outbox_bytes waited for the broker already",
     "outbox_full"),
    ("netcore_cluster_internal_errors",
     "Faults of the link itself (logged with a traceback); the link carries on",
     "internal_errors"),
)


def link_families(link):
    stats = dict(link.stats)
    for name, doc, label, keys in _COUNTERS:
        family = CounterMetricFamily(name, doc, labels=[label])
        for value, key in keys.items():
            family.add_metric([value], stats.get(key, 0))
        yield family
    for name, doc, key in _SINGLE:
        yield CounterMetricFamily(name, doc, value=stats.get(key, 0))
    yield GaugeMetricFamily("netcore_cluster_pending_ops",
                            "Ops forwarded to owners, not yet acknowledged",
                            value=link.gateway.pending_ops())
    yield GaugeMetricFamily("netcore_cluster_remote_rooms",
                            "Rooms owned elsewhere with players here",
                            value=len(link.gateway.rooms))
    yield GaugeMetricFamily("netcore_cluster_streamed_rooms",
                            "Rooms owned here (each with its stream)",
                            value=len(link.owner.streams))
    info = GaugeMetricFamily("netcore_cluster_info", "This worker in its cluster: always 1",
                             labels=["slot", "cluster"])
    info.add_metric([link.slot, str(link.cmap)], 1)
    yield info
    for name, doc, h in (
            ("netcore_cluster_forward_delay_seconds",
             "From an op forwarded to its owner to its acknowledgement on the room stream",
             link.forward_delay),
            ("netcore_cluster_batch_packets", "Packets per room stream message",
             link.batch_packets)):
        yield HistogramMetricFamily(name, doc, buckets=h.cumulative(), sum_value=h.sum)


def _get(port, path: str) -> tuple[int, str]:
    """(status, body) of a worker's endpoint on loopback; (0, "") when it does
    not answer (not started yet, restarting, or gone)."""
    if not port:
        return 0, ""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:       # a 503 from /healthz is an answer
        return exc.code, ""
    except OSError:
        return 0, ""


class MachineMetrics:
    """The supervisor's /metrics and /healthz: every worker's, merged."""

    def __init__(self, supervisor, node: str, host: str, port: int):
        self.supervisor = supervisor
        self.node = node
        registry = CollectorRegistry()
        registry.register(self)
        self.metrics_app = make_wsgi_app(registry)
        self.http = HTTPEndpoint(self.app, host, port, name="netcore-machine-metrics")

    def start(self) -> int:
        return self.http.start()

    def stop(self) -> None:
        self.http.stop()

    def _workers(self):
        for w in self.supervisor.workers:
            port = w.info.get("metrics_port") if w.ready.is_set() else None
            yield w, port

    def collect(self):
        merged: dict[str, Metric] = {}
        up = GaugeMetricFamily("netcore_worker_up", "1 when the worker answered this scrape",
                               labels=["node", "worker"])
        for w, port in self._workers():
            status, text = _get(port, "/metrics")
            if status != 200:
                text = None
            up.add_metric([self.node, w.slot], 1 if text is not None else 0)
            if text is None:
                continue
            for family in text_string_to_metric_families(text):
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation,
                                                        family.type, family.unit)
                for s in family.samples:
                    into.add_sample(s.name, {**s.labels, "node": self.node, "worker": w.slot},
                                    s.value, s.timestamp)
        yield from merged.values()
        yield up
        yield CounterMetricFamily("netcore_worker_restarts",
                                  "Workers restarted by the supervisor after they died",
                                  value=self.supervisor.restarts)

    def app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self.metrics_app(environ, start_response)
        if path == "/healthz":
            states = {}
            for w, port in self._workers():
                states[w.slot] = _get(port, "/healthz")[0] == 200
            healthy = bool(states) and all(states.values())
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "application/json")])
            return [json.dumps({"workers": states}).encode() + b"\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: see /metrics or /healthz\n"]
