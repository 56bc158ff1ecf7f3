"""The HTTP side: `POST /webhook/<source>`, `GET /healthz` and `GET /metrics`, as an app factory.

The handler checks, in this order: draining (503), known source (404), method (405),
declared size (413), content type and content encoding (415), body size as read and as
decoded (413), body read in time (408), complete and decodable (400), credentials (401),
UTF-8 and JSON (400), payload shape (422).
Only then does the dispatcher store the event, and only after that commit does the
sender hear 202. Every refusal is JSON `{"error": ...}`; nothing a client sends produces
a 500. With metrics, each answer is counted under its outcome (bot.metrics).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

from bot.errors import (
    AuthError,
    PayloadError,
    SchemaError,
    StoreUnavailable,
    UnsupportedMedia,
    WebhookError,
)
from bot.events import Event, utcnow
from bot.logs import ThrottledLog
from bot.metrics import UNKNOWN, Metrics, WebhookOutcome, metrics_handler
from bot.pipeline.ingest import Intake
from bot.sinks.base import WebRoute
from bot.sources.base import Ignored, Source, SourceAnswer, WebhookRequest
from bot.store.process import PROCESS_ID

log = logging.getLogger(__name__)

SOURCES_KEY: Final = web.AppKey("sources", dict[str, Source])
INTAKE_KEY: Final = web.AppKey("intake", Intake)
HealthReport = Callable[[], Awaitable[dict[str, Any]]]
HEALTH_KEY: Final[web.AppKey[HealthReport]] = web.AppKey("health")
#: What keeps this process from storing webhooks now (None: nothing), for /readyz.
Readiness = Callable[[], Awaitable[str | None]]
READINESS_KEY: Final[web.AppKey[Readiness]] = web.AppKey("readiness")
LIMIT_KEY: Final = web.AppKey("max_body_bytes", int)
# (source, type) pairs already logged as ignored, so a chatty sender logs once per type.
IGNORED_KEY: Final = web.AppKey("ignored_types", set[tuple[str, str]])
BODY_TIMEOUT_KEY: Final = web.AppKey("body_timeout", float)
METRICS_KEY: Final = web.AppKey("metrics", Metrics)

# How long a sender may take to deliver a whole body; a trickle past that is refused (408)
# so slow clients cannot hold connections and memory open.
BODY_READ_TIMEOUT_SECONDS: Final = 10.0
#: Accepted webhooks logged one by one per minute before the rest are summarised.
ACCEPTED_LOG_BURST: Final = 60
# While draining, senders are told to come back after this many seconds.
DRAIN_RETRY_AFTER_SECONDS: Final = 30
# While the database refuses writes, senders are told to come back after this long.
STORE_RETRY_AFTER_SECONDS: Final = 30
# Per window, at most this many failed-auth warnings (and their access log lines).
AUTH_LOG_BURST: Final = 5
AUTH_LOG_WINDOW_SECONDS: Final = 60.0
# Set on a request whose access log line is left out (a suppressed auth failure).
_QUIET: Final = web.RequestKey("quiet_access_log", bool)
# Set on a request to a platform's route: its path as logs show it (the real one holds
# a secret).
_SHOWN: Final = web.RequestKey("shown_path", str)
_ROUTINE_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})

_JSON_TYPES: Final = ("application/json",)
# aiohttp reports this when a request has no Content-Type header at all; senders that
# omit the header still mean JSON, so only a declared non-JSON type is refused.
_NO_CONTENT_TYPE: Final = "application/octet-stream"
MAX_JSON_DEPTH: Final = 64
# The content codings _read_body undoes (x-gzip is gzip's old name, RFC 9110 8.4.1.3);
# any other is refused with 415 and this list as Accept-Encoding.
_GZIP: Final = ("gzip", "x-gzip")
_DEFLATE: Final = "deflate"
_IDENTITY: Final = "identity"
ACCEPT_ENCODING: Final = "gzip, deflate"
# More layers than anyone sends only multiply the work a small body can cause.
MAX_CONTENT_CODINGS: Final = 2

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class AuthFailureLog:
    """Rate-limits the "authentication failed" warning so a flood of bad secrets logs little.

    The first `burst` failures of each window are logged; the rest are counted and
    summarised in one line when the next window opens.
    """

    burst: int = AUTH_LOG_BURST
    window: float = AUTH_LOG_WINDOW_SECONDS
    clock: Callable[[], float] = time.monotonic
    _window_start: float = field(default=float("-inf"), init=False)
    _count: int = field(default=0, init=False)
    _suppressed: int = field(default=0, init=False)

    def failed(
        self, source: str, remote: str | None, reason: str | None = None, *, what: str = "source"
    ) -> bool:
        """Record one failure; True when it was logged, False when suppressed. `what` is
        what `source` names: a source, or a chat platform posting to its route."""
        now = self.clock()
        if now - self._window_start >= self.window:
            if self._suppressed:
                log.warning(
                    "%d more failed authentications were not logged in the last %.0fs",
                    self._suppressed,
                    now - self._window_start,
                )
            self._window_start, self._count, self._suppressed = now, 0, 0
        self._count += 1
        if self._count > self.burst:
            self._suppressed += 1
            return False
        # Never the credentials themselves: which source, who tried, and which check failed.
        log.warning(
            "authentication failed for %s %s from %s%s",
            what,
            source,
            remote or "-",
            f": {reason}" if reason else "",
        )
        if self._count == self.burst:
            log.warning(
                "further failed authentications are summarised for the next %.0fs",
                self.window,
            )
        return True


@dataclass(slots=True)
class ListenerState:
    """Mutable state of the listener: whether it drains, and the auth failure log."""

    draining: bool = False
    auth_failures: AuthFailureLog = field(default_factory=AuthFailureLog)
    #: One line per accepted webhook, the way a stream's few events a minute come; a
    #: flood (a backfill, a sender replaying its queue) is summarised once a minute, as
    #: formatting and writing a line costs the one event loop more than storing the event.
    accepted_log: ThrottledLog = field(
        default_factory=lambda: ThrottledLog(log, "accepted webhooks", burst=ACCEPTED_LOG_BURST)
    )
    #: Why a webhook was refused (4xx other than 401, which auth_failures logs): the
    #: sender sees the JSON error, the bot's admin sees this line.
    refused_log: ThrottledLog = field(
        default_factory=lambda: ThrottledLog(log, "refused webhooks")
    )


STATE_KEY: Final = web.AppKey("listener_state", ListenerState)


def start_draining(app: web.Application) -> None:
    """From now on, webhooks are answered 503 with Retry-After and /healthz is 503."""
    app[STATE_KEY].draining = True


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    """A JSON error response: `{"error": message, ...}`."""
    return web.json_response({"error": message, **extra}, status=status)


def create_app(
    *,
    sources: Mapping[str, Source],
    intake: Intake,
    max_body_bytes: int,
    health: HealthReport,
    body_timeout: float = BODY_READ_TIMEOUT_SECONDS,
    auth_failures: AuthFailureLog | None = None,
    metrics: Metrics | None = None,
    metrics_token: str | None = None,
    platform_routes: Sequence[WebRoute] = (),
    readiness: Readiness | None = None,
) -> web.Application:
    """The aiohttp application: one webhook route for all sources, /healthz, /readyz,
    /metrics, and the routes chat platforms post to (`platform_routes`, from the sinks).

    Without `metrics` there is no /metrics and nothing is counted; with `metrics_token`
    /metrics wants `Authorization: Bearer <token>`.
    """
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[_errors_as_json],
        # _read_body decodes bodies itself: aiohttp's decoder turns a corrupt gzip body
        # into a 500 with the connection dropped, and a brotli one (without the brotli
        # package) into a plain-text 400 and a logged traceback.
        handler_args={"auto_decompress": False},
    )
    app[SOURCES_KEY] = dict(sources)
    app[INTAKE_KEY] = intake
    app[HEALTH_KEY] = health
    app[LIMIT_KEY] = max_body_bytes
    app[IGNORED_KEY] = set()
    app[BODY_TIMEOUT_KEY] = body_timeout
    app[STATE_KEY] = ListenerState(auth_failures=auth_failures or AuthFailureLog())
    app.router.add_route("*", "/webhook/{source}", _webhook)
    app.router.add_get("/healthz", _healthz, allow_head=True)
    app[READINESS_KEY] = readiness or _always_ready
    app.router.add_get("/readyz", _readyz, allow_head=True)
    if metrics is not None:
        app[METRICS_KEY] = metrics
        app.router.add_get("/metrics", metrics_handler(metrics, token=metrics_token))
    for route in platform_routes:
        app.router.add_route("*", route.path, functools.partial(_platform_post, route))
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
        # Never echo the URL: its query may hold a source's key, a platform's route
        # path a secret.
        log.exception("unhandled error serving %s %s", request.method, _shown_path(request))
        if "source" in request.match_info:
            _count(request, "error")
        return json_error(500, "internal error")


def _count(request: web.Request, outcome: WebhookOutcome, event: Event | None = None) -> None:
    """Count one webhook answer, when the app has metrics."""
    metrics = request.app.get(METRICS_KEY)
    if metrics is None:
        return
    name = request.match_info.get("source", "")
    # Only configured names become label values: a scanner's random paths must not
    # each create a new series.
    source = name if name in request.app[SOURCES_KEY] else UNKNOWN
    metrics.webhook(source, event.kind if event is not None else None, outcome)


# The outcome counted for each status a WebhookError may carry.
_ERROR_OUTCOMES: Final[Mapping[int, WebhookOutcome]] = {
    400: "bad_request",
    401: "unauthorized",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    503: "unavailable",
}


def _refusal(exc: WebhookError) -> web.Response:
    """The JSON error for a refused webhook; Retry-After when the source asks for a
    retry (SourceNotReady)."""
    response = json_error(exc.status, exc.message)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


# An answer to a webhook: the response, how it is counted, and the event if one was parsed.
_Answer = tuple[web.Response, WebhookOutcome, Event | None]


async def _webhook(request: web.Request) -> web.Response:
    response, outcome, event = await _answer_webhook(request)
    _count(request, outcome, event)
    if 400 <= response.status < 500 and response.status != 401:
        _log_refusal(request, response)
    return response


async def _platform_post(route: WebRoute, request: web.Request) -> web.Response:
    """A chat platform's post (Telegram's update): read like a webhook, checked and taken
    by the sink; 200 once taken, so the platform does not post it again."""
    request[_SHOWN] = route.shown
    if request.app[STATE_KEY].draining:
        response = json_error(503, "shutting down; retry later")
        response.headers["Retry-After"] = str(DRAIN_RETRY_AFTER_SECONDS)
        response.force_close()
        return response
    if request.method != "POST":
        response = json_error(405, f"method {request.method} not allowed; use POST")
        response.headers["Allow"] = "POST"
        return response
    limit = request.app[LIMIT_KEY]
    if request.content_length is not None and request.content_length > limit:
        return json_error(413, f"request body too large (limit {limit} bytes)")
    try:
        _check_content_type(request)
        body = await _read_body(request)
        await route.receive(
            WebhookRequest(
                query=request.query, headers=request.headers, body=body, received_at=utcnow()
            )
        )
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, f"request body too large (limit {limit} bytes)")
    except _BodyTimeout:
        response = json_error(408, "request body not received in time")
        response.force_close()
        return response
    except _BodyIncomplete:
        response = json_error(400, "request body incomplete")
        response.force_close()
        return response
    except SchemaError as exc:
        return json_error(exc.status, exc.message, field=exc.path)
    except AuthError as exc:
        failures = request.app[STATE_KEY].auth_failures
        if not failures.failed(route.name, request.remote, exc.reason, what="platform"):
            request[_QUIET] = True
        return json_error(exc.status, exc.message)
    except WebhookError as exc:
        return _refusal(exc)
    return web.json_response({"status": "accepted"}, status=200)


def _shown_path(request: web.BaseRequest) -> str:
    """The request's path as logs show it: a platform route's secret left out."""
    return request.get(_SHOWN) or request.path


def _log_refusal(request: web.Request, response: web.Response) -> None:
    """One line saying why: the sender got the same words as its JSON error."""
    try:
        why = json.loads(response.text or "{}").get("error", "?")
    except ValueError:
        why = "?"
    request.app[STATE_KEY].refused_log.log(
        "webhook for %s from %s refused (%d): %s",
        request.match_info.get("source", "?"),
        request.remote or "-",
        response.status,
        why,
    )


async def _answer_webhook(request: web.Request) -> _Answer:
    if request.app[STATE_KEY].draining:
        response = json_error(503, "shutting down; retry later")
        response.headers["Retry-After"] = str(DRAIN_RETRY_AFTER_SECONDS)
        response.force_close()
        return response, "draining", None
    name = request.match_info["source"]
    source = request.app[SOURCES_KEY].get(name)
    if source is None:
        return json_error(404, f"unknown source {name!r}"), "unknown_source", None
    if request.method != "POST":
        response = json_error(405, f"method {request.method} not allowed; use POST")
        response.headers["Allow"] = "POST"
        return response, "method_not_allowed", None
    limit = request.app[LIMIT_KEY]
    too_large = f"request body too large (limit {limit} bytes)"
    if request.content_length is not None and request.content_length > limit:
        return json_error(413, too_large), "too_large", None
    try:
        _check_content_type(request)
        body = await _read_body(request)
        webhook_request = WebhookRequest(
            query=request.query,
            headers=request.headers,
            body=body,
            received_at=utcnow(),
        )
        source.verify(webhook_request)
        payload = _decode_json(body)
        parsed = source.parse(payload, webhook_request)
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, too_large), "too_large", None
    except _BodyTimeout:
        response = json_error(408, "request body not received in time")
        response.force_close()
        return response, "timeout", None
    except _BodyIncomplete:
        response = json_error(400, "request body incomplete")
        response.force_close()
        return response, "bad_request", None
    except _UnsupportedEncoding as exc:
        response = json_error(exc.status, exc.message)
        response.headers["Accept-Encoding"] = ACCEPT_ENCODING
        return response, "unsupported_media_type", None
    except SchemaError as exc:
        return json_error(exc.status, exc.message, field=exc.path), "invalid", None
    except AuthError as exc:
        if not request.app[STATE_KEY].auth_failures.failed(name, request.remote, exc.reason):
            request[_QUIET] = True
        return json_error(exc.status, exc.message), "unauthorized", None
    except WebhookError as exc:
        return _refusal(exc), _ERROR_OUTCOMES.get(exc.status, "bad_request"), None
    if not isinstance(parsed, Event):
        return _answer_unstored(request.app, name, payload, parsed)
    event = parsed
    try:
        result = await request.app[INTAKE_KEY].accept(event, raw=body)
    except StoreUnavailable as exc:
        # Nothing was stored, so nothing is acknowledged: the sender retries. The store
        # logs the outage once; one line per refused webhook would flood the log.
        log.debug("could not store event %s from %s: %s", event.event_id, name, exc)
        response = json_error(503, "storage unavailable, retry later")
        response.headers["Retry-After"] = str(STORE_RETRY_AFTER_SECONDS)
        return response, "unavailable", event
    if result.duplicate:
        response = web.json_response({"status": "duplicate", "id": event.event_id}, status=200)
        return response, "duplicate", event
    # This line says all the access log would, so the access log skips the request:
    # under load, log lines cost the bot more than storing the event does.
    request[_QUIET] = True
    request.app[STATE_KEY].accepted_log.log(
        "accepted %s %s for %s from %s (%s)",
        event.kind,
        event.event_id,
        event.streamer_key or "-",
        name,
        request.remote,
    )
    # Stored, not yet dispatched: what it notifies is decided after this answer.
    response = web.json_response(
        {"status": "accepted", "id": event.event_id, "kind": event.kind}, status=202
    )
    return response, "accepted", event


def _answer_unstored(
    app: web.Application, name: str, payload: Any, parsed: SourceAnswer | Ignored | None
) -> _Answer:
    """The answer to a request whose payload is not stored: the source's own, or 202."""
    if isinstance(parsed, SourceAnswer):
        # A handshake or a notice the source acted on: the answer is the source's own
        # (Twitch wants its challenge back as the raw body), and nothing is stored.
        answer = web.Response(
            status=parsed.status, text=parsed.text or None, content_type=parsed.content_type
        )
        return answer, "answered", None
    why = parsed.reason if parsed is not None else None
    _log_ignored_once(app, name, payload, why)
    return web.json_response({"status": "ignored"}, status=202), "ignored", None


