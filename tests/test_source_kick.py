"""Kick source: its config keys, Kick's RSA signature and age checks, and each event."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from bot import events as ev
from bot.config import Config, load_config
from bot.errors import AuthError, ConfigError, SchemaError, SourceNotReady
from bot.samples import parse_sample
from bot.sources.base import WebhookRequest
from bot.sources.kick import SPEC, KickSource

# One key pair for the module: generating RSA keys is slow.
KICK_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


NOW = datetime(2026, 11, 16, 10, 11, 12, tzinfo=UTC)
STAMP = "2026-11-16T10:11:12Z"
BROADCASTER = {
    "is_anonymous": False,
    "user_id": 123456789,
    "username": "Aurora",
    "is_verified": True,
    "profile_picture": "https://files.kick.com/images/user/123456789/profile.webp",
    "channel_slug": "Aurora",
    "identity": None,
}
STARTED = "2026-11-16T10:11:05Z"
ONLINE = {
    "broadcaster": BROADCASTER,
    "is_live": True,
    "title": "Any% <b>@everyone</b>",
    "started_at": STARTED,
    "ended_at": None,
}
OFFLINE = {**ONLINE, "is_live": False, "ended_at": "2026-11-16T12:00:00Z"}
METADATA = {
    "broadcaster": BROADCASTER,
    "metadata": {
        "title": "Day 2",
        "language": "en",
        "has_mature_content": False,
        "category": {"id": 7, "name": " Celeste ", "thumbnail": "https://files.kick.com/c.webp"},
    },
}


def entry(**changes: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": "kick",
        "kind": "kick",
        "client_id": "01KICKCLIENT",
        "client_secret": "kick-client-secret-xyz",
        "channels": ["aurora", "bo"],
        "public_key": pem(KICK_KEY),
    }
    table.update(changes)
    return {k: v for k, v in table.items() if v is not None}


def load(environ: dict[str, str] | None = None, **changes: Any) -> Config:
    return load_config({"sources": [entry(**changes)]}, environ=environ or {}, base_dir=Path("."))


def build(**changes: Any) -> KickSource:
    (config,) = load(**changes).sources
    return KickSource(config)


def problems(environ: dict[str, str] | None = None, **changes: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(environ, **changes)
    return list(info.value.problems)


def signature(key: rsa.RSAPrivateKey, message_id: str, stamp: str, body: bytes) -> str:
    signed = f"{message_id}.{stamp}.".encode() + body
    return base64.b64encode(key.sign(signed, padding.PKCS1v15(), hashes.SHA256())).decode()


def delivery(
    event_type: str,
    payload: dict[str, Any],
    *,
    key: rsa.RSAPrivateKey = KICK_KEY,
    stamp: str = STAMP,
    message_id: str = "01JD7R2K7ZC9Y5W3X8Q4N6M2PA",
    received_at: datetime = NOW,
    body: bytes | None = None,
) -> tuple[dict[str, Any], WebhookRequest]:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    headers = {
        "Kick-Event-Message-Id": message_id,
        "Kick-Event-Subscription-Id": "01JD7QZZ0SUBSCRIPTION00001",
        "Kick-Event-Signature": signature(key, message_id, stamp, raw),
        "Kick-Event-Message-Timestamp": stamp,
        "Kick-Event-Type": event_type,
        "Kick-Event-Version": "1",
    }
    request = WebhookRequest(
        query={}, headers=headers, body=raw if body is None else body, received_at=received_at
    )
    return payload, request


def refused(source: KickSource, request: WebhookRequest) -> str:
    """Why `source` refused `request` (the log's reason: the answer itself says nothing)."""
    with pytest.raises(AuthError) as info:
        source.verify(request)
    assert str(info.value) == "missing or invalid credentials"
    return info.value.reason or ""


# -- config --------------------------------------------------------------------------------


def test_config_reads_every_key() -> None:
    (config,) = load(
        api_url="http://127.0.0.1:9/public/v1/",
        auth_url="http://127.0.0.1:9/oauth",
        poll_interval="30s",
        reconcile_interval="10m",
        channels=["Aurora", "bo"],
    ).sources
    source = KickSource(config)
    settings = source.follower.settings
    assert settings.client_id == "01KICKCLIENT"
    assert settings.client_secret == "kick-client-secret-xyz"
    assert settings.channels == ("aurora", "bo")
    assert settings.api_url == "http://127.0.0.1:9/public/v1"
    assert settings.poll_interval == timedelta(seconds=30)
    assert settings.reconcile_interval == timedelta(minutes=10)
    assert source.follower.key is not None  # pinned: known before any call to Kick
    for shown in (repr(config), repr(source), repr(settings)):
        assert "kick-client-secret-xyz" not in shown


def test_defaults_are_kicks_own_endpoints() -> None:
    source = build(public_key=None)
    settings = source.follower.settings
    assert settings.api_url == "https://api.kick.com/public/v1"
    assert settings.auth_url == "https://id.kick.com/oauth"
    assert settings.poll_interval == timedelta(minutes=5)
    assert settings.reconcile_interval == timedelta(hours=1)
    assert source.follower.key is None  # fetched from Kick at start


def test_client_secret_from_the_environment() -> None:
    (config,) = load(
        {"KICK_CLIENT_SECRET": "from-env"},
        client_secret=None,
        client_secret_env="KICK_CLIENT_SECRET",
    ).sources
    assert KickSource(config).follower.settings.client_secret == "from-env"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"client_id": None}, "sources[0].client_id: is required"),
        ({"client_secret": None}, "sources[0].client_secret: is required"),
        (
            {"client_secret": None, "client_secret_env": "KICK_CLIENT_SECRET"},
            "sources[0].client_secret_env: environment variable KICK_CLIENT_SECRET is not set",
        ),
        ({"channels": ["aurora", "Aurora Borealis"]}, "sources[0].channels[1]: 'Aurora Bo"),
        ({"channels": ["aurora", 7]}, "sources[0].channels[1]: expected a string, got integer"),
        ({"public_key": "MIIBIjANBgkq"}, "sources[0].public_key: is not a PEM public key"),
        ({"poll_interval": "0s"}, "sources[0].poll_interval: must be longer"),
        ({"reconcile_interval": "soon"}, "sources[0].reconcile_interval: 'soon' is not a"),
        # Kick signs with its own key: a shared secret here would be a misunderstanding.
        ({"secret": "s3cr3t-Zebra-Quokka-9931"}, "sources[0].secret: unknown key"),
        ({"secret_env": "KICK_SECRET"}, "sources[0].secret_env: unknown key"),
        ({"callback_url": "https://bot.example.com/"}, "sources[0].callback_url: unknown key"),
    ],
)
def test_mistakes_are_named_by_key(changes: dict[str, Any], expected: str) -> None:
    found = problems(**changes)
    assert any(p.startswith(expected) for p in found), found


