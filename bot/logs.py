"""Log output on stderr: readable text lines, or one JSON object per line for log shippers.

Every record on the way out passes a LogGuard: log lines quote what clients send (channel
names, titles, request lines in aiohttp's parser errors), so each value and message is cut
to a bounded length and secret parameters (`?key=...`) are masked wherever they appear.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TextIO

TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# One string argument of a log call is cut to this many characters: a stream title or
# channel name is far shorter, so only a hostile value is cut, and the rest of its line
# still reads.
MAX_VALUE_CHARS: Final = 500
# A whole formatted message, and each line of a traceback, is cut to this many characters.
MAX_MESSAGE_CHARS: Final = 2000
# A traceback longer than this keeps its start and its end (where the error is).
MAX_TRACEBACK_CHARS: Final = 20000
REDACTED: Final = "***"
# A ThrottledLog writes at most this many lines of its kind per window.
THROTTLE_BURST: Final = 5
THROTTLE_WINDOW_SECONDS: Final = 60.0

# A parameter whose name says it is secret (`key=`, `api_key=`, `access_token=`,
# `X-Amz-Signature=`...) and its value, as a URL's query, or a request line quoted in one of
# aiohttp's parser errors: OneLiveRec's secret travels as `?key=`. Other values (an invite
# link's client_id) stay readable.
_SECRET_PARAM: Final = re.compile(
    r"(?i)((?<![\w.-])[\w.-]*(?:key|secret|token|sig|password|auth)[\w.-]*=)"
    r"[^\s&#'\"<>]+"  # the value, up to the next parameter, quote or space
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single line of JSON; newlines inside values are escaped."""
        # getMessage(), not record.msg: filters (the Telegram token redactor) rewrite
        # msg/args and exc_text before a handler sees the record.
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry)


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to the current `sys.stderr`, looked up at each record, like logging.lastResort.

    So a stderr replaced after set-up (pytest's capture, a redirecting wrapper) still gets
    the lines instead of a stream that may be closed by then.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        """The stream records go to: whatever sys.stderr is now."""
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """Ignored: the stream is always the current sys.stderr."""


def redact_secrets(text: str) -> str:
    """`text` with the value of every secret-named parameter (`?key=...`) masked."""
    return _SECRET_PARAM.sub(lambda match: match.group(1) + REDACTED, text)


def cut(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters, else its start and how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters]"


class RecordRewriter(logging.Filter):
    """A filter that rewrites a record's message and traceback in place; never drops one.

    Subclasses say how in `rewrite` (and `rewrite_traceback`, the same by default).
    """

    def rewrite(self, text: str) -> str:
        """The message as it should be logged."""
        return text

    def rewrite_traceback(self, text: str) -> str:
        """The formatted traceback (or stack) as it should be logged."""
        return self.rewrite(text)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite message and traceback; a record is only changed where its text changes."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logging module's to report
            return True
        rewritten = self.rewrite(message)
        if rewritten != message:
            # Formatted once here, so `%` in the new text is never taken for a placeholder.
            record.msg = rewritten
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            rewritten = self.rewrite_traceback(text)
            if rewritten != text:
                record.exc_text = rewritten
        if record.stack_info:
            record.stack_info = self.rewrite_traceback(record.stack_info)
        return True


class LogGuard(RecordRewriter):
    """Bounds every value, message and traceback, and masks secret parameters in them.

    setup_logging puts one on the stderr handler, so it sees the records of every logger,
    the libraries' included (aiohttp quotes raw request lines in its parser errors).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Cut long string arguments, then bound and redact the message and traceback."""
        # Cut before formatting: a hostile channel name loses its tail, not the rest of
        # the line after it.
        record.args = _cut_args(record.args)
        return super().filter(record)

    def rewrite(self, text: str) -> str:
        """The message cut to MAX_MESSAGE_CHARS, secrets masked."""
        # Cut first, so the pattern never runs over megabytes; a value cut in half is
        # still masked up to the cut.
        return redact_secrets(cut(text, MAX_MESSAGE_CHARS))

    def rewrite_traceback(self, text: str) -> str:
        """Each line cut to MAX_MESSAGE_CHARS, the whole kept to its start and end."""
        lines = [cut(line, MAX_MESSAGE_CHARS) for line in text.split("\n")]
        text = "\n".join(lines)
        if len(text) > MAX_TRACEBACK_CHARS:
            half = MAX_TRACEBACK_CHARS // 2
            skipped = len(text) - 2 * half
            text = f"{text[:half]}\n...[{skipped} characters of traceback cut]...\n{text[-half:]}"
        return redact_secrets(text)


def _cut_args(args: Any) -> Any:
    """A record's arguments with long strings (and bytes) cut to MAX_VALUE_CHARS."""
    if isinstance(args, tuple):
        return tuple(_cut_value(value) for value in args)
    if isinstance(args, Mapping):
        return {key: _cut_value(value) for key, value in args.items()}
    return args


def _cut_value(value: Any) -> Any:
    if isinstance(value, str):
        return cut(value, MAX_VALUE_CHARS)
    if isinstance(value, bytes | bytearray) and len(value) > MAX_VALUE_CHARS:
        return bytes(value[:MAX_VALUE_CHARS]) + b"...[%d more bytes]" % (
            len(value) - MAX_VALUE_CHARS
        )
    return value


class ThrottledLog:
    """One kind of log line, at most `burst` of them per `window` seconds.

    The rest are counted and summarised in one line when the next window opens, so a
    flood (of malformed requests, say) costs a few lines a minute.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        level: int = logging.INFO,
        burst: int = THROTTLE_BURST,
        window: float = THROTTLE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._what = what
        self._level = level
        self._burst = burst
        self._window = window
        self._clock = clock
        self._window_start = float("-inf")
        self._count = 0
        self._suppressed = 0

    def log(self, msg: str, *args: object) -> bool:
        """Log `msg % args` unless this window's burst is spent; True when it was logged."""
        if not self._logger.isEnabledFor(self._level):
            return False
        now = self._clock()
        if now - self._window_start >= self._window:
            if self._suppressed:
                self._logger.log(
                    self._level,
                    "%d more %s were not logged in the last %.0fs",
                    self._suppressed,
                    self._what,
                    now - self._window_start,
                )
            self._window_start, self._count, self._suppressed = now, 0, 0
        self._count += 1
        if self._count > self._burst:
            self._suppressed += 1
            return False
        self._logger.log(self._level, msg, *args)
        if self._count == self._burst:
            self._logger.log(
                self._level,
                "further %s are summarised for the next %.0fs",
                self._what,
                self._window,
            )
        return True


def setup_logging(level: str, fmt: str) -> logging.Handler:
    """Send log records at `level` and above to stderr as `fmt` ("text" or "json").

    The handler's LogGuard bounds and redacts every record it writes. Calling it again
    replaces the handler an earlier call installed (commands call it once with the
    command-line level, then again with the config's), and leaves any other handler on
    the root logger alone.
    """
    handler = StderrHandler()
    handler.addFilter(LogGuard())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return handler