class _BodyTimeout(Exception):
    pass


class _BodyIncomplete(Exception):
    pass


class _UnsupportedEncoding(UnsupportedMedia):
    """A Content-Encoding the bot cannot undo (415, with Accept-Encoding)."""


async def _read_body(request: web.Request) -> bytes:
    """The whole body, decoded, within the app's read timeout and size limit.

    A sender that hangs up gets nothing; an unknown Content-Encoding is refused before
    the body is read.
    """
    codings = _content_codings(request)
    try:
        async with asyncio.timeout(request.app[BODY_TIMEOUT_KEY]):
            body = await request.read()
    except TimeoutError:
        raise _BodyTimeout from None
    except (
        aiohttp.ClientPayloadError,
        web.RequestPayloadError,
        ConnectionError,
        asyncio.IncompleteReadError,
    ):
        raise _BodyIncomplete from None
    limit = request.app[LIMIT_KEY]
    # Codings are listed in the order they were applied, so they come off in reverse.
    for coding in reversed(codings):
        body = _decompress(body, coding, limit)
    return body


def _content_codings(request: web.Request) -> list[str]:
    """The body's content codings, in the order applied; 415 for one the bot cannot undo."""
    codings: list[str] = []
    for header in request.headers.getall("Content-Encoding", ()):
        for item in header.split(","):
            coding = item.strip().lower()
            if coding and coding != _IDENTITY:
                codings.append(coding)
    for coding in codings:
        if coding not in _GZIP and coding != _DEFLATE:
            raise _UnsupportedEncoding(
                f"Content-Encoding {coding[:32]!r} is not supported; "
                f"send {ACCEPT_ENCODING} or no encoding"
            )
    if len(codings) > MAX_CONTENT_CODINGS:
        raise _UnsupportedEncoding(
            f"at most {MAX_CONTENT_CODINGS} content codings are supported, got {len(codings)}"
        )
    return codings


