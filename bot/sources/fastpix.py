"""FastPix: workspace webhooks signed with `FastPix-Signature: base64(hmac-sha256(key, body))`.

The key is the dashboard's Signing Secret, base64-decoded (standard or URL-safe, with or
without its `=` padding). A secret that is not valid base64 is used as its raw UTF-8
bytes instead (and a warning is logged at start-up), so a hand-made secret still works
with a sender that signs with it directly.

`video.live_stream.active` is live_start and `video.live_stream.idle` live_end;
`disabled` / `deleted` end the stream only if it is live (`details["only_if_live"]`);
`video.live_stream.updated` reports the stream's whole state (STREAM_UPDATE), from which
the dispatcher derives title and category changes; `video.media.failed` and
`video.upload.failed` are errors; every other documented type is recorded under its
own (lower-cased) type string. The streamer key is `fastpix/<stream id>`.

FastPix streams have no title or category of their own: both come from the stream's
user-supplied `metadata` (`title`, else `livestream_name`; `category`), and the display
name from `metadata.livestream_name`, the key FastPix's own examples use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from bot import events as ev
from bot.errors import AuthError, SchemaError
from bot.events import Event, LiveInfo
from bot.sources.base import SIGNATURE_MISMATCH as _MISMATCH
from bot.sources.base import Fields, WebhookRequest
from bot.sources.spec import Credential, SourceSpec

if TYPE_CHECKING:
    from bot.config import SourceConfig

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "FastPix-Signature"
PLATFORM: Final = "fastpix"
#: FastPix's hosted web player, and the HLS URL its docs build from a playback id.
#: (FastPix is moving its hosts from .io to .com; the .com names are the lasting ones.)
WATCH_URL: Final = "https://play.fastpix.com/?playbackId={playback_id}"
HLS_URL: Final = "https://stream.fastpix.com/{playback_id}.m3u8"

_BASE64_DIGITS: Final = re.compile("[A-Za-z0-9+/]*")

_LIVE: Final = "video.live_stream."
_SIMULCAST: Final = ("video.live_stream.simulcast.", "video.live_stream.simulcast_target.")

#: FastPix event type -> bot event kind, for every type the FastPix docs list.
KIND_BY_TYPE: Final[Mapping[str, str]] = {
    # Live stream lifecycle.
    "video.live_stream.active": ev.LIVE_START,
    "video.live_stream.idle": ev.LIVE_END,
    "video.live_stream.disabled": ev.LIVE_END,
    "video.live_stream.deleted": ev.LIVE_END,
    "video.live_stream.updated": ev.STREAM_UPDATE,
    "video.live_stream.created": "video.live_stream.created",
    "video.live_stream.preparing": "video.live_stream.preparing",
    "video.live_stream.connected": "video.live_stream.connected",
    "video.live_stream.recording": "video.live_stream.recording",
    "video.live_stream.disconnected": "video.live_stream.disconnected",
    "video.live_stream.enabled": "video.live_stream.enabled",
    "video.live_stream.srt_detected": "video.live_stream.srt_detected",
    "video.live_stream.rtmps_detected": "video.live_stream.rtmps_detected",
    "video.asset.created": "video.asset.created",
    # Simulcast targets: the live-webhooks page and the event reference name them
    # differently (simulcast.* vs simulcast_target.*); both are accepted.
    "video.live_stream.simulcast.created": "video.live_stream.simulcast.created",
    "video.live_stream.simulcast.starting": "video.live_stream.simulcast.starting",
    "video.live_stream.simulcast.broadcasting": "video.live_stream.simulcast.broadcasting",
    "video.live_stream.simulcast.deleted": "video.live_stream.simulcast.deleted",
    "video.live_stream.simulcast_target.created": "video.live_stream.simulcast_target.created",
    "video.live_stream.simulcast_target.starting": "video.live_stream.simulcast_target.starting",
    "video.live_stream.simulcast_target.broadcasting": (
        "video.live_stream.simulcast_target.broadcasting"
    ),
    "video.live_stream.simulcast_target.updated": "video.live_stream.simulcast_target.updated",
    "video.live_stream.simulcast_target.deleted": "video.live_stream.simulcast_target.deleted",
    # Media (on-demand assets, including recordings of live streams).
    "video.media.created": "video.media.created",
    "video.media.ready": "video.media.ready",
    "video.media.failed": ev.ERROR,
    "video.media.updated": "video.media.updated",
    "video.media.delete": "video.media.delete",
    "video.media.live_stream.created": "video.media.live_stream.created",
    # Direct uploads.
    "video.upload.created": "video.upload.created",
    "video.upload.media_created": "video.upload.media_created",
    "video.upload.ready": "video.upload.ready",
    "video.upload.failed": ev.ERROR,
}

#: Why a disabled or deleted stream ended, for the live_end they become.
_END_REASONS: Final[Mapping[str, str]] = {
    "video.live_stream.disabled": "disabled",
    "video.live_stream.deleted": "deleted",
}


class FastPixSource:
    """Verifies and parses FastPix webhooks."""

    kind: ClassVar[str] = "fastpix"

    def __init__(self, config: SourceConfig) -> None:
        self._name = config.name
        decoded = decode_secret(config.secret)
        self._key = decoded if decoded is not None else config.secret.encode()
        if decoded is None:
            log.warning(
                "source %r: the secret is not base64, so its raw bytes are the signing key "
                "(FastPix's Signing Secret is base64; copy it whole)",
                self._name,
            )

    @property
    def name(self) -> str:
        """The configured source name."""
        return self._name

    def __repr__(self) -> str:
        return f"FastPixSource(name={self._name!r})"

    def verify(self, request: WebhookRequest) -> None:
        """Check FastPix-Signature against the HMAC of the raw body, in constant time."""
        if not self._key:
            raise AuthError(reason="this source has no signing secret")
        header = request.header(SIGNATURE_HEADER)
        if header is None:
            raise AuthError(reason=f"no {SIGNATURE_HEADER} header")
        try:
            provided = base64.b64decode(header.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise AuthError(reason=f"{SIGNATURE_HEADER} is not base64") from None
        expected = hmac.new(self._key, request.body, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, provided):
            raise AuthError(reason=_MISMATCH)

    def parse(self, payload: Mapping[str, Any], request: WebhookRequest) -> Event | None:
        """The Event for a FastPix webhook; None for a type the FastPix docs do not list."""
        top = Fields(payload)
        raw_type = top.req_str("type")
        # One documented type is capitalised ("Video.media.live_stream.created").
        etype = raw_type.strip().lower()
        kind = KIND_BY_TYPE.get(etype)
        if kind is None:
            return None
        event_id = top.req_str("id")
        data = top.obj("data") or Fields({}, "data")
        obj = top.obj("object")
        details: dict[str, Any] = {"type": etype}
        workspace = top.obj("environment") or top.obj("workspace") or top.obj("Workspace")
        workspace_name = workspace.string("name") if workspace is not None else None
        if workspace_name:
            details["workspace"] = workspace_name
        base = Event(
            source=self._name,
            event_id=event_id,
            kind=kind,
            occurred_at=top.time("createdAt") or top.time("created_at") or request.received_at,
            received_at=request.received_at,
            platform=PLATFORM,
        )
        if etype.startswith(_SIMULCAST):
            channel = _simulcast(data, obj, details)
            return base.with_changes(channel=channel, details=details)
        if etype.startswith(_LIVE) or etype == "video.asset.created":
            return _live_event(base, etype, data, obj, details)
        return _media_event(base, etype, data, obj, details)


def _live_event(
    base: Event, etype: str, data: Fields, obj: Fields | None, details: dict[str, Any]
) -> Event:
    """A live-stream event: data is the stream (its id as `streamId` or `id`)."""
    kind = base.kind
    channel = data.id_str("streamId") or data.id_str("id")
    # The asset event's data may be the recording rather than the stream: only
    # `object`, when it names a live stream, is sure to be the stream there.
    if etype == "video.asset.created":
        channel = data.id_str("streamId") or _live_object_id(obj)
    elif channel is None and obj is not None:
        channel = obj.id_str("id")
    # A state change that names no stream could only be dropped later; say so now.
    if kind in (ev.LIVE_START, ev.LIVE_END, ev.STREAM_UPDATE) and not channel:
        raise SchemaError("data.streamId", "is required (the stream's id)")

    status = data.string("status")
    if status is not None:
        details["status"] = status
    test = data.boolean("test")
    if test is not None:
        details["test"] = test
    if etype in _END_REASONS:
        details["only_if_live"] = True
        details["reason"] = _END_REASONS[etype]

    meta = data.obj("metadata") or Fields({}, "data.metadata")
    display = meta.string("livestream_name")
    title = meta.string("title") or display
    category = meta.string("category")
    playback = _playback(data, details)
    return base.with_changes(
        channel=channel,
        display_name=display,
        url=WATCH_URL.format(playback_id=playback) if playback else None,
        live=LiveInfo(
            title=title,
            categories=(category,) if category else (),
            cover=data.string("thumbnail"),
            status=_status(kind, status),
        ),
        details=details,
    )


def _media_event(
    base: Event, etype: str, data: Fields, obj: Fields | None, details: dict[str, Any]
) -> Event:
    """A media or upload event: data is the media (or the upload), not a stream."""
    media_id = data.id_str("id") or (obj.id_str("id") if obj is not None else None)
    label = "upload" if etype.startswith("video.upload.") else "media"
    if media_id is not None:
        details[f"{label}_id"] = media_id
    status = data.string("status")
    if status is not None:
        details["status"] = status
    # A recording of a live stream may say which stream it came from.
    channel = data.id_str("liveStreamId") or data.id_str("livestreamId") or data.id_str("streamId")
    playback = _playback(data, details)
    error = None
    if base.kind == ev.ERROR:
        what = f"FastPix {label} {media_id}" if media_id else f"A FastPix {label}"
        reason = _error_reason(data)
        error = f"{what} failed: {reason}" if reason else f"{what} failed"
    return base.with_changes(
        channel=channel,
        url=WATCH_URL.format(playback_id=playback) if playback else None,
        error=error,
        details=details,
    )


def decode_secret(secret: str) -> bytes | None:
    """A Signing Secret's base64 decoding, or None if it is not base64.

    Standard and URL-safe alphabets are read alike, with or without the `=` padding
    (which a copy and paste easily drops): `+`/`-` and `/`/`_` mean the same digits, and
    the padding only restates the length. An encoding no encoder writes (a length of
    4n+1, or set bits past the last byte) is not base64. An empty secret decodes to an
    empty key, which `verify` refuses outright.
    """
    text = secret.strip().rstrip("=").replace("-", "+").replace("_", "/")
    if len(text) % 4 == 1 or not _BASE64_DIGITS.fullmatch(text):
        return None
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    # A cut or hand-made secret usually leaves stray bits in its last digit; one that
    # FastPix generated never does, so such a secret is taken as raw text instead.
    if base64.b64encode(key).decode().rstrip("=") != text:
        return None
    return key


def _status(kind: str, status: str | None) -> str | None:
    if kind == ev.LIVE_START:
        return "live"
    if kind == ev.LIVE_END:
        return "offline"
    if status == "active":
        return "live"
    if status in ("idle", "disabled"):
        return "offline"
    return None


def _live_object_id(obj: Fields | None) -> str | None:
    if obj is None or obj.string("type") not in ("live", None):
        return None
    return obj.id_str("id")


def _simulcast(data: Fields, obj: Fields | None, details: dict[str, Any]) -> str | None:
    """Details of a simulcast target; the parent stream's id (its rtmpUrl and streamKey
    are credentials for the third-party service and are never copied)."""
    simulcast_id = data.id_str("simulcastId")
    if simulcast_id is not None:
        details["simulcast_id"] = simulcast_id
    enabled = data.boolean("isEnabled")
    if enabled is not None:
        details["enabled"] = enabled
    return data.id_str("livestreamId") or (obj.id_str("id") if obj is not None else None)


#: Where the docs put playback ids, in the order they are tried.
_PLAYBACK_KEYS: Final = ("playbackIds", "playbackId", "playback_ids")


def _playback(data: Fields, details: dict[str, Any]) -> str | None:
    """The playback id to link to, recording it (and its HLS URL) in `details`.

    The docs show a string, an object with `id`, and a list of either, under three
    names. A public id (or one with no stated policy) is linked; a private or DRM id
    needs a signed token to play, so it is recorded but gives no URL.
    """
    found: list[tuple[str, str | None]] = []
    for key in _PLAYBACK_KEYS:
        found.extend(_playback_ids(data.data.get(key), f"{data.path}.{key}"))
    if not found:
        return None
    public = [pid for pid, policy in found if policy in (None, "public")]
    details["playback_id"] = public[0] if public else found[0][0]
    if not public:
        return None
    details["hls_url"] = HLS_URL.format(playback_id=public[0])
    return public[0]


def _playback_ids(value: Any, path: str) -> list[tuple[str, str | None]]:
    """(id, access policy) pairs from one playback-id field of any documented shape."""
    if value is None:
        return []
    if isinstance(value, str):
        return [(value, None)] if value.strip() else []
    if isinstance(value, Mapping):
        entry = Fields(value, path)
        pid = entry.id_str("id")
        return [(pid, entry.string("accessPolicy"))] if pid else []
    if isinstance(value, list):
        out: list[tuple[str, str | None]] = []
        for index, item in enumerate(value):
            out.extend(_playback_ids(item, f"{path}[{index}]"))
        return out
    raise SchemaError(path, "expected a playback id: a string, an object with id, or a list")


def _error_reason(data: Fields) -> str | None:
    """The failure's reason, where the payload carries one (the docs show no field for it,
    so the usual places are tried: `error`, `errors`, `errorMessage`, `message`)."""
    for key in ("error", "errors", "errorMessage", "message", "reason"):
        text = _text(data.data.get(key))
        if text:
            return text
    return None


def _text(value: Any) -> str | None:
    """Readable text from a string, a list of strings, or an object with a message."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list):
        parts = [text for item in value if (text := _text(item))]
        return "; ".join(parts) or None
    if isinstance(value, Mapping):
        for key in ("message", "messages", "reason", "type"):
            text = _text(value.get(key))
            if text:
                return text
    return None


