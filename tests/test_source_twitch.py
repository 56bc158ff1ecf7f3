"""Twitch source: its config keys, Twitch's signature and age checks, and each message."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import events as ev
from bot.config import Config, load_config
from bot.errors import AuthError, ConfigError, SchemaError
from bot.samples import parse_sample
from bot.sources.base import Ignored, SourceAnswer, WebhookRequest
from bot.sources.twitch import SPEC, TwitchSource
from tests.fakes.twitch_api import rfc3339_nano, sign

SECRET = "eventsub-secret-0123456789"
NOW = datetime(2026, 11, 16, 10, 11, 12, tzinfo=UTC)
STAMP = rfc3339_nano(int(NOW.timestamp()) * 1_000_000_000 + 123_456_789)
BROADCASTER = {
    "broadcaster_user_id": "1337",
    "broadcaster_user_login": "Quinn",
    "broadcaster_user_name": "Quinn the Speedy",
}


def entry(**changes: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": "twitch",
        "kind": "twitch",
        "secret": SECRET,
        "client_id": "abc123",
        "client_secret": "client-secret-xyz",
        "callback_url": "https://bot.example.com/webhook/twitch",
        "channels": ["quinn", "mika"],
    }
    table.update(changes)
    return {k: v for k, v in table.items() if v is not None}


def load(environ: dict[str, str] | None = None, **changes: Any) -> Config:
    return load_config({"sources": [entry(**changes)]}, environ=environ or {}, base_dir=Path("."))


def build(**changes: Any) -> TwitchSource:
    (config,) = load(**changes).sources
    return TwitchSource(config)


def problems(environ: dict[str, str] | None = None, **changes: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(environ, **changes)
    return list(info.value.problems)


def message(
    message_type: str,
    payload: dict[str, Any],
    *,
    secret: str = SECRET,
    stamp: str = STAMP,
    message_id: str = "msg-1",
    received_at: datetime = NOW,
) -> tuple[dict[str, Any], WebhookRequest]:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {
        "Twitch-Eventsub-Message-Id": message_id,
        "Twitch-Eventsub-Message-Retry": "0",
        "Twitch-Eventsub-Message-Type": message_type,
        "Twitch-Eventsub-Message-Signature": sign(secret, message_id, stamp, body),
        "Twitch-Eventsub-Message-Timestamp": stamp,
        "Twitch-Eventsub-Subscription-Type": payload["subscription"]["type"],
        "Twitch-Eventsub-Subscription-Version": payload["subscription"]["version"],
    }
    request = WebhookRequest(query={}, headers=headers, body=body, received_at=received_at)
    return payload, request


def subscription(sub_type: str, version: str = "1", status: str = "enabled") -> dict[str, Any]:
    return {
        "id": "sub-1",
        "type": sub_type,
        "version": version,
        "status": status,
        "cost": 1,
        "condition": {"broadcaster_user_id": "1337"},
        "transport": {"method": "webhook", "callback": "https://bot.example.com/webhook/twitch"},
        "created_at": STAMP,
    }


def notification(sub_type: str, event: dict[str, Any], version: str = "1") -> dict[str, Any]:
    return {"subscription": subscription(sub_type, version), "event": event}


ONLINE = {**BROADCASTER, "id": "40001", "type": "live", "started_at": "2026-11-16T10:11:10Z"}


# -- config --------------------------------------------------------------------------------


def test_config_reads_every_key() -> None:
    (config,) = load(
        types=["live", "premiere"],
        api_url="http://127.0.0.1:9/helix/",
        auth_url="http://127.0.0.1:9/oauth2",
        reconcile_interval="10m",
    ).sources
    source = TwitchSource(config)
    settings = source.follower.settings
    assert settings.client_id == "abc123"
    assert settings.client_secret == "client-secret-xyz"
    assert settings.channels == ("quinn", "mika")
    assert settings.api_url == "http://127.0.0.1:9/helix"
    assert settings.reconcile_interval == timedelta(minutes=10)
    # Neither credential shows in a repr.
    for shown in (repr(config), repr(source), repr(settings)):
        assert "client-secret-xyz" not in shown
        assert SECRET not in shown


def test_defaults_are_twitchs_own_endpoints() -> None:
    settings = build().follower.settings
    assert settings.api_url == "https://api.twitch.tv/helix"
    assert settings.auth_url == "https://id.twitch.tv/oauth2"
    assert settings.reconcile_interval == timedelta(hours=1)


def test_client_secret_from_the_environment() -> None:
    (config,) = load(
        {"TWITCH_CLIENT_SECRET": "from-env"},
        client_secret=None,
        client_secret_env="TWITCH_CLIENT_SECRET",
    ).sources
    assert TwitchSource(config).follower.settings.client_secret == "from-env"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"client_id": None}, "sources[0].client_id: is required"),
        ({"client_secret": None}, "sources[0].client_secret: is required"),
        (
            {"client_secret": None, "client_secret_env": "TWITCH_CLIENT_SECRET"},
            "sources[0].client_secret_env: environment variable TWITCH_CLIENT_SECRET is not set",
        ),
        (
            {"client_secret_env": "TWITCH_CLIENT_SECRET"},
            "sources[0]: set client_secret or client_secret_env, not both",
        ),
        ({"callback_url": None}, "sources[0].callback_url: is required"),
        ({"callback_url": "bot.example.com"}, "sources[0].callback_url: expected an absolute"),
        ({"channels": ["quinn", "Quinn The Speedy"]}, "sources[0].channels[1]: 'Quinn The"),
        ({"channels": ["quinn", 7]}, "sources[0].channels[1]: expected a string, got integer"),
        ({"types": ["live", "vod"]}, "sources[0].types[1]: 'vod' is not a stream type"),
        ({"secret": "short"}, "sources[0].secret: must be 10 to 100 ASCII characters"),
        ({"reconcile_interval": "0s"}, "sources[0].reconcile_interval: must be longer"),
        ({"tolerance": "5m"}, "sources[0].tolerance: unknown key (only livepeer sources"),
    ],
)
def test_mistakes_are_named_by_key(changes: dict[str, Any], expected: str) -> None:
    found = problems(**changes)
    assert any(p.startswith(expected) for p in found), found


def test_a_client_secret_pasted_into_client_secret_env_is_not_echoed() -> None:
    found = problems(client_secret=None, client_secret_env="s3cr3t-value-from-twitch!")
    assert any("client_secret_env: must name an environment variable" in p for p in found)
    assert not any("s3cr3t-value-from-twitch" in p for p in found)


def test_a_short_secret_is_not_echoed() -> None:
    found = problems(secret="tiny-1")
    assert not any("tiny-1" in p for p in found)


def test_plain_http_callback_is_accepted_with_a_warning() -> None:
    config = load(callback_url="http://bot.example.com:8080/webhook/twitch")
    (warning,) = [w for w in config.warnings if "callback_url" in w]
    assert "https:// on port 443" in warning
    assert not [w for w in load().warnings if "callback_url" in w]


def test_no_channels_is_allowed_with_a_warning() -> None:
    config = load(channels=None)
    assert any("sources[0].channels: follows no channel" in w for w in config.warnings)


# -- signature and age ---------------------------------------------------------------------


def test_a_signed_fresh_message_verifies() -> None:
    _payload, request = message("notification", notification("stream.online", ONLINE))
    build().verify(request)


def test_a_message_signed_with_another_secret_is_refused() -> None:
    _payload, request = message(
        "notification", notification("stream.online", ONLINE), secret="another-secret-123"
    )
    with pytest.raises(AuthError) as info:
        build().verify(request)
    assert "signature does not match" in (info.value.reason or "")


def test_a_body_changed_after_signing_is_refused() -> None:
    _payload, request = message("notification", notification("stream.online", ONLINE))
    tampered = WebhookRequest(
        query={},
        headers=request.headers,
        body=request.body.replace(b"Quinn", b"Qu1nn"),
        received_at=NOW,
    )
    with pytest.raises(AuthError):
        build().verify(tampered)


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (timedelta(minutes=9, seconds=59), True),
        (timedelta(minutes=10, seconds=1), False),
        (-timedelta(minutes=10, seconds=1), False),
    ],
)
def test_messages_older_than_ten_minutes_are_refused(offset: timedelta, accepted: bool) -> None:
    _payload, request = message(
        "notification", notification("stream.online", ONLINE), received_at=NOW + offset
    )
    if accepted:
        build().verify(request)
        return
    with pytest.raises(AuthError) as info:
        build().verify(request)
    assert "Twitch's limit is 10m" in (info.value.reason or "")


@pytest.mark.parametrize(
    "missing",
    [
        "Twitch-Eventsub-Message-Id",
        "Twitch-Eventsub-Message-Timestamp",
        "Twitch-Eventsub-Message-Signature",
    ],
)
def test_a_missing_header_is_refused(missing: str) -> None:
    _payload, request = message("notification", notification("stream.online", ONLINE))
    headers = {k: v for k, v in request.headers.items() if k != missing}
    with pytest.raises(AuthError) as info:
        build().verify(
            WebhookRequest(query={}, headers=headers, body=request.body, received_at=NOW)
        )
    assert missing in (info.value.reason or "")


def test_a_non_ascii_signature_is_refused_not_crashed() -> None:
    _payload, request = message("notification", notification("stream.online", ONLINE))
    headers = {**request.headers, "Twitch-Eventsub-Message-Signature": "sha256=ü"}
    with pytest.raises(AuthError):
        build().verify(
            WebhookRequest(query={}, headers=headers, body=request.body, received_at=NOW)
        )


# -- messages ------------------------------------------------------------------------------


def test_the_challenge_is_answered_with_the_raw_string_and_nothing_else() -> None:
    challenge = "pogchamp-kappa-360noscope-vohiyo"
    payload, request = message(
        "webhook_callback_verification",
        {"challenge": challenge, "subscription": subscription("stream.online", status="pending")},
    )
    answer = build().parse(payload, request)
    assert answer == SourceAnswer(200, challenge, "text/plain")


def test_a_revocation_is_acknowledged_and_not_stored() -> None:
    payload, request = message(
        "revocation", {"subscription": subscription("stream.online", status="user_removed")}
    )
    answer = build().parse(payload, request)
    assert isinstance(answer, SourceAnswer)
    assert answer.status == 204


def test_stream_online_is_a_live_start_keyed_by_login_with_the_stream_id() -> None:
    payload, request = message("notification", notification("stream.online", ONLINE))
    event = build().parse(payload, request)
    assert isinstance(event, ev.Event)
    assert event.kind == ev.LIVE_START
    assert event.streamer_key == "twitch/quinn"
    assert event.display_name == "Quinn the Speedy"
    assert event.url == "https://twitch.tv/quinn"
    # The stream's id, not the message's: a second online for one stream is a duplicate.
    assert event.event_id == "stream.online/40001"
    assert event.live is not None
    assert event.live.live_id == "40001"
    assert event.live.start_time == datetime(2026, 11, 16, 10, 11, 10, tzinfo=UTC)
    assert event.live.cover == (
        "https://static-cdn.jtvnw.net/previews-ttv/live_user_quinn-1280x720.jpg"
    )


def test_a_second_online_for_one_stream_has_the_same_event_id() -> None:
    source = build()
    first = source.parse(*message("notification", notification("stream.online", ONLINE)))
    again = source.parse(
        *message("notification", notification("stream.online", ONLINE), message_id="msg-2")
    )
    assert isinstance(first, ev.Event) and isinstance(again, ev.Event)
    assert first.event_id == again.event_id


@pytest.mark.parametrize("stream_type", ["rerun", "premiere", "watch_party", "playlist"])
def test_only_live_streams_notify_by_default(stream_type: str) -> None:
    payload, request = message(
        "notification", notification("stream.online", {**ONLINE, "type": stream_type})
    )
    parsed = build().parse(payload, request)
    assert isinstance(parsed, Ignored)
    assert stream_type in parsed.reason


def test_types_lets_other_stream_types_notify() -> None:
    payload, request = message(
        "notification", notification("stream.online", {**ONLINE, "type": "rerun"})
    )
    event = build(types=["live", "rerun"]).parse(payload, request)
    assert isinstance(event, ev.Event)
    assert event.kind == ev.LIVE_START


def test_stream_offline_is_a_live_end_keyed_by_the_message() -> None:
    payload, request = message("notification", notification("stream.offline", BROADCASTER))
    event = build().parse(payload, request)
    assert isinstance(event, ev.Event)
    assert (event.kind, event.streamer_key, event.event_id) == (
        ev.LIVE_END,
        "twitch/quinn",
        "msg-1",
    )
    # Its time is the message's, as Twitch stamped it.
    assert event.occurred_at == datetime(2026, 11, 16, 10, 11, 12, 123456, tzinfo=UTC)


def test_channel_update_reports_the_channels_state() -> None:
    update = {
        **BROADCASTER,
        "title": "Any% <b>@everyone</b>",
        "language": "en",
        "category_id": "504461",
        "category_name": "Celeste",
        "content_classification_labels": [],
    }
    payload, request = message("notification", notification("channel.update", update, "2"))
    event = build().parse(payload, request)
    assert isinstance(event, ev.Event)
    assert event.kind == ev.STREAM_UPDATE
    assert event.live is not None
    assert event.live.title == "Any% <b>@everyone</b>"  # kept as data; escaped per sink
    assert event.live.categories == ("Celeste",)


def test_channel_update_without_a_category() -> None:
    update = {**BROADCASTER, "title": "Just talking", "category_id": "", "category_name": ""}
    payload, request = message("notification", notification("channel.update", update, "2"))
    event = build().parse(payload, request)
    assert isinstance(event, ev.Event)
    assert event.live is not None and event.live.categories == ()


def test_an_unknown_message_type_is_a_schema_error() -> None:
    payload, request = message("notification", notification("stream.online", ONLINE))
    headers = {**request.headers, "Twitch-Eventsub-Message-Type": "hello"}
    odd = WebhookRequest(query={}, headers=headers, body=request.body, received_at=NOW)
    with pytest.raises(SchemaError) as info:
        build().parse(payload, odd)
    assert "unknown message type 'hello'" in info.value.message


def test_a_notification_without_its_broadcaster_names_the_field() -> None:
    event = {"id": "40001", "type": "live", "started_at": "2026-11-16T10:11:10Z"}
    payload, request = message("notification", notification("stream.online", event))
    with pytest.raises(SchemaError) as info:
        build().parse(payload, request)
    assert info.value.path == "event.broadcaster_user_login"


def test_other_subscription_types_are_ignored() -> None:
    payload, request = message(
        "notification", notification("channel.follow", {**BROADCASTER}, "2")
    )
    assert build().parse(payload, request) is None


def test_samples_parse_to_each_kind() -> None:
    kinds = {etype: parse_sample(SPEC, etype).kind for etype in SPEC.samples}
    assert kinds == {
        "stream.online": ev.LIVE_START,
        "stream.offline": ev.LIVE_END,
        "channel.update": ev.STREAM_UPDATE,
    }
