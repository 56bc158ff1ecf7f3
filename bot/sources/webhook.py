"""Generic JSON webhooks (`kind = "webhook"`): one source kind, a `preset` per sender.

`owncast` and `blrec` read those projects' own bodies; `custom` maps any JSON through
`[sources.fields]` and `[sources.kinds]`. A request proves itself with the `?key=`
secret, as for OneLiveRec, or, for a custom sender that signs, with an HMAC of the raw
body in `signature_header` (hex or base64, with or without an `sha256=` prefix). Owncast
and blrec sign nothing (owncast `core/webhooks/webhooks.go` and blrec
`src/blrec/webhook/webhook_emitter.py` set no such header), so they use `?key=` only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from bot.errors import AuthError, SchemaError
from bot.events import Event
from bot.sources.base import SIGNATURE_MISMATCH, WebhookRequest
from bot.sources.presets import blrec, custom, owncast
from bot.sources.spec import (
    ChoiceOption,
    Credential,
    OptionTable,
    SourceSpec,
    TableOption,
    TextOption,
    UrlOption,
    entry_key,
)

if TYPE_CHECKING:
    from bot.config import SourceConfig

PRESETS: Final = ("owncast", "blrec", "custom")
#: The HMAC digests a signing sender may use, and their sizes in bytes.
ALGORITHMS: Final[Mapping[str, int]] = {"sha256": 32, "sha512": 64}

PRESET: Final = ChoiceOption("preset", PRESETS, required=True)
CHANNEL: Final = TextOption("channel")
SERVER_URL: Final = UrlOption("server_url")
SIGNATURE_HEADER: Final = TextOption("signature_header")
SIGNATURE_ALGORITHM: Final = ChoiceOption("signature_algorithm", tuple(ALGORITHMS))
FIELDS: Final = TableOption("fields")
KINDS: Final = TableOption("kinds")
PLATFORM_VALUE: Final = TextOption("platform_value")

#: Which preset each preset-specific key belongs to.
_ONLY: Final[Mapping[str, str]] = {
    "channel": "owncast",
    "server_url": "owncast",
    "fields": "custom",
    "kinds": "custom",
    "platform_value": "custom",
    "signature_header": "custom",
    "signature_algorithm": "custom",
}
_UNSIGNED: Final[Mapping[str, str]] = {
    "owncast": "Owncast cannot sign its webhooks (core/webhooks/webhooks.go sends no"
    " signature header)",
    "blrec": "blrec signs nothing (src/blrec/webhook/webhook_emitter.py)",
}
_CHANNEL: Final = re.compile(r"[^/\s]+")
_HEX: Final = re.compile(r"[0-9A-Fa-f]+")


def check_options(values: Mapping[str, object], table: OptionTable) -> None:
    """The keys each preset needs or refuses, and a custom preset's tables."""
    preset = values.get("preset")
    if not isinstance(preset, str) or not preset:
        return  # its own problem is recorded
    for key, owner in _ONLY.items():
        if values.get(key) in ("", None) or owner == preset:
            continue
        if key.startswith("signature_") and preset in _UNSIGNED:
            table.problem(key, f"{_UNSIGNED[preset]}: leave it out and give it the ?key= URL")
        else:
            table.problem(key, f"only preset {owner} takes it")
    if preset == "owncast":
        channel = values.get("channel")
        if not channel:
            table.problem("channel", "is required with preset owncast (the key owncast/<channel>)")
        elif isinstance(channel, str) and not _CHANNEL.fullmatch(channel):
            table.problem("channel", "must be one word without '/' or spaces")
        if not values.get("server_url"):
            table.problem("server_url", "is required with preset owncast (its public address)")
    elif preset == "custom":
        fields, kinds = values.get("fields"), values.get("kinds")
        platform_value = values.get("platform_value")
        custom.problems(
            fields if isinstance(fields, Mapping) else None,
            kinds if isinstance(kinds, Mapping) else None,
            platform_value if isinstance(platform_value, str) else "",
            table.problem,
            entry_key,
        )
        if values.get("signature_algorithm") and not values.get("signature_header"):
            table.problem("signature_algorithm", "has no effect without signature_header")