# -- samples: one FastPix stream and its recording, in the shape of the FastPix seeds ----

_SAMPLE_STREAM: Final = "8f3c2b1a9d7e4f6a5b0c1d2e3f4a5b6c"
_SAMPLE_PLAYBACK: Final = "d1e2f3a4-b5c6-4d7e-8f9a-0b1c2d3e4f5a"
_SAMPLE_MEDIA: Final = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
_SAMPLE_LIVE_STATUS: Final[Mapping[str, str]] = {
    "video.live_stream.active": "active",
    "video.live_stream.updated": "active",
    "video.live_stream.recording": "active",
    "video.live_stream.disabled": "disabled",
}


def _sample(index: int, etype: str) -> dict[str, Any]:
    """A delivery of `etype`: its data is the stream, a simulcast target or the recording."""
    playback = [{"id": _SAMPLE_PLAYBACK, "accessPolicy": "public"}]
    data: dict[str, Any]
    if etype.startswith(_SIMULCAST):
        data = {"simulcastId": "4c5d6e7f", "livestreamId": _SAMPLE_STREAM, "isEnabled": True}
    elif etype.startswith(_LIVE) or etype == "video.asset.created":
        data = {
            "streamId": _SAMPLE_STREAM,
            "status": _SAMPLE_LIVE_STATUS.get(etype, "idle"),
            "test": False,
            "metadata": {
                "livestream_name": "Aurora Vale Live",
                "title": "Late-night synth jam",
                "category": "Music",
            },
            "thumbnail": f"https://images.fastpix.io/{_SAMPLE_PLAYBACK}/thumbnail.jpg",
            "playbackIds": playback,
        }
    else:
        failed = KIND_BY_TYPE[etype] == ev.ERROR
        data = {
            "id": _SAMPLE_MEDIA,
            "status": "failed" if failed else "ready",
            "liveStreamId": _SAMPLE_STREAM,
            "playbackIds": playback,
        }
        if failed:
            data["error"] = {"message": "Unsupported audio codec in the source file"}
    return {
        "type": etype,
        "id": f"e7d6c5b4-a392-4817-b6c5-{index:012d}",
        "object": {"type": "live", "id": _SAMPLE_STREAM},
        "environment": {"name": "Aurora Productions", "id": "43a59a2d-6d5f-41c2"},
        "data": data,
        "createdAt": "2026-03-11T05:42:38.150Z",
    }


SPEC: Final = SourceSpec(
    kind=FastPixSource.kind,
    title="FastPix",
    build=FastPixSource,
    credential=Credential.HMAC_PROVIDER,
    secret_env="FASTPIX_WEBHOOK_SECRET",
    event_types=KIND_BY_TYPE,
    config_note="set {secret_env} to that webhook's Signing Secret (FastPix makes it)",
    setup=(
        "FastPix: Org Settings > Webhooks > Create new webhook, URL to notify:\n"
        "  {webhook_url}\n"
        "FastPix makes the signing secret: open the new webhook, copy its\n"
        "Signing Secret and set {secret_env} to it in the bot's\n"
        "environment (check and run refuse to start without it)."
    ),
    samples={etype: _sample(index, etype) for index, etype in enumerate(KIND_BY_TYPE, start=1)},
    # Keys name the live stream by its id: fastpix/<live stream id>.
    channel_shape=(r"[0-9a-f]{32}", "the live stream's id (32 hex digits), not its name"),
)
