"""GET /metrics: what Prometheus scrapes, the bearer token, and the counters web.py moves."""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bot.app import build_sources
from bot.errors import StoreUnavailable
from bot.events import Event
from bot.metrics import DELIVERY_BUCKETS, Metrics
from bot.sources.base import Source, WebhookRequest
from bot.store import OutboxCounts, Store
from bot.web import RedactingAccessLogger, start_draining
from tests.conftest import SECRET, make_config
from tests.sqlite_file import run_sql
from tests.test_web import LIVE_START, URL
from tests.waiting import store_health
from tests.webapp import pipeline_app

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
ServerFactory = Callable[..., Awaitable[Any]]

# Listed in conftest.KNOWN_SECRETS: no log line may carry it.
TOKEN = "metrics-bearer-Ibis-Tapir-7305"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = 1_800_000_000.0
JSON = {"Content-Type": "application/json"}


@dataclass
class Live:
    """What the scrape-time callbacks read; tests change it between scrapes."""

    outbox: OutboxCounts = field(default_factory=OutboxCounts)
    sinks: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def live() -> Live:
    return Live()


@pytest.fixture
def metrics(live: Live) -> Metrics:
    async def outbox() -> OutboxCounts:
        return live.outbox

    return Metrics(outbox=outbox, sinks=lambda: live.sinks, clock=lambda: NOW)


def build_app(
    tmp_path: Path,
    store: Store,
    metrics: Metrics | None,
    *,
    token: str | None = TOKEN,
    sources: Mapping[str, Source] | None = None,
) -> web.Application:
    config = make_config(tmp_path, server={"port": 0, "max_body_bytes": 2048})
    return pipeline_app(
        store,
        config,
        sources=build_sources(config) if sources is None else sources,
        max_body_bytes=config.server.max_body_bytes,
        health=store_health(store),
        metrics=metrics,
        metrics_token=token,
    )


async def serve(
    app: web.Application, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> TestClient[Any, Any]:
    # The bot's own access logger (bot.app), so the no-token-in-logs checks see real lines.
    server = await aiohttp_server(app, access_log_class=RedactingAccessLogger)
    return await aiohttp_client(server)


@pytest.fixture
async def client(
    tmp_path: Path,
    store: Store,
    metrics: Metrics,
    aiohttp_server: ServerFactory,
    aiohttp_client: ClientFactory,
) -> TestClient[Any, Any]:
    return await serve(build_app(tmp_path, store, metrics), aiohttp_server, aiohttp_client)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: TestClient[Any, Any]) -> Samples:
    """Every sample /metrics serves, keyed by (sample name, labels)."""
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200
    text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def webhooks(samples: Samples, source: str, kind: str, outcome: str) -> float | None:
    return value(samples, "streambot_webhooks_total", source=source, kind=kind, outcome=outcome)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


# -- the endpoint ---------------------------------------------------------------------------


async def test_metrics_is_prometheus_text_with_the_bot_families(
    client: TestClient[Any, Any], live: Live
) -> None:
    live.sinks = {"console": "running"}
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f.type for f in text_string_to_metric_families(await response.text())}
    assert families["streambot_outbox_deliveries"] == "gauge"
    assert families["streambot_outbox_oldest_pending_seconds"] == "gauge"
    assert families["streambot_sink_up"] == "gauge"
    # Process metrics as the default registry would have them, in the bot's own registry.
    assert "process_resident_memory_bytes" in families


async def test_webhook_counter_is_a_prometheus_counter(client: TestClient[Any, Any]) -> None:
    await client.post(URL, json=LIVE_START)
    response = await client.get("/metrics", headers=AUTH)
    families = {f.name: f.type for f in text_string_to_metric_families(await response.text())}
    assert families["streambot_webhooks"] == "counter"


async def test_each_metrics_has_its_own_registry() -> None:
    first, second = Metrics(process=False), Metrics(process=False)
    first.webhook("rec", "live_start", "accepted")
    assert b'streambot_webhooks_total{kind="live_start",outcome="accepted",source="rec"} 1.0' in (
        await first.render()
    )
    assert b"streambot_webhooks_total{" not in await second.render()


