"""Prometheus metrics, on a registry of our own so tests can read them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()

POLLS = Counter(
    "tidings_polls", "Polls finished, by source and outcome", ["source", "outcome"],
    registry=REGISTRY,
)  # fmt: skip
POLL_ERRORS = Counter("tidings_poll_errors", "Polls that failed", ["source"], registry=REGISTRY)
POLL_SECONDS = Histogram(
    "tidings_poll_duration_seconds", "Time from fetch to commit", ["source"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=REGISTRY,
)  # fmt: skip
ALERTS = Gauge(
    "tidings_source_alerts", "1 while a source is in alert (failing past [poller] alert_after)",
    ["source"], registry=REGISTRY,
)  # fmt: skip
EVENTS = Counter("tidings_events_stored", "Events appended", ["source"], registry=REGISTRY)
SUBSCRIBERS = Gauge("tidings_websocket_subscribers", "Open websocket streams", registry=REGISTRY)
DELIVERED = Counter(
    "tidings_websocket_events_sent", "Events sent over websockets", registry=REGISTRY
)
DROPPED = Counter(
    "tidings_websocket_slow_clients_dropped", "Clients closed for falling behind",
    registry=REGISTRY,
)  # fmt: skip


def render() -> bytes:
    return generate_latest(REGISTRY)