class WebhookSource:
    """Verifies a generic webhook (`?key=` or an HMAC header) and parses it by preset."""

    kind: ClassVar[str] = "webhook"

    def __init__(self, config: SourceConfig) -> None:
        self._name = config.name
        self._secret = config.secret.encode()
        # Empty only where the bot parses a body it was given (samples, `render
        # --event`): then the body's shape says which built-in preset it is.
        self._preset = PRESET.get(config)
        self._channel = CHANNEL.get(config)
        self._server_url = SERVER_URL.get(config)
        self._header = SIGNATURE_HEADER.get(config)
        self._algorithm = SIGNATURE_ALGORITHM.get(config) or "sha256"
        self._custom = custom.CustomMap(
            fields=dict(FIELDS.get(config)),
            kinds=dict(KINDS.get(config)),
            platform_value=PLATFORM_VALUE.get(config),
        )

    @property
    def name(self) -> str:
        """The configured source name."""
        return self._name

    def __repr__(self) -> str:
        return f"WebhookSource(name={self._name!r}, preset={self._preset!r})"

    def verify(self, request: WebhookRequest) -> None:
        """Check the HMAC header when one is configured, else `?key=`, in constant time."""
        if not self._secret:
            raise AuthError(reason="this source has no secret")
        if self._header:
            self._verify_signature(request)
            return
        key = request.query.get("key")
        if key is None:
            raise AuthError(reason="the URL has no ?key= (use the webhook URL init printed)")
        if not hmac.compare_digest(key.encode(), self._secret):
            raise AuthError(reason="the ?key= does not match this source's secret")

    def _verify_signature(self, request: WebhookRequest) -> None:
        header = request.header(self._header)
        if header is None:
            raise AuthError(reason=f"no {self._header} header")
        text = header.strip()
        prefix = f"{self._algorithm}="
        if text[: len(prefix)].lower() == prefix:
            text = text[len(prefix) :]
        provided = _digest_bytes(text, ALGORITHMS[self._algorithm])
        if provided is None:
            raise AuthError(reason=f"{self._header} is neither hex nor base64 of a digest")
        expected = hmac.new(self._secret, request.body, self._algorithm).digest()
        if not hmac.compare_digest(expected, provided):
            raise AuthError(reason=SIGNATURE_MISMATCH)

    def parse(self, payload: Mapping[str, Any], request: WebhookRequest) -> Event | None:
        """The Event for this body under the source's preset; None for a type to ignore."""
        preset = self._preset or _detect(payload)
        if preset == "owncast":
            return owncast.parse(
                self._name, payload, request, channel=self._channel, server_url=self._server_url
            )
        if preset == "blrec":
            return blrec.parse(self._name, payload, request)
        return custom.parse(self._name, payload, request, self._custom)


def _detect(payload: Mapping[str, Any]) -> str:
    """Which built-in preset a body is from, by its shape (for previews without a config)."""
    if "eventData" in payload:
        return "owncast"
    if "data" in payload and "type" in payload:
        return "blrec"
    raise SchemaError(
        "body",
        "neither an Owncast {type, eventData} nor a blrec {type, id, date, data} body"
        " (a custom preset needs its config)",
    )


def _digest_bytes(text: str, size: int) -> bytes | None:
    """A digest written as hex or base64 (standard or URL-safe), or None."""
    if len(text) == 2 * size and _HEX.fullmatch(text):
        return bytes.fromhex(text)
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


SPEC: Final = SourceSpec(
    kind=WebhookSource.kind,
    title="Generic JSON webhooks",
    build=WebhookSource,
    credential=Credential.QUERY_KEY,
    event_types={**owncast.KIND_BY_TYPE, **blrec.KIND_BY_TYPE},
    webhook_url="{url}?key={secret}",
    config_note=(
        "preset is owncast, blrec or custom (docs/sources.md); for owncast set channel\n"
        "and server_url to your server's; for blrec remove both"
    ),
    setup=(
        "Owncast: Admin > Integrations > Webhooks > Create Webhook, with this URL and the\n"
        "stream events (started, stopped, title updated) ticked:\n"
        "  {webhook_url}\n"
        "blrec: Settings > Webhooks, add this URL with live began/ended and room change\n"
        'ticked (then set preset = "blrec" in {config}, without channel and server_url).'
    ),
    samples={**owncast.SAMPLES, **blrec.SAMPLES},
    options=(
        PRESET,
        CHANNEL,
        SERVER_URL,
        SIGNATURE_HEADER,
        SIGNATURE_ALGORITHM,
        FIELDS,
        KINDS,
        PLATFORM_VALUE,
    ),
    check=check_options,
    init_values={
        "preset": "owncast",
        "channel": "mystream",
        "server_url": "https://owncast.example.com",
    },
    # Owncast and blrec run on the streamer's own machines, often beside the bot.
    from_internet=False,
)
