"""The HTTP side: `POST /webhook/<source>` and `GET /healthz`, as an aiohttp app factory.

The handler checks, in this order: known source (404), method (405), declared size
(413), content type (415), body size as read (413), credentials (401), UTF-8 and JSON
(400), payload shape (422). Only then does the dispatcher store the event, and only
after that commit does the sender hear 202. Every refusal is JSON `{"error": ...}`;
nothing a client sends produces a 500.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

from bot.dispatch import Dispatcher
from bot.errors import PayloadError, SchemaError, UnsupportedMedia, WebhookError
from bot.events import utcnow
from bot.sources.base import Source, WebhookRequest

log = logging.getLogger(__name__)

SOURCES_KEY: Final = web.AppKey("sources", dict[str, Source])
DISPATCHER_KEY: Final = web.AppKey("dispatcher", Dispatcher)
HealthReport = Callable[[], dict[str, Any]]
HEALTH_KEY: Final[web.AppKey[HealthReport]] = web.AppKey("health")
LIMIT_KEY: Final = web.AppKey("max_body_bytes", int)
# (source, type) pairs already logged as ignored, so a chatty sender logs once per type.
IGNORED_KEY: Final = web.AppKey("ignored_types", set[tuple[str, str]])

_JSON_TYPES: Final = ("application/json",)
# aiohttp reports this when a request has no Content-Type header at all; senders that
# omit the header still mean JSON, so only a declared non-JSON type is refused.
_NO_CONTENT_TYPE: Final = "application/octet-stream"
MAX_JSON_DEPTH: Final = 64

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    """A JSON error response: `{"error": message, ...}`."""
    return web.json_response({"error": message, **extra}, status=status)


def create_app(
    *,
    sources: Mapping[str, Source],
    dispatcher: Dispatcher,
    max_body_bytes: int,
    health: Callable[[], dict[str, Any]],
) -> web.Application:
    """The aiohttp application: one webhook route for all configured sources, /healthz."""
    app = web.Application(client_max_size=max_body_bytes, middlewares=[_errors_as_json])
    app[SOURCES_KEY] = dict(sources)
    app[DISPATCHER_KEY] = dispatcher
    app[HEALTH_KEY] = health
    app[LIMIT_KEY] = max_body_bytes
    app[IGNORED_KEY] = set()
    app.router.add_route("*", "/webhook/{source}", _webhook)
    app.router.add_get("/healthz", _healthz, allow_head=True)
    return app


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's plain-text 404/405/413 and any crash into JSON errors."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: "no such endpoint; webhooks go to POST /webhook/<source name>",
            405: f"method {request.method} not allowed",
            413: "request body too large",
        }.get(exc.status, exc.reason)
        response = json_error(exc.status, message)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        # Never echo the URL: its query may hold a source's key.
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return json_error(500, "internal error")


async def _webhook(request: web.Request) -> web.Response:
    name = request.match_info["source"]
    source = request.app[SOURCES_KEY].get(name)
    if source is None:
        return json_error(404, f"unknown source {name!r}")
    if request.method != "POST":
        response = json_error(405, f"method {request.method} not allowed; use POST")
        response.headers["Allow"] = "POST"
        return response
    limit = request.app[LIMIT_KEY]
    if request.content_length is not None and request.content_length > limit:
        return json_error(413, f"request body too large (limit {limit} bytes)")
    try:
        _check_content_type(request)
        body = await request.read()
        webhook_request = WebhookRequest(
            query=request.query,
            headers=request.headers,
            body=body,
            received_at=utcnow(),
        )
        source.verify(webhook_request)
        payload = _decode_json(body)
        event = source.parse(payload, webhook_request)
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, f"request body too large (limit {limit} bytes)")
    except SchemaError as exc:
        return json_error(exc.status, exc.message, field=exc.path)
    except WebhookError as exc:
        return json_error(exc.status, exc.message)
    if event is None:
        _log_ignored_once(request.app, name, payload)
        return web.json_response({"status": "ignored"}, status=202)
    try:
        result = request.app[DISPATCHER_KEY].accept(event, raw=body)
    except sqlite3.Error:
        log.exception("could not store event %s from %s", event.event_id, name)
        response = json_error(503, "storage unavailable, retry later")
        response.headers["Retry-After"] = "30"
        return response
    if result.duplicate:
        return web.json_response({"status": "duplicate", "id": event.event_id}, status=200)
    log.info(
        "accepted %s %s for %s from %s: %d deliveries",
        event.kind, event.event_id, event.streamer_key or "-", name, result.deliveries,
    )
    return web.json_response(
        {
            "status": "accepted",
            "id": event.event_id,
            "kind": event.kind,
            "notified": [item.kind for item in result.notified],
            "deliveries": result.deliveries,
        },
        status=202,
    )


def _check_content_type(request: web.Request) -> None:
    content_type = request.content_type
    if content_type in _JSON_TYPES or content_type.endswith("+json"):
        return
    if content_type == _NO_CONTENT_TYPE and "Content-Type" not in request.headers:
        return
    raise UnsupportedMedia(f"Content-Type must be application/json, got {content_type!r}")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _decode_json(body: bytes) -> Any:
    if not body.strip():
        raise PayloadError("empty body; expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        payload = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise PayloadError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise PayloadError(f"JSON nested too deeply (limit {MAX_JSON_DEPTH})") from None
    if _depth(payload) > MAX_JSON_DEPTH:
        raise PayloadError(f"JSON nested too deeply (limit {MAX_JSON_DEPTH})")
    if not isinstance(payload, dict):
        raise SchemaError("body", "expected a JSON object")
    return payload


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _log_ignored_once(app: web.Application, source: str, payload: Any) -> None:
    kind = str(payload.get("type") or payload.get("event") or "?")[:64]
    seen = app[IGNORED_KEY]
    if (source, kind) not in seen:
        seen.add((source, kind))
        log.warning("ignoring %r events from %s: not a type this bot knows", kind, source)


async def _healthz(request: web.Request) -> web.Response:
    report = request.app[HEALTH_KEY]()
    return web.json_response(report, status=200 if report.get("ok") else 503)


class RedactingAccessLogger(AbstractAccessLogger):
    """Access log lines with every query value masked: a source's `?key=` is a secret."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write one line: remote, method, path with masked query, status, size, time."""
        self.logger.info(
            '%s "%s %s" %d %d %.3fs',
            request.remote,
            request.method,
            redact_query(request.rel_url),
            response.status,
            response.body_length,
            time,
        )

    @property
    def enabled(self) -> bool:
        """Log only when the logger would emit INFO."""
        return self.logger.isEnabledFor(logging.INFO)


def redact_query(url: URL) -> str:
    """The path and query of `url`, every query value replaced by `***`."""
    if not url.query:
        return url.path
    return str(url.with_query({key: "***" for key in url.query}))
