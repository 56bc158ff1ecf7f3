"""Livepeer Studio: stream webhooks signed with `Livepeer-Signature: t=<ms>,v1=<hex hmac>`.

Only the raw body is signed; the header's `t` is not, so replay protection comes from
the body's own `timestamp` (the same value as `t`), which must be present and fresh.

`stream.started` is live_start, `stream.idle` live_end; `multistream.error`,
`asset.failed` and `task.failed` are errors; every other event Livepeer lists is
recorded under its own type string (`recording.ready` under the shared
`recording_ready` kind). The streamer key is `livepeer/<stream id>`: the id is the one
thing about a Livepeer stream that never changes (its name is free text and doubles as
the title), and a stream is what a viewer watches at `https://lvpr.tv/?v=<playbackId>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final

from bot import events as ev
from bot.durations import format_duration
from bot.errors import AuthError
from bot.events import Event, LiveInfo
from bot.sources.base import SIGNATURE_MISMATCH as _MISMATCH
from bot.sources.base import Fields, WebhookRequest
from bot.sources.spec import Credential, DurationOption, SourceSpec

if TYPE_CHECKING:
    from bot.config import SourceConfig

SIGNATURE_HEADER: Final = "Livepeer-Signature"
PLATFORM: Final = "livepeer"
# The longest clock difference a log line spells out (about 30 years).
_MAX_SHOWN_GAP_MS: Final = 10**12
_MALFORMED: Final = f"{SIGNATURE_HEADER} is malformed (expected t=<ms>,v1=<hex>)"
#: Livepeer's hosted player; it plays a stream (or asset) given its playback id.
WATCH_URL: Final = "https://lvpr.tv/?v={playback_id}"

#: Livepeer event type -> bot event kind, for every event Livepeer Studio lists.
KIND_BY_TYPE: Final[Mapping[str, str]] = {
    "stream.started": ev.LIVE_START,
    "stream.idle": ev.LIVE_END,
    "stream.detection": "stream.detection",
    "recording.started": "recording.started",
    "recording.waiting": "recording.waiting",
    "recording.ready": "recording_ready",
    "multistream.connected": "multistream.connected",
    "multistream.disconnected": "multistream.disconnected",
    "multistream.error": ev.ERROR,
    "playback.user.new": "playback.user.new",
    "asset.created": "asset.created",
    "asset.updated": "asset.updated",
    "asset.ready": "asset.ready",
    "asset.failed": ev.ERROR,
    "asset.deleted": "asset.deleted",
    "task.spawned": "task.spawned",
    "task.updated": "task.updated",
    "task.completed": "task.completed",
    "task.failed": ev.ERROR,
}

_MS: Final = timedelta(milliseconds=1)

#: How far the signed times may be from the bot's clock (`[[sources]] tolerance`).
TOLERANCE: Final = DurationOption("tolerance", default=timedelta(minutes=5), positive=True)


class LivepeerSource:
    """Verifies and parses Livepeer Studio webhooks."""

    kind: ClassVar[str] = "livepeer"

    def __init__(self, config: SourceConfig) -> None:
        self._name = config.name
        self._secret = config.secret.encode()
        self._tolerance_ms = TOLERANCE.get(config) / _MS

    @property
    def name(self) -> str:
        """The configured source name."""
        return self._name

    def __repr__(self) -> str:
        return f"LivepeerSource(name={self._name!r})"

    def verify(self, request: WebhookRequest) -> None:
        """Check the signature over the raw body, then that header and body times are fresh.

        The body is read as JSON only after its signature matched. A signed body that is
        not a JSON object is left for the web layer and `parse` to reject (400/422).
        """
        if not self._secret:
            raise AuthError(reason="this source has no secret")
        header = request.header(SIGNATURE_HEADER)
        if header is None:
            raise AuthError(reason=f"no {SIGNATURE_HEADER} header")
        sent_ms, signatures = _parse_signature_header(header)
        now_ms = round(request.received_at.timestamp() * 1000)
        if abs(now_ms - sent_ms) > self._tolerance_ms:
            raise AuthError(reason=self._off_by("the signature's time t", sent_ms, now_ms))
        expected = hmac.new(self._secret, request.body, hashlib.sha256).digest()
        matched = False
        for candidate in signatures:
            matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise AuthError(reason=_MISMATCH)
        self._check_body_time(request.body, sent_ms, now_ms)

    def _check_body_time(self, body: bytes, sent_ms: int, now_ms: int) -> None:
        # `t` is not covered by the signature: without a fresh signed `timestamp` in the
        # body, a captured delivery could be replayed forever under a new header.
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return
        if not isinstance(payload, Mapping):
            return
        stamp = payload.get("timestamp")
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
            raise AuthError(reason="the signed body has no numeric timestamp")
        if not math.isfinite(stamp):
            raise AuthError(reason="the signed body's timestamp is not a number")
        if abs(stamp - now_ms) > self._tolerance_ms:
            raise AuthError(reason=self._off_by("the body's timestamp", stamp, now_ms))
        if abs(stamp - sent_ms) > self._tolerance_ms:
            raise AuthError(reason="the body's timestamp and the signature's time t differ")

    def _off_by(self, what: str, sent_ms: float, now_ms: int) -> str:
        """ "...is 7m old; tolerance 5m" (or ahead: the sender's clock is off)."""
        # Capped: a timestamp like 1e308 would overflow a timedelta (a 500, found by fuzzing).
        gap = timedelta(milliseconds=min(abs(now_ms - sent_ms), _MAX_SHOWN_GAP_MS))
        age = f"{format_duration(gap)} {'old' if sent_ms <= now_ms else 'ahead of this clock'}"
        tolerance = format_duration(timedelta(milliseconds=self._tolerance_ms))
        return f"{what} is {age}; tolerance {tolerance} (a replay, or a clock that is off)"

    def parse(self, payload: Mapping[str, Any], request: WebhookRequest) -> Event | None:
        """The Event for a Livepeer webhook; None for an event type Livepeer does not list."""
        top = Fields(payload)
        etype = top.req_str("event")
        kind = KIND_BY_TYPE.get(etype)
        if kind is None:
            return None
        event_id = top.req_str("id")
        # createdAt is when Livepeer raised the event; `timestamp` is when this delivery
        # attempt was sent, later on every retry, so it would reorder start and end.
        occurred = top.epoch_ms("createdAt") or top.epoch_ms("timestamp") or request.received_at
        # Which stream went live or idle is the whole point of those two events.
        state_event = kind in (ev.LIVE_START, ev.LIVE_END)
        stream = top.req_obj("stream") if state_event else top.obj("stream")
        body = top.obj("payload") or Fields({}, "payload")

        details: dict[str, Any] = {"type": etype}
        webhook_id = top.id_str("webhookId")
        if webhook_id is not None:
            details["webhook_id"] = webhook_id
        session_id = _session_id(top, body)

        channel: str | None = None
        display: str | None = None
        url: str | None = None
        live: LiveInfo | None = None
        if stream is not None:
            stream_id: str | None = stream.req_str("id") if state_event else stream.id_str("id")
            # A session object names its parent stream; the parent is the stable key.
            parent_id = stream.id_str("parentId")
            channel = parent_id or stream_id
            if parent_id is not None and session_id is None:
                session_id = stream_id
            display = stream.string("name")
            playback_id = stream.string("playbackId")
            if playback_id:
                url = WATCH_URL.format(playback_id=playback_id)
                details["playback_id"] = playback_id
            record = stream.boolean("record")
            if record is not None:
                details["record"] = record
            live = LiveInfo(
                title=display,
                status=_status(kind),
                live_id=session_id,
            )
        if session_id is not None:
            details["session_id"] = session_id

        error: str | None = None
        if etype.startswith("multistream."):
            error = _multistream(body, details, failed=kind == ev.ERROR)
        elif etype.startswith("asset."):
            error = _asset(body, details, failed=kind == ev.ERROR)
        elif etype.startswith("task."):
            error = _task(body, details, failed=kind == ev.ERROR)
        elif etype == "recording.ready":
            for key, name in (("recordingUrl", "recording_url"), ("mp4Url", "mp4_url")):
                value = body.string(key)
                if value:
                    details[name] = value

        return Event(
            source=self._name,
            event_id=event_id,
            kind=kind,
            occurred_at=occurred,
            received_at=request.received_at,
            platform=PLATFORM,
            channel=channel,
            display_name=display,
            url=url,
            live=live,
            error=error,
            details=details,
            # The session's recording: the ended cards link to it. The MP4 plays in any
            # browser; the HLS index (recordingUrl) needs a player, so it is second.
            replay_url=_replay_url(details) if etype == "recording.ready" else None,
        )


def _replay_url(details: Mapping[str, Any]) -> str | None:
    for key in ("mp4_url", "recording_url"):
        value = details.get(key)
        if isinstance(value, str) and value.startswith(("https://", "http://")):
            return value
    return None


def _parse_signature_header(header: str) -> tuple[int, list[bytes]]:
    """`t=<ms>,v1=<hex>[,v1=<hex>...]` -> (t, signatures); anything malformed is AuthError.

    Unknown elements (other schemes) are skipped, as Livepeer's docs say to.
    """
    sent: int | None = None
    signatures: list[bytes] = []
    for element in header.split(","):
        key, sep, value = element.strip().partition("=")
        if not sep:
            raise AuthError(reason=_MALFORMED)
        value = value.strip()
        if key == "t":
            # Unix milliseconds have 13 digits; a much longer number is not a time.
            if sent is not None or not (value.isascii() and value.isdigit()) or len(value) > 15:
                raise AuthError(reason=_MALFORMED)
            sent = int(value)
        elif key == "v1":
            try:
                signatures.append(bytes.fromhex(value))
            except ValueError:
                raise AuthError(reason=_MALFORMED) from None
    if sent is None or not signatures:
        raise AuthError(reason=_MALFORMED)
    return sent, signatures


def _status(kind: str) -> str | None:
    # The stream snapshot's isActive lags (stream.started arrives with isActive false),
    # so only the event type says whether the stream is live.
    if kind == ev.LIVE_START:
        return "live"
    if kind == ev.LIVE_END:
        return "offline"
    return None


def _session_id(top: Fields, body: Fields) -> str | None:
    """The live session (Livepeer "session") this event belongs to, where the body says."""
    session_id = top.id_str("sessionId") or body.id_str("sessionId")
    if session_id is not None:
        return session_id
    session = body.obj("session")
    return session.id_str("id") if session is not None else None


def _multistream(body: Fields, details: dict[str, Any], *, failed: bool) -> str | None:
    """Details of a multistream target; the error text when pushing to it failed."""
    target = body.obj("target")
    name = profile = None
    if target is not None:
        target_id = target.id_str("id")
        name = target.string("name")
        profile = target.string("profile")
        for key, value in (
            ("target_id", target_id),
            ("target_name", name),
            ("target_profile", profile),
        ):
            if value is not None:
                details[key] = value
    if not failed:
        return None
    where = f'target "{name}"' if name else "a target"
    if profile:
        where += f" ({profile})"
    # Livepeer sends no reason with multistream.error, only which target failed.
    reason = body.string("errorMessage") or body.string("error")
    text = f"Multistreaming to {where} failed"
    return f"{text}: {reason}" if reason else text


def _asset(body: Fields, details: dict[str, Any], *, failed: bool) -> str | None:
    """asset.* events carry `{asset: {id, snapshot}}` or, for ready/failed, `{id, snapshot}`."""
    asset = body.obj("asset") or body
    asset_id = asset.id_str("id")
    snapshot = asset.obj("snapshot")
    name = snapshot.string("name") if snapshot is not None else None
    if asset_id is not None:
        details["asset_id"] = asset_id
    if name is not None:
        details["asset_name"] = name
    if not failed:
        return None
    reason = _status_error(snapshot)
    label = f"Livepeer asset {name or asset_id or '(unknown)'} failed"
    return f"{label}: {reason}" if reason else label


def _task(body: Fields, details: dict[str, Any], *, failed: bool) -> str | None:
    """task.* events carry `{task: {id, type, snapshot}}`, plus `success` when finished."""
    task = body.obj("task")
    task_id = task_type = None
    snapshot = None
    if task is not None:
        task_id = task.id_str("id")
        task_type = task.string("type")
        snapshot = task.obj("snapshot")
        if task_id is not None:
            details["task_id"] = task_id
        if task_type is not None:
            details["task_type"] = task_type
    if not failed:
        return None
    reason = _status_error(snapshot)
    what = f"{task_type} task" if task_type else "task"
    label = f"Livepeer {what} {task_id or '(unknown)'} failed"
    return f"{label}: {reason}" if reason else label


def _status_error(snapshot: Fields | None) -> str | None:
    if snapshot is None:
        return None
    status = snapshot.obj("status")
    return status.string("errorMessage") if status is not None else None


# -- samples: one Livepeer stream, in the shape of seeds/livepeer-webhooks.txt ------------

_SAMPLE_STREAM: Final = "a4f2d3c1-7b8e-4c2a-9f1d-6e5b4a3c2d1e"
_SAMPLE_PLAYBACK: Final = "a4f2xk9q7wz3m8pd"
#: 2026-03-11T05:52:38Z, half an hour into the sample evening.
_SAMPLE_MS: Final = 1_773_208_358_000
_SAMPLE_FAILURE: Final = "Failed to transcode: unsupported codec"


def _sample(index: int, etype: str) -> dict[str, Any]:
    """A delivery of `etype` for the sample stream, with the body its family carries."""
    failed = KIND_BY_TYPE[etype] == ev.ERROR
    status = {"phase": "failed", "errorMessage": _SAMPLE_FAILURE} if failed else {"phase": "ready"}
    body: dict[str, Any] = {}
    if etype.startswith("multistream."):
        body = {"target": {"id": "yt-main", "name": "YouTube (main channel)", "profile": "720p0"}}
    elif etype.startswith("asset."):
        snapshot = {"name": "Friday stream", "status": status}
        body = {"asset": {"id": "9b7e5c3a-1d2f-4e6a-8b0c-2d4f6a8c0e1b", "snapshot": snapshot}}
    elif etype.startswith("task."):
        task_id = "c0ffee12-3456-4789-abcd-ef0123456789"
        body = {"task": {"id": task_id, "type": "transcode-file", "snapshot": {"status": status}}}
    elif etype == "recording.ready":
        base = f"https://livepeercdn.studio/recordings/{_SAMPLE_STREAM}"
        body = {"recordingUrl": f"{base}/index.m3u8", "mp4Url": f"{base}/source.mp4"}
    return {
        "id": f"6a1b2c3d-4e5f-4a6b-8c7d-{index:012d}",
        "webhookId": "3f1c2b4a-5d6e-4f70-8a9b-0c1d2e3f4a5b",
        "createdAt": _SAMPLE_MS,
        "timestamp": _SAMPLE_MS + 340,
        "event": etype,
        "sessionId": "b1c2d3e4f5a6",
        "stream": {
            "id": _SAMPLE_STREAM,
            "name": "Aurora Vale Studio",
            "playbackId": _SAMPLE_PLAYBACK,
            "record": True,
        },
        "payload": body,
    }


SPEC: Final = SourceSpec(
    kind=LivepeerSource.kind,
    title="Livepeer",
    build=LivepeerSource,
    credential=Credential.HMAC_SHARED,
    event_types=KIND_BY_TYPE,
    config_note="signed with the secret below (its sharedSecret)",
    setup=(
        "Livepeer: create the webhook with the API; sharedSecret is the secret of\n"
        'the "{name}" source in {config}:\n'
        "  curl -X POST https://livepeer.studio/api/webhook \\\n"
        '    -H "Authorization: Bearer $LIVEPEER_API_KEY" \\\n'
        "    -H 'Content-Type: application/json' \\\n"
        '    --data \'{{"name": "streambot", "url": "{webhook_url}",'
        ' "events": ["stream.started", "stream.idle", "multistream.error"],'
        ' "sharedSecret": "{secret}"}}\''
    ),
    samples={etype: _sample(index, etype) for index, etype in enumerate(KIND_BY_TYPE, start=1)},
    options=(TOLERANCE,),
    # Keys name the stream by its id (events carry no stable name): livepeer/<stream id>.
    channel_shape=(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "the stream's id (a UUID from the Livepeer dashboard), not its name",
    ),
)
