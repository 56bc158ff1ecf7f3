"""The webhook listener's connections: a deadline for request headers, one line per bad request.

aiohttp bounds how big a request's head may be (8190-byte lines, 128 header fields) but not
how long it may take: a client that sends half a header line and then nothing, or a byte
every few seconds, holds its connection until keepalive_timeout (an hour). Here each
request's head must be complete within `header_timeout` seconds of the connection opening
or, on a keep-alive connection, of the request's first byte; a connection that misses it is
closed. So a slow client holds a few kilobytes for at most `header_timeout` seconds, and
what a fast one can make the bot hold is bounded by what it sends in that time. A
keep-alive connection idle between requests is left to aiohttp's keepalive_timeout.

aiohttp answers a request it cannot parse with 400 and logs the parser's error with a
traceback that quotes the raw request line, query secret and all. Here such a request is
answered with a JSON error and logged as one line that quotes nothing the client sent,
at most a few a minute (ThrottledLog), and leaves no access log line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.streams import StreamReader

from bot.logs import ThrottledLog, cut

log = logging.getLogger(__name__)

# How long a request's head (request line and headers) may take to arrive; the body has
# its own limit (bot.web.BODY_READ_TIMEOUT_SECONDS).
HEADER_TIMEOUT_SECONDS: Final = 10.0

# Set on a request aiohttp could not parse: it was logged already, as one line.
_MALFORMED: Final = web.RequestKey("malformed_http", bool)


class ListenerRunner(web.AppRunner):
    """An AppRunner whose connections are HeaderDeadlineHandlers."""

    __slots__ = ("_header_timeout",)

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float = HEADER_TIMEOUT_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        """The app's server, made to hand out HeaderDeadlineHandlers."""
        app_server = await super()._make_server()
        return ListenerServer(app_server, header_timeout=self._header_timeout)


class ListenerServer(web.Server):
    """The app's aiohttp Server, with HeaderDeadlineHandler as the protocol of each connection.

    aiohttp has no option for the protocol class: Server.__call__ builds RequestHandler.
    It also holds the listener's throttled log lines, shared by all its connections.
    """

    def __init__(self, app_server: web.Server, *, header_timeout: float) -> None:
        super().__init__(
            app_server.request_handler,
            request_factory=app_server.request_factory,
            handler_cancellation=app_server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            # What Application._make_handler chose for each connection (the access log
            # class, debug); aiohttp is pinned to 3.14, whose Server keeps them here.
            **app_server._kwargs,
        )
        self.header_timeout = header_timeout
        self.malformed_log = ThrottledLog(log, "malformed HTTP requests")
        # Garbage or TLS as a connection's first bytes is what scanners send all day;
        # aiohttp logs it at debug for that reason, and so does this.
        self.not_http_log = ThrottledLog(log, "non-HTTP connections", level=logging.DEBUG)
        self.slow_log = ThrottledLog(log, "connections with slow request headers")

    def __call__(self) -> web.RequestHandler:
        """A new connection's protocol."""
        return HeaderDeadlineHandler(self, loop=self._loop, **self._kwargs)


class HeaderDeadlineHandler(web.RequestHandler):
    """aiohttp's connection protocol, plus the header deadline and one-line parse errors.

    A connection is between requests when every request parsed so far has been answered
    and the last one's body has all arrived. The deadline runs from the connection opening,
    or from the first byte that arrives between requests, until a request's head has been
    parsed.
    """

    __slots__ = ("_answered", "_header_bytes", "_header_timer", "_last_body", "_listener")

    def __init__(self, manager: ListenerServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._listener = manager
        self._answered = 0
        self._header_bytes = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._last_body: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start serving, with the first request's head due within the deadline."""
        super().connection_made(transport)
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        """Parse as aiohttp does; time a request's head from its first byte to its end."""
        # _request_count counts the requests aiohttp has parsed (malformed ones too).
        parsed = self._request_count
        if data and self._between_requests():
            self._header_bytes = True
            if self._header_timer is None:
                self._start_header_timer()
        super().data_received(data)
        if self._request_count != parsed:
            self._stop_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the deadline with the connection."""
        self._stop_header_timer()
        super().connection_lost(exc)

    async def finish_response(
        self,
        request: web.BaseRequest,
        resp: web.StreamResponse,
        start_time: float | None,
    ) -> tuple[web.StreamResponse, bool]:
        """Send the response as aiohttp does, then count the request as answered."""
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1
            # aiohttp goes on reading a body the handler left unread (lingering); those
            # bytes are not the next request's head.
            self._last_body = request.content

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse: one throttled line and a JSON 400."""
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        request[_MALFORMED] = True
        reason = describe_bad_request(exc)
        remote = request.remote or "-"
        if self._request_count == 1 and isinstance(exc, BadHttpMethod):
            self._listener.not_http_log.log("not an HTTP request from %s: %s", remote, reason)
        else:
            self._listener.malformed_log.log(
                "malformed HTTP request from %s: %s; answered %d", remote, reason, status
            )
        if request.writer.output_size > 0:
            # As aiohttp: a response already under way cannot be replaced by this one.
            raise ConnectionError("response already started; cannot send the error")
        response = web.json_response({"error": f"malformed HTTP request: {reason}"}, status=status)
        response.force_close()
        return response

    def log_access(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float | None
    ) -> None:
        """The access log line, except for a malformed request (its line was logged)."""
        if request.get(_MALFORMED):
            return
        super().log_access(request, response, time)

    def _between_requests(self) -> bool:
        if self._request_count != self._answered:
            return False
        if self._last_body is not None:
            if not self._last_body.is_eof():
                return False
            self._last_body = None
        return True

    def _start_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(
            self._listener.header_timeout, self._header_deadline_passed
        )

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._header_bytes = False

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        if self.transport is None or not self._between_requests():
            return
        if self._header_bytes:
            # A connection that never sent a byte is closed quietly, as aiohttp closes
            # an idle keep-alive connection; one that started a request is news.
            peer = self.peername
            host = peer[0] if isinstance(peer, tuple) else "-"
            self._listener.slow_log.log(
                "closed the connection from %s: request headers not complete within %gs",
                host,
                self._listener.header_timeout,
            )
        self.force_close()


def describe_bad_request(exc: HttpProcessingError) -> str:
    """What was wrong with a request aiohttp could not parse, quoting none of it."""
    # The parser's messages quote the offending line (a request line carries ?key=),
    # so each kind gets its own words.
    if isinstance(exc, LineTooLong):
        return f"a line longer than {exc.args[1]} bytes"
    if isinstance(exc, BadHttpMethod):
        if exc.message.startswith("Received HTTPS"):
            return "TLS (HTTPS) on the plain HTTP port"
        return "invalid method"
    if isinstance(exc, BadStatusLine):
        return "invalid request line"
    if isinstance(exc, InvalidURLError):
        return "invalid URL"
    if isinstance(exc, InvalidHeader):
        return "invalid header"
    # The rest say what is wrong before a colon and quote the request after it.
    reason = exc.message.split("\n", 1)[0].split(":", 1)[0].strip()
    return cut(reason, 100) or type(exc).__name__