def test_a_secret_put_in_the_wrong_key_is_not_echoed() -> None:
    found = problems(secret="s3cr3t-Zebra-Quokka-9931")
    assert not any("Zebra-Quokka" in p for p in found), found
    found = problems(client_secret=None, client_secret_env="s3cr3t-value-from-kick!")
    assert any("client_secret_env: must name an environment variable" in p for p in found)
    assert not any("s3cr3t-value-from-kick" in p for p in found)


def test_an_elliptic_curve_key_is_refused_by_name() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    text = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    found = problems(public_key=text)
    assert any(p.startswith("sources[0].public_key: is not an RSA public key") for p in found)


def test_no_channels_is_allowed_with_a_warning() -> None:
    config = load(channels=None)
    assert any("sources[0].channels: follows no channel" in w for w in config.warnings)


# -- signature and age ---------------------------------------------------------------------


def test_a_delivery_signed_by_kicks_key_verifies() -> None:
    _payload, request = delivery("livestream.status.updated", ONLINE)
    build().verify(request)


def test_a_delivery_signed_by_another_key_is_refused() -> None:
    _payload, request = delivery("livestream.status.updated", ONLINE, key=OTHER_KEY)
    assert "does not verify with Kick's public key" in refused(build(), request)


def test_a_body_changed_after_signing_is_refused() -> None:
    changed = json.dumps({**ONLINE, "title": "Free V-Bucks"}, separators=(",", ":")).encode()
    _payload, request = delivery("livestream.status.updated", ONLINE, body=changed)
    assert "does not verify" in refused(build(), request)


