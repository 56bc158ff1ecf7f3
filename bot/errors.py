"""The bot's exceptions, one tree so callers can catch at the level they care about.

BotError
├── ConfigError            bot.toml is wrong; carries every problem, each naming its key
├── TemplateProblem        a template does not compile or render
├── InstanceLocked         another bot process holds this database
├── StoreUnavailable       the database cannot be used now (full, read-only, locked, I/O)
│   └── TransactionAborted the database rolled a whole transaction back by itself
├── WebhookError           a client sent something we refuse; carries the HTTP status
│   ├── AuthError          401: missing or wrong key / signature (never says which)
│   ├── PayloadError       400: not UTF-8, not JSON, too deeply nested
│   ├── UnsupportedMedia   415: a Content-Type that is not JSON
│   └── SchemaError        422: valid JSON of the wrong shape; names the field path
└── DeliveryError          a sink could not deliver; says whether a retry can help
    ├── TransientDeliveryError   network, timeout, 5xx, rate limit: retry later
    ├── PermanentDeliveryError   no access, unknown channel, bot blocked: give up now
    │   └── MessageGone          the message to edit was deleted or is too old to edit
    └── TargetMoved              the chat has a new id now (a Telegram group that became a
                                 supergroup): follow it there and send again
"""

from __future__ import annotations


class BotError(Exception):
    """Base of every error the bot raises on purpose."""


class ConfigError(BotError):
    """The configuration is invalid; `problems` lists each one, prefixed by its key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class TemplateProblem(BotError):
    """A template failed to compile or render; the message names the template and line."""


class InstanceLocked(BotError):
    """Another bot process runs on this database; `pid` is the holder's, when it wrote one."""

    def __init__(self, lock_path: str, pid: int | None) -> None:
        self.lock_path = lock_path
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"another bot ({holder}) is already running on this database "
            f"(lock {lock_path}); stop it first"
        )


class DatabaseTooNew(BotError):
    """The database was written by a newer version of the bot; this one cannot use it."""


class StoreUnavailable(BotError):
    """The database refused a read or write for now: disk full, read-only, locked, I/O error.

    Nothing was changed by the failed call. `busy` is True when another connection held a
    lock past the wait, which usually clears within moments; `code` is SQLite's error name
    (SQLITE_FULL, SQLITE_READONLY, ...) for logs and /healthz.
    """

    def __init__(self, message: str, *, code: str = "", busy: bool = False) -> None:
        self.code = code
        self.busy = busy
        super().__init__(message)


class TransactionAborted(StoreUnavailable):
    """A step inside a transaction failed and took the whole transaction with it (the
    database rolled it back itself: disk full, I/O error). Nothing of it was stored."""


class WebhookError(BotError):
    """A webhook request we refuse; `status` is the HTTP status to answer with."""

    status = 400
    #: Seconds the sender should wait before trying again (a Retry-After header), if so.
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class AuthError(WebhookError):
    """Missing or wrong credentials. The message (the answer) is deliberately vague;
    `reason` says for the bot's log which check failed, never with a secret in it."""

    status = 401

    def __init__(
        self, message: str = "missing or invalid credentials", *, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason


class NotReady(WebhookError):
    """The request cannot be taken yet (the bot is still starting what takes it): 503 with
    Retry-After, so the sender tries again instead of giving up."""

    status = 503
    retry_after = 5


class SourceNotReady(NotReady):
    """The source cannot check requests yet (what it needs is still being loaded at
    start)."""


class PayloadError(WebhookError):
    """The body is not readable JSON."""

    status = 400


class UnsupportedMedia(WebhookError):
    """The body is declared as something other than JSON."""

    status = 415


class SchemaError(WebhookError):
    """The JSON is well-formed but a field is missing or of the wrong type."""

    status = 422

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}")


class DeliveryError(BotError):
    """A sink failed to deliver a message."""

    retryable = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class TransientDeliveryError(DeliveryError):
    """Worth retrying later (network trouble, 5xx, rate limits)."""

    retryable = True


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help (no access, unknown channel, bot blocked)."""

    retryable = False


class MessageGone(PermanentDeliveryError):
    """The message to edit no longer exists (deleted by a moderator) or can't be edited."""


class TargetMoved(DeliveryError):
    """The chat was given a new id (a Telegram group upgraded to a supergroup): nothing was
    sent; the same delivery goes to `new` instead. `old` and `new` are chat ids as the
    sink's targets name them (a forum topic's "chat/thread" follows its chat)."""

    retryable = True

    def __init__(self, old: str, new: str) -> None:
        self.old = old
        self.new = new
        super().__init__(f"the chat {old} moved to {new}")