# -- webhook outcomes -------------------------------------------------------------------------


async def test_accepted_and_duplicate_are_counted_with_source_and_kind(
    client: TestClient[Any, Any],
) -> None:
    assert (await client.post(URL, json=LIVE_START)).status == 202
    assert (await client.post(URL, json=LIVE_START)).status == 200
    assert (await client.post(URL, json=LIVE_START)).status == 200
    samples = await scrape(client)
    assert webhooks(samples, "rec", "live_start", "accepted") == 1
    assert webhooks(samples, "rec", "live_start", "duplicate") == 2


async def test_unauthorized_and_invalid_are_counted(client: TestClient[Any, Any]) -> None:
    assert (await client.post("/webhook/rec?key=wrong", json=LIVE_START)).status == 401
    assert (await client.post("/webhook/rec", json=LIVE_START)).status == 401
    bad: dict[str, Any] = copy.deepcopy(LIVE_START)
    bad["data"]["channel"] = []
    assert (await client.post(URL, json=bad)).status == 422
    samples = await scrape(client)
    assert webhooks(samples, "rec", "unknown", "unauthorized") == 2
    assert webhooks(samples, "rec", "unknown", "invalid") == 1
    assert webhooks(samples, "rec", "live_start", "accepted") is None


OUTCOMES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    # name, method, url, request kwargs, status, outcome
    (
        "unknown type",
        "POST",
        URL,
        {"json": {"id": "x", "type": "stream_exploded"}},
        202,
        "ignored",
    ),
    ("not json", "POST", URL, {"data": b"{nope", "headers": JSON}, 400, "bad_request"),
    (
        "text body",
        "POST",
        URL,
        {"data": "hi", "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    (
        "too large",
        "POST",
        URL,
        {"data": b"{" + b" " * 4096 + b"}", "headers": JSON},
        413,
        "too_large",
    ),
    ("GET", "GET", URL, {}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(
    ("name", "method", "url", "kwargs", "status", "outcome"),
    OUTCOMES,
    ids=[row[0] for row in OUTCOMES],
)
async def test_each_answer_has_its_outcome(
    client: TestClient[Any, Any],
    name: str,
    method: str,
    url: str,
    kwargs: dict[str, Any],
    status: int,
    outcome: str,
) -> None:
    assert (await client.request(method, url, **kwargs)).status == status
    samples = await scrape(client)
    assert webhooks(samples, "rec", "unknown", outcome) == 1
    counted = [key for key in samples if key[0] == "streambot_webhooks_total"]
    assert len(counted) == 1


async def test_unknown_source_paths_share_one_series(client: TestClient[Any, Any]) -> None:
    # A scanner trying many paths must not mint a series per path.
    for path in ("nobody", "admin", "x" * 60):
        response = await client.post(f"/webhook/{path}?key={SECRET}", json=LIVE_START)
        assert response.status == 404
    samples = await scrape(client)
    assert webhooks(samples, "unknown", "unknown", "unknown_source") == 3
    assert not [
        labels
        for name, labels in samples
        if name == "streambot_webhooks_total" and ("source", "nobody") in labels
    ]


async def test_storage_failure_and_draining_are_counted_apart(
    tmp_path: Path,
    store: Store,
    metrics: Metrics,
    aiohttp_server: ServerFactory,
    aiohttp_client: ClientFactory,
) -> None:
    app = build_app(tmp_path, store, metrics)
    client = await serve(app, aiohttp_server, aiohttp_client)
    run_sql(store.path, "ALTER TABLE events RENAME TO events_gone")
    assert (await client.post(URL, json=LIVE_START)).status == 503
    start_draining(app)
    assert (await client.post(URL, json=LIVE_START)).status == 503
    samples = await scrape(client)
    assert webhooks(samples, "rec", "live_start", "unavailable") == 1
    assert webhooks(samples, "rec", "unknown", "draining") == 1


class _CrashingSource:
    """A source with a bug: parse raises something that is not a WebhookError."""

    kind: ClassVar[str] = "buggy"
    name = "buggy"

    def verify(self, request: WebhookRequest) -> None:
        return None

    def parse(self, payload: Mapping[str, Any], request: WebhookRequest) -> Event | None:
        raise RuntimeError("a bug in a source")


async def test_a_crash_is_counted_as_error(
    tmp_path: Path,
    store: Store,
    metrics: Metrics,
    aiohttp_server: ServerFactory,
    aiohttp_client: ClientFactory,
) -> None:
    app = build_app(tmp_path, store, metrics, sources={"buggy": _CrashingSource()})
    client = await serve(app, aiohttp_server, aiohttp_client)
    assert (await client.post("/webhook/buggy", json=LIVE_START)).status == 500
    samples = await scrape(client)
    assert webhooks(samples, "buggy", "unknown", "error") == 1


async def test_kind_labels_stay_in_a_closed_set() -> None:
    metrics = Metrics(process=False)
    metrics.webhook("rec", "made-up-kind-12345", "accepted")
    metrics.webhook("rec", None, "bad_request")
    text = (await metrics.render()).decode()
    assert 'kind="other",outcome="accepted"' in text
    assert 'kind="unknown",outcome="bad_request"' in text
    assert "made-up-kind" not in text


# -- the bearer token -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer t\u00f6ken"},
    ],
    ids=["none", "wrong", "longer", "basic", "no scheme", "empty", "non-ascii"],
)
async def test_metrics_without_the_right_token_is_401(
    client: TestClient[Any, Any], headers: dict[str, str]
) -> None:
    response = await client.get("/metrics", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    body = await response.text()
    assert "error" in (await response.json())
    assert TOKEN not in body
    assert "streambot_" not in body


async def test_metrics_with_the_right_token_is_200(client: TestClient[Any, Any]) -> None:
    for scheme in ("Bearer", "bearer"):
        response = await client.get("/metrics", headers={"Authorization": f"{scheme} {TOKEN}"})
        assert response.status == 200
        assert TOKEN not in await response.text()


async def test_the_metrics_token_never_reaches_a_log_line(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.get("/metrics", headers=AUTH)
    await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN[:-1]}"})
    await client.get(f"/metrics?token={TOKEN}")
    assert [r for r in caplog.records if r.name == "aiohttp.access"], "expected access lines"
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN[:-1] not in record.getMessage()


async def test_metrics_is_open_without_a_token(
    tmp_path: Path,
    store: Store,
    metrics: Metrics,
    aiohttp_server: ServerFactory,
    aiohttp_client: ClientFactory,
) -> None:
    app = build_app(tmp_path, store, metrics, token=None)
    client = await serve(app, aiohttp_server, aiohttp_client)
    assert (await client.get("/metrics")).status == 200


async def test_without_metrics_there_is_no_endpoint_and_webhooks_still_work(
    tmp_path: Path,
    store: Store,
    aiohttp_server: ServerFactory,
    aiohttp_client: ClientFactory,
) -> None:
    client = await serve(build_app(tmp_path, store, None), aiohttp_server, aiohttp_client)
    assert (await client.get("/metrics", headers=AUTH)).status == 404
    assert (await client.post(URL, json=LIVE_START)).status == 202


# -- read at scrape time ----------------------------------------------------------------------


async def test_outbox_and_sink_gauges_are_read_at_each_scrape(
    client: TestClient[Any, Any], live: Live
) -> None:
    live.outbox = OutboxCounts(
        by_state={"pending": 3, "failed": 1}, oldest_pending_created=NOW - 42
    )
    live.sinks = {"console": "running", "discord": "starting"}
    samples = await scrape(client)
    assert value(samples, "streambot_outbox_deliveries", state="pending") == 3
    assert value(samples, "streambot_outbox_deliveries", state="failed") == 1
    # States with no rows are 0, not missing, so a graph shows them emptying.
    assert value(samples, "streambot_outbox_deliveries", state="sending") == 0
    assert value(samples, "streambot_outbox_deliveries", state="sent") == 0
    assert value(samples, "streambot_outbox_deliveries", state="cancelled") == 0
    assert value(samples, "streambot_outbox_oldest_pending_seconds") == 42
    assert value(samples, "streambot_sink_up", sink="console") == 1
    assert value(samples, "streambot_sink_up", sink="discord") == 0

    live.outbox = OutboxCounts(by_state={"sent": 4})
    live.sinks = {"console": "running", "discord": "running"}
    samples = await scrape(client)
    assert value(samples, "streambot_outbox_deliveries", state="pending") == 0
    assert value(samples, "streambot_outbox_deliveries", state="sent") == 4
    assert value(samples, "streambot_outbox_oldest_pending_seconds") == 0
    assert value(samples, "streambot_sink_up", sink="discord") == 1


async def test_outbox_gauges_from_the_real_store(
    tmp_path: Path,
    store: Store,
    aiohttp_server: ServerFactory,
    aiohttp_client: ClientFactory,
) -> None:
    metrics = Metrics(outbox=store.outbox_counts, sinks=lambda: {"console": "running"})
    client = await serve(build_app(tmp_path, store, metrics), aiohttp_server, aiohttp_client)
    assert (await client.post(URL, json=LIVE_START)).status == 202
    samples = await scrape(client)
    assert value(samples, "streambot_outbox_deliveries", state="pending") == 1
    oldest = value(samples, "streambot_outbox_oldest_pending_seconds")
    # The delivery was queued moments ago: seconds, not the epoch or a negative clamp.
    assert oldest is not None and 0 <= oldest < 60


async def test_a_broken_database_drops_the_outbox_series_not_the_scrape(
    tmp_path: Path,
    store: Store,
    aiohttp_server: ServerFactory,
    aiohttp_client: ClientFactory,
) -> None:
    async def broken() -> OutboxCounts:
        raise StoreUnavailable("SQLITE_IOERR: disk I/O error", code="SQLITE_IOERR")

    metrics = Metrics(outbox=broken, sinks=lambda: {"console": "running"})
    client = await serve(build_app(tmp_path, store, metrics), aiohttp_server, aiohttp_client)
    samples = await scrape(client)
    assert "streambot_outbox_deliveries" not in names(samples)
    assert value(samples, "streambot_sink_up", sink="console") == 1


# -- deliveries (the outbox workers call Metrics.delivery) ----------------------------------


async def test_deliveries_are_counted_and_timed() -> None:
    metrics = Metrics(process=False)
    metrics.delivery("discord", "post", "sent", 0.3)
    metrics.delivery("discord", "post", "sent", 700.0)
    metrics.delivery("discord", "edit", "retry", None)
    metrics.delivery("telegram", "post", "failed", None)
    metrics.delivery("console", "post", "sent", -1.0)
    metrics.delivery("console", "bogus-action", "sent", None)
    samples: Samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families((await metrics.render()).decode())
        for sample in family.samples
    }

    def deliveries(sink: str, action: str, outcome: str) -> float | None:
        return value(
            samples, "streambot_deliveries_total", sink=sink, action=action, outcome=outcome
        )

    assert deliveries("discord", "post", "sent") == 2
    assert deliveries("discord", "edit", "retry") == 1
    assert deliveries("telegram", "post", "failed") == 1
    assert deliveries("console", "other", "sent") == 1

    def bucket(sink: str, le: str) -> float | None:
        return value(samples, "streambot_delivery_seconds_bucket", sink=sink, le=le)

    assert value(samples, "streambot_delivery_seconds_count", sink="discord") == 2
    assert value(samples, "streambot_delivery_seconds_sum", sink="discord") == pytest.approx(700.3)
    assert bucket("discord", "0.25") == 0
    assert bucket("discord", "0.5") == 1
    assert bucket("discord", "600.0") == 1
    assert bucket("discord", "+Inf") == 2
    # A clock that stepped back counts as instant; retries and failures are not timed.
    assert bucket("console", "0.005") == 1
    assert value(samples, "streambot_delivery_seconds_count", sink="console") == 1
    assert value(samples, "streambot_delivery_seconds_count", sink="telegram") is None


def test_delivery_buckets_span_milliseconds_to_ten_minutes() -> None:
    assert DELIVERY_BUCKETS[0] == 0.005
    assert DELIVERY_BUCKETS[-1] == 600.0
    assert list(DELIVERY_BUCKETS) == sorted(DELIVERY_BUCKETS)