def _decompress(data: bytes, coding: str, limit: int) -> bytes:
    """Undo one gzip or deflate coding; 413 once the output passes `limit`, 400 if corrupt."""
    if not data:
        return data  # an empty body is reported as such, not as broken gzip
    if coding in _GZIP:
        wbits = 16 + zlib.MAX_WBITS
    else:
        # "deflate" means the zlib format (RFC 9110 8.4.1.2), but some senders send a raw
        # deflate stream: a zlib header is method 8 with a check that makes it a multiple
        # of 31 (RFC 1950 2.2).
        zlib_header = len(data) > 1 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    out = bytearray()
    while True:
        decoder = zlib.decompressobj(wbits)
        try:
            # At most one byte past the limit is ever inflated: a bomb costs no memory.
            out += decoder.decompress(data, limit + 1 - len(out))
        except zlib.error:
            raise PayloadError(f"body is not valid {coding} data") from None
        if len(out) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(out))
        if not decoder.eof:
            raise PayloadError(f"{coding} body is truncated")
        data = decoder.unused_data
        # A gzip body may be several members one after another (RFC 1952 2.2).
        if not data or coding not in _GZIP:
            break
    if data:
        raise PayloadError(f"unexpected data after the end of the {coding} stream")
    return bytes(out)


def _check_content_type(request: web.Request) -> None:
    content_type = request.content_type
    if content_type in _JSON_TYPES or content_type.endswith("+json"):
        return
    if content_type == _NO_CONTENT_TYPE and "Content-Type" not in request.headers:
        return
    raise UnsupportedMedia(f"Content-Type must be application/json, got {content_type!r}")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        # Python reads at most sys.get_int_max_str_digits() (4300) digits; say so plainly.
        raise ValueError(f"a number of {len(text.lstrip('-'))} digits is too long") from None