def test_the_message_id_and_timestamp_are_signed_too() -> None:
    _payload, request = delivery("livestream.status.updated", ONLINE)
    headers = dict(request.headers)
    headers["Kick-Event-Message-Id"] = "01JD7R2K7ZC9Y5W3X8Q4N6M2PB"  # a replay as "new"
    assert "does not verify" in refused(build(), replace(request, headers=headers))


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (timedelta(hours=23, minutes=59), True),  # Kick retries for up to a day
        (timedelta(hours=24, minutes=1), False),
        (-timedelta(hours=23), True),
        (-timedelta(hours=25), False),
    ],
)
def test_only_messages_over_a_day_old_are_refused(offset: timedelta, accepted: bool) -> None:
    _payload, request = delivery("livestream.status.updated", ONLINE, received_at=NOW + offset)
    if accepted:
        build().verify(request)
    else:
        assert "taken for a day at most" in refused(build(), request)


@pytest.mark.parametrize(
    "missing", ["Kick-Event-Message-Id", "Kick-Event-Message-Timestamp", "Kick-Event-Signature"]
)
def test_a_missing_header_is_refused(missing: str) -> None:
    _payload, request = delivery("livestream.status.updated", ONLINE)
    headers = {k: v for k, v in request.headers.items() if k != missing}
    assert missing in refused(build(), replace(request, headers=headers))


@pytest.mark.parametrize("bad", ["not base64!", "é" * 8, ""])
def test_a_mangled_signature_is_refused_not_crashed(bad: str) -> None:
    _payload, request = delivery("livestream.status.updated", ONLINE)
    headers = {**request.headers, "Kick-Event-Signature": bad}
    assert refused(build(), replace(request, headers=headers))


def test_an_unsigned_timestamp_that_is_not_a_time_is_refused() -> None:
    _payload, request = delivery("livestream.status.updated", ONLINE, stamp="yesterday")
    assert "not an RFC 3339 time" in refused(build(), request)


def test_without_a_known_key_every_delivery_is_refused() -> None:
    _payload, request = delivery("livestream.status.updated", ONLINE)
    source = build(public_key=None)
    source.follower.key_read = True  # the database had none, Kick's API did not answer
    assert "public key is not known yet" in refused(source, request)


def test_before_the_kept_key_is_read_a_delivery_is_asked_to_come_back() -> None:
    # The listener is up before the source has read the key it keeps in the database
    # (at start): a delivery then gets 503 and Retry-After, not a refusal.
    _payload, request = delivery("livestream.status.updated", ONLINE)
    with pytest.raises(SourceNotReady) as info:
        build(public_key=None).verify(request)
    assert info.value.status == 503 and info.value.retry_after
    build().verify(request)  # a pinned key needs no reading


# -- events --------------------------------------------------------------------------------


def test_a_status_update_going_live_is_a_start_named_by_broadcaster_and_start() -> None:
    payload, request = delivery("livestream.status.updated", ONLINE)
    event = build().parse(payload, request)
    assert event is not None
    assert event.kind == ev.LIVE_START
    assert event.event_id == "live/123456789/2026-11-16T10:11:05Z"
    assert event.streamer_key == "kick/aurora"
    assert event.display_name == "Aurora"
    assert event.url == "https://kick.com/aurora"
    assert event.occurred_at == NOW
    assert event.live is not None
    assert event.live.title == "Any% <b>@everyone</b>"  # as sent; escaped per platform later
    assert event.live.avatar == BROADCASTER["profile_picture"]
    assert event.live.start_time == datetime(2026, 11, 16, 10, 11, 5, tzinfo=UTC)


