"""Prometheus metrics of one API instance (its own registry, so apps never collide in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ApiMetrics"]


class ApiMetrics:
    """Counters and gauges served by ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("traffic_api_requests_total", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.request_seconds = Histogram("traffic_api_request_seconds", "HTTP request latency (non-streaming)",
                                         ["route"], registry=r)
        self.records = Counter("traffic_api_records_total", "Kafka records ingested by kind", ["kind"], registry=r)
        self.sse_clients = Gauge("traffic_api_sse_clients", "connected SSE clients", registry=r)
        self.sse_connections = Counter("traffic_api_sse_connections_total", "SSE connections opened", registry=r)
        self.sse_events_sent = Counter("traffic_api_sse_events_sent_total", "events written to SSE clients",
                                       registry=r)
        buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
        self.sse_ready_seconds = Histogram(
            "traffic_api_sse_ready_seconds", "from the consumer's poll to a client's write being handed to the server",
            registry=r, buckets=buckets)
        self.sse_sent_seconds = Histogram(
            "traffic_api_sse_sent_seconds", "from the consumer's poll to a client's write accepted by the socket "
            "(includes waiting for a slow reader)", registry=r, buckets=buckets)
        self.loop_lag_seconds = Histogram(
            "traffic_api_event_loop_lag_seconds", "how late a 250 ms timer fires on the event loop (busy or starved)",
            registry=r, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0))
        self.gc_seconds = Histogram(
            "traffic_api_gc_seconds", "pauses of Python's cyclic garbage collector by generation", ["generation"],
            registry=r, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0))
        self.sse_lagged = Counter("traffic_api_sse_lagged_total", "clients dropped for lagging", registry=r)
        self.sse_send_timeouts = Counter("traffic_api_sse_send_timeouts_total", "clients dropped because one "
                                         "write stayed blocked for send_timeout_s", registry=r)
        self.sse_resumed = Counter("traffic_api_sse_resumed_total", "connections resumed from Last-Event-ID",
                                   registry=r)
        self.rate_limited = Counter("traffic_api_rate_limited_total", "requests refused by the rate limit",
                                    registry=r)
        self.hub_last_id = Gauge("traffic_api_hub_last_event_id", "id of the newest event", registry=r)
        self.decode_errors = Gauge("traffic_api_kafka_decode_errors", "undecodable records skipped", registry=r)
        self.assigned_partitions = Gauge("traffic_api_kafka_partitions", "partitions assigned to the consumer",
                                         registry=r)