# A JSON escape of a UTF-16 surrogate: json.loads joins a valid pair into one character,
# so any surrogate it leaves in a string is a lone one.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _decode_json(body: bytes) -> Any:
    if not body.strip():
        raise PayloadError("empty body; expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        payload = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
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
    if _SURROGATE_ESCAPE.search(text):
        # A string cut in the middle of an emoji (`"\ud83d"`, as JavaScript's
        # JSON.stringify writes it) is valid JSON but no valid text: SQLite cannot store
        # it. The event still counts, with U+FFFD where the half character was (what
        # Go's encoding/json does with one).
        payload = _replace_lone_surrogates(payload)
    return payload


def _replace_lone_surrogates(value: Any) -> Any:
    """`value` with every lone surrogate, in keys and strings alike, replaced by U+FFFD."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        # Recursion is safe: the depth was checked already.
        return {
            _replace_lone_surrogates(key): _replace_lone_surrogates(item)
            for key, item in value.items()
        }
    return value


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


def _log_ignored_once(app: web.Application, source: str, payload: Any, why: str | None) -> None:
    kind = why or str(payload.get("type") or payload.get("event") or "?")[:64]
    seen = app[IGNORED_KEY]
    if (source, kind) in seen:
        return
    seen.add((source, kind))
    if why is not None:
        log.info("ignoring from %s: %s", source, why)
    else:
        log.warning("ignoring %r events from %s: not a type this bot knows", kind, source)


async def _healthz(request: web.Request) -> web.Response:
    report = await request.app[HEALTH_KEY]()
    if request.app[STATE_KEY].draining:
        report = {**report, "ok": False, "draining": True}
    return web.json_response(report, status=200 if report.get("ok") else 503)


async def _readyz(request: web.Request) -> web.Response:
    """For a load balancer: 200 while this process takes webhooks (not stopping, its
    database answering), else 503 saying why. Unlike /healthz it does not depend on the
    chat platforms or the shared outbox, which fail for every process at once: a
    balancer that took them all out would refuse webhooks they could still store."""
    why = "stopping" if request.app[STATE_KEY].draining else await request.app[READINESS_KEY]()
    body: dict[str, Any] = {"ready": why is None, "process": PROCESS_ID}
    if why is not None:
        body["why"] = why
    return web.json_response(body, status=200 if why is None else 503)


async def _always_ready() -> str | None:
    return None


class RedactingAccessLogger(AbstractAccessLogger):
    """Access log lines with every query value masked: a source's `?key=` is a secret."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write one line: remote, method, path with masked query, status, size, time."""
        if request.get(_QUIET):
            return
        # Health checks and scrapes come every few seconds for months; only their
        # failures are news.
        routine = request.path in _ROUTINE_PATHS and response.status < 400
        level = logging.DEBUG if routine else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(
            level,
            '%s "%s %s" %d %d %.3fs',
            request.remote,
            request.method,
            request.get(_SHOWN) or redact_query(request.rel_url),
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