def test_one_start_sent_twice_or_with_another_offset_is_one_event_id() -> None:
    source = build()
    first = source.parse(*delivery("livestream.status.updated", ONLINE))
    again = source.parse(
        *delivery(
            "livestream.status.updated",
            {**ONLINE, "started_at": "2026-11-16T21:11:05+11:00"},
            message_id="01JD7R2K7ZC9Y5W3X8Q4N6M2PC",
        )
    )
    assert first is not None and again is not None
    assert first.event_id == again.event_id


def test_a_start_seconds_off_the_one_known_is_the_same_stream() -> None:
    # The poll saw the stream first; Kick's webhook says it began two seconds later.
    source = build()
    known = datetime(2026, 11, 16, 10, 11, 3, tzinfo=UTC)
    source.follower.went_live("123456789", "aurora", known)
    event = source.parse(*delivery("livestream.status.updated", ONLINE))
    assert event is not None
    assert event.event_id == "live/123456789/2026-11-16T10:11:03Z"
    assert event.live is not None and event.live.start_time == known
    # A start hours later is a new stream, not that one.
    later = {**ONLINE, "started_at": "2026-11-16T15:00:00Z"}
    event = source.parse(*delivery("livestream.status.updated", later, message_id="01B"))
    assert event is not None and event.event_id == "live/123456789/2026-11-16T15:00:00Z"


def test_a_status_update_going_offline_is_an_end_of_that_start() -> None:
    payload, request = delivery("livestream.status.updated", OFFLINE)
    event = build().parse(payload, request)
    assert event is not None
    assert event.kind == ev.LIVE_END
    assert event.event_id == "end/123456789/2026-11-16T10:11:05Z"
    assert event.started_at == datetime(2026, 11, 16, 10, 11, 5, tzinfo=UTC)
    assert event.ended_at == datetime(2026, 11, 16, 12, 0, tzinfo=UTC)


def test_an_end_without_a_start_time_is_named_by_its_message() -> None:
    payload, request = delivery(
        "livestream.status.updated", {**OFFLINE, "started_at": None}, message_id="01END"
    )
    event = build().parse(payload, request)
    assert event is not None and event.event_id == "01END"


def test_a_start_without_a_start_time_names_the_field() -> None:
    payload, request = delivery("livestream.status.updated", {**ONLINE, "started_at": None})
    with pytest.raises(SchemaError) as info:
        build().parse(payload, request)
    assert info.value.path == "started_at"


def test_a_metadata_update_is_the_streams_state() -> None:
    payload, request = delivery("livestream.metadata.updated", METADATA, message_id="01META")
    event = build().parse(payload, request)
    assert event is not None
    assert event.kind == ev.STREAM_UPDATE
    assert event.event_id == "01META"
    assert event.live is not None
    assert (event.live.title, event.live.categories) == ("Day 2", ("Celeste",))


def test_a_metadata_update_without_a_category() -> None:
    metadata = {**METADATA["metadata"], "category": None}
    payload, request = delivery("livestream.metadata.updated", {**METADATA, "metadata": metadata})
    event = build().parse(payload, request)
    assert event is not None and event.live is not None
    assert event.live.categories == ()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"is_live": True, "started_at": STARTED}, "broadcaster"),
        ({**ONLINE, "broadcaster": {**BROADCASTER, "channel_slug": None}}, "channel_slug"),
        ({**ONLINE, "is_live": "yes"}, "is_live"),
        ({**ONLINE, "started_at": "soon"}, "started_at"),
    ],
)
def test_a_wrong_shape_names_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(SchemaError) as info:
        build().parse(*delivery("livestream.status.updated", payload))
    assert field in (info.value.path or "")


def test_kicks_other_events_are_ignored() -> None:
    payload, request = delivery("chat.message.sent", {"broadcaster": BROADCASTER})
    assert build().parse(payload, request) is None


def test_samples_parse_to_each_kind() -> None:
    kinds = {etype: parse_sample(SPEC, etype).kind for etype in SPEC.samples}
    assert kinds == {
        "livestream.status.updated": ev.LIVE_START,
        "livestream.metadata.updated": ev.STREAM_UPDATE,
    }
