"""Prometheus metrics: webhook outcomes, deliveries, and the outbox and sinks at scrape time.

Each `Metrics` owns its own `CollectorRegistry`, never prometheus_client's global one, so
several apps (tests, an embedding program) can live in one process. Counters and the
delivery histogram are pushed by the code that sees the outcome; the outbox and sink
gauges are read from callbacks when Prometheus scrapes, so nothing polls.

Every label value is from a closed set, so a sender cannot grow the number of series:
sources are configured names (or "unknown"), kinds are `KNOWN_KINDS` (or "other"), and
outcomes and actions are fixed words.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Final, Literal, get_args

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from bot.errors import StoreUnavailable
from bot.pipeline.cards import DELETE, EDIT, POST
from bot.registry import KNOWN_KINDS
from bot.store import OutboxCounts

log = logging.getLogger(__name__)

#: How a webhook request ended; one value per answer web.py gives.
WebhookOutcome = Literal[
    "accepted",  # 202, stored
    "duplicate",  # 200, an event id seen before
    "ignored",  # 202, a type this bot does not know (or its config leaves out)
    "answered",  # the source answered itself, storing nothing (a handshake)
    "unknown_source",  # 404, no source by that name
    "method_not_allowed",  # 405
    "bad_request",  # 400, not UTF-8 / not JSON / body incomplete
    "unauthorized",  # 401
    "timeout",  # 408, body not received in time
    "too_large",  # 413
    "unsupported_media_type",  # 415
    "invalid",  # 422, JSON of the wrong shape
    "unavailable",  # 503, the database refused the event
    "draining",  # 503, shutting down
    "error",  # 500, a bug
]
WEBHOOK_OUTCOMES: Final[tuple[str, ...]] = get_args(WebhookOutcome)

#: How one delivery attempt ended, as the outbox worker records it.
DeliveryOutcome = Literal["sent", "retry", "failed"]
DELIVERY_OUTCOMES: Final[tuple[str, ...]] = get_args(DeliveryOutcome)

DELIVERY_ACTIONS: Final = frozenset({POST, EDIT, DELETE})
#: Outbox states, always all exported so a state that empties shows 0, not a gap.
OUTBOX_STATES: Final = ("pending", "sending", "sent", "failed", "cancelled")

# From a console print (milliseconds) to a delivery that waited out rate limits and
# retries with backoff (minutes); past 10 minutes only the count matters.
DELIVERY_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)

#: The text format `generate_latest` writes (it escapes names the 0.0.4 way).
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4

UNKNOWN: Final = "unknown"
OTHER: Final = "other"

OutboxReport = Callable[[], Awaitable[OutboxCounts]]
SinkStates = Callable[[], Mapping[str, str]]


class Metrics:
    """The bot's metrics in a registry of their own, and the text Prometheus scrapes."""

    def __init__(
        self,
        *,
        outbox: OutboxReport | None = None,
        backlog: Callable[[], Awaitable[int]] | None = None,
        sinks: SinkStates | None = None,
        clock: Callable[[], float] = time.time,
        process: bool = True,
        process_id: str | None = None,
        processes: Callable[[], int] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._webhooks = Counter(
            "streambot_webhooks",
            "Webhook requests by source, event kind and how they were answered.",
            ["source", "kind", "outcome"],
            registry=self.registry,
        )
        self._deliveries = Counter(
            "streambot_deliveries",
            "Delivery attempts by sink, action and outcome.",
            ["sink", "action", "outcome"],
            registry=self.registry,
        )
        self._delivery_seconds = Histogram(
            "streambot_delivery_seconds",
            "Seconds from accepting an event to the platform accepting its message.",
            ["sink"],
            buckets=DELIVERY_BUCKETS,
            registry=self.registry,
        )
        self._unrecorded = Gauge(
            "streambot_outbox_unrecorded",
            "Delivery outcomes (sent, failed, retry) the database refused, held in memory"
            " until it takes them.",
            ["sink"],
            registry=self.registry,
        )
        self._pruned = Counter(
            "streambot_pruned_rows",
            "Rows removed as older than [storage] retention, by table.",
            ["table"],
            registry=self.registry,
        )
        for table in ("events", "deliveries"):
            self._pruned.labels(table)  # a series from the start, 0 until a prune
        self._outbox = outbox
        self._backlog = backlog
        self._live = _LiveCollector(sinks=sinks, clock=clock, processes=processes)
        self.registry.register(self._live)
        if process_id is not None:
            # Several processes on one database are scraped one by one: each says which
            # it is (as its log lines and /healthz do), so a figure can be traced to it.
            info = Gauge(
                "streambot_process_info",
                "1, labelled with this bot process's id (host:pid:random).",
                ["process"],
                registry=self.registry,
            )
            info.labels(process_id).set(1)
        if process:
            # What the default registry would show: memory, CPU, open files, GC, Python.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def webhook(self, source: str, kind: str | None, outcome: WebhookOutcome) -> None:
        """Count one webhook request; `kind` is None when no event was parsed."""
        self._webhooks.labels(source, _kind_label(kind), outcome).inc()

    def delivery(
        self, sink: str, action: str, outcome: DeliveryOutcome, seconds: float | None = None
    ) -> None:
        """Count one delivery attempt; `seconds` (event accepted to sent) feeds the histogram."""
        action_label = action if action in DELIVERY_ACTIONS else OTHER
        self._deliveries.labels(sink, action_label, outcome).inc()
        if outcome == "sent" and seconds is not None:
            # Wall clocks can step back; a negative latency would only skew the sum.
            self._delivery_seconds.labels(sink).observe(max(seconds, 0.0))

    def pruned(self, *, events: int, deliveries: int) -> None:
        """Count rows the retention removed."""
        self._pruned.labels("events").inc(events)
        self._pruned.labels("deliveries").inc(deliveries)

    def unrecorded(self, sink: str, count: int) -> None:
        """How many of a sink's outcomes wait for the database to record them."""
        self._unrecorded.labels(sink).set(count)

    async def render(self) -> bytes:
        """The Prometheus text exposition of every metric, read now."""
        # The registry collects synchronously, so the database is read first.
        self._live.outbox = None
        self._live.backlog = None
        if self._outbox is not None:
            try:
                self._live.outbox = await self._outbox()
                if self._backlog is not None:
                    self._live.backlog = await self._backlog()
            except StoreUnavailable as exc:
                # The series go missing (what `absent()` alerts on) and the scrape still
                # serves everything else; /healthz says the same about the database.
                log.warning("metrics: cannot read the outbox: %s", exc)
        return generate_latest(self.registry)

    @property
    def content_type(self) -> str:
        """The Content-Type of `render()`'s output."""
        return CONTENT_TYPE


def _kind_label(kind: str | None) -> str:
    if kind is None:
        return UNKNOWN
    return kind if kind in KNOWN_KINDS else OTHER


class _LiveCollector:
    """Outbox and sink gauges: the outbox as `Metrics.render` read it, the sinks now."""

    def __init__(
        self,
        *,
        sinks: SinkStates | None,
        clock: Callable[[], float],
        processes: Callable[[], int] | None = None,
    ) -> None:
        self.outbox: OutboxCounts | None = None
        self.backlog: int | None = None
        self._sinks = sinks
        self._clock = clock
        self._processes = processes

    def describe(self) -> list[Metric]:
        """The families `collect` yields, without calling the callbacks at registration."""
        return [
            GaugeMetricFamily("streambot_outbox_deliveries", "", labels=["state"]),
            GaugeMetricFamily("streambot_outbox_oldest_pending_seconds", ""),
            GaugeMetricFamily("streambot_sink_up", "", labels=["sink"]),
            GaugeMetricFamily("streambot_dispatch_backlog", ""),
            GaugeMetricFamily("streambot_processes", ""),
        ]

    def collect(self) -> Iterator[Metric]:
        """Read the outbox and the sinks now."""
        if self.outbox is not None:
            yield from self._collect_outbox(self.outbox)
        if self.backlog is not None:
            yield GaugeMetricFamily(
                "streambot_dispatch_backlog",
                "Events stored and answered 202 but not yet dispatched to routes and chats.",
                value=float(self.backlog),
            )
        if self._sinks is not None:
            up = GaugeMetricFamily(
                "streambot_sink_up", "1 when the sink is running, else 0.", labels=["sink"]
            )
            for name, state in sorted(self._sinks().items()):
                up.add_metric([name], 1.0 if state == "running" else 0.0)
            yield up
        if self._processes is not None:
            yield GaugeMetricFamily(
                "streambot_processes",
                "Bot processes sharing the database (this one included) at the last"
                " heartbeat; each sends at that share of the platforms' rate limits.",
                value=float(self._processes()),
            )

    def _collect_outbox(self, counts: OutboxCounts) -> Iterator[Metric]:
        deliveries = GaugeMetricFamily(
            "streambot_outbox_deliveries", "Deliveries in the outbox by state.", labels=["state"]
        )
        # The schema's CHECK bounds the states; one added later still shows up.
        for state in sorted(set(OUTBOX_STATES) | set(counts.by_state)):
            deliveries.add_metric([state], float(counts.by_state.get(state, 0)))
        yield deliveries
        oldest = 0.0
        if counts.oldest_pending_created is not None:
            oldest = max(self._clock() - counts.oldest_pending_created, 0.0)
        yield GaugeMetricFamily(
            "streambot_outbox_oldest_pending_seconds",
            "Age of the oldest delivery not yet sent or failed; 0 when there is none.",
            value=oldest,
        )


def metrics_handler(
    metrics: Metrics, *, token: str | None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The `GET /metrics` handler; with a token it wants `Authorization: Bearer <token>`."""
    expected = token.encode() if token else None

    async def handle(request: web.Request) -> web.Response:
        if expected is not None and not _bearer_matches(request, expected):
            # Says neither what was sent nor what was expected.
            return web.json_response(
                {"error": "missing or invalid bearer token"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return web.Response(
            body=await metrics.render(), headers={"Content-Type": metrics.content_type}
        )

    return handle


def _bearer_matches(request: web.Request, expected: bytes) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Header text may carry undecodable bytes as surrogates; encode them, never raise.
    given = credentials.strip().encode("utf-8", "surrogatepass")
    return hmac.compare_digest(given, expected)
