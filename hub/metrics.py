"""The hub's Prometheus metrics, kept in a registry of its own (one per hub instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HubMetrics:
    """Counters and histograms for HTTP, MQTT and the database."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "hark_http_requests", "HTTP requests answered", ("route", "method", "status"), registry=self.registry
        )
        self.http_latency = Histogram(
            "hark_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_in_flight = Gauge("hark_http_requests_in_flight", "HTTP requests being handled", registry=self.registry)
        self.mqtt_received = Counter("hark_mqtt_messages_received", "MQTT messages received", ("kind",), registry=self.registry)
        self.mqtt_dropped = Counter(
            "hark_mqtt_messages_dropped", "MQTT messages dropped as invalid", ("reason",), registry=self.registry
        )
        self.mqtt_ingested = Counter(
            "hark_mqtt_ingested",
            "MQTT messages decoded and applied (outbox messages: committed)",
            ("kind",),
            registry=self.registry,
        )
        self.heartbeats_stored = Counter("hark_heartbeats_stored", "Heartbeats committed to the database", registry=self.registry)
        self.mqtt_shed = Counter(
            "hark_mqtt_shed", "QoS 0 frames the in-process broker dropped under overload", ("kind",), registry=self.registry
        )
        self.mqtt_published = Counter("hark_mqtt_messages_published", "MQTT messages published", registry=self.registry)
        self.mqtt_connected = Gauge("hark_mqtt_connected", "1 while the hub is connected to its broker", registry=self.registry)
        self.sse_clients = Gauge("hark_sse_clients", "Open SSE streams", ("stream",), registry=self.registry)
        self.sse_dropped = Counter(
            "hark_sse_clients_dropped", "SSE clients dropped for falling behind their outbox", ("stream",), registry=self.registry
        )
        # live listen (issue 23)
        self.listen_listeners = Gauge("hark_listen_listeners", "Listen sockets connected", registry=self.registry)
        self.listen_chunks = Counter(
            "hark_listen_chunks",
            "Listen chunks from nodes: relayed, or why dropped",
            ("outcome",),
            registry=self.registry,
        )
        self.listen_frames_dropped = Counter(
            "hark_listen_frames_dropped",
            "Listen frames skipped for a backed-up listener",
            registry=self.registry,
        )
        self.db_latency = Histogram(
            "hark_db_call_duration_seconds",
            "Time of one database call on a worker",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
