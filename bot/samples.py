"""Realistic sample events for every known kind: `python -m bot render` and template checks.

Each is a source's own sample payload (`SourceSpec.samples`) parsed by that source, so a
preview shows what the bot makes of such a webhook, and a new source brings its samples
with it. A kind several sources report comes from the first of them in the registry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from bot.config import SourceConfig
from bot.events import LIVE_END, REPLAY_READY, Event
from bot.registry import SOURCES, known_kinds
from bot.sources.base import WebhookRequest
from bot.sources.spec import SourceSpec

#: When a sample payload that carries no time of its own counts as sent.
_SAMPLE_TIME: Final = datetime(2026, 3, 11, 5, 22, 38, tzinfo=UTC)
#: How long after it was sent a sample is received: a little, as in life.
_DELIVERY_DELAY: Final = timedelta(milliseconds=212)


#: Where the sample replay lives (a replay_ready is a source's recording or archive).
SAMPLE_REPLAY_URL: Final = "https://www.twitch.tv/videos/2222222222"


def sample_event(kind: str, registry: Mapping[str, SourceSpec] = SOURCES) -> Event:
    """A realistic event of `kind` (any of `known_kinds(registry)`); ValueError else."""
    if kind == REPLAY_READY:
        # No webhook is one: the pipeline makes it of a recording or an archive, for the
        # ended card. The sample is the sample end with a replay to watch.
        end = sample_event(LIVE_END, registry)
        return end.with_changes(
            kind=REPLAY_READY, event_id=f"{end.event_id}#replay", replay_url=SAMPLE_REPLAY_URL
        )
    for spec in registry.values():
        for event_type in spec.samples:
            if spec.event_types.get(event_type) == kind:
                return parse_sample(spec, event_type)
    known = known_kinds(registry)
    if kind in known:
        raise ValueError(f"no source has a sample payload for event kind {kind!r}")
    listed = ", ".join(sorted(known))
    raise ValueError(f"no sample for unknown event kind {kind!r}; known: {listed}")


def sample_events(registry: Mapping[str, SourceSpec] = SOURCES) -> list[Event]:
    """One sample event of each known kind, in kind order (what `Renderer.check` tries)."""
    return [sample_event(kind, registry) for kind in sorted(known_kinds(registry))]


def parse_sample(spec: SourceSpec, event_type: str) -> Event:
    """`spec`'s sample payload for `event_type`, parsed by a source of that kind."""
    payload = spec.samples[event_type]
    body = json.dumps(payload).encode()
    # Samples are parsed, never verified, so the secret does not matter.
    source = spec.build(SourceConfig(name=spec.kind, kind=spec.kind, secret=""))
    request = WebhookRequest(query={}, headers={}, body=body, received_at=_SAMPLE_TIME)
    event = source.parse(payload, request)
    if not isinstance(event, Event):
        raise ValueError(f"source {spec.kind} does not make an event of its {event_type!r} sample")
    return event.with_changes(received_at=event.occurred_at + _DELIVERY_DELAY)


def streamer_keys(registry: Mapping[str, SourceSpec] = SOURCES) -> dict[str, list[str]]:
    """The streamer keys each source kind's samples produce (what a route's `match` sees)."""
    keys: dict[str, list[str]] = {}
    for kind, spec in registry.items():
        found: dict[str, None] = {}
        for event_type in spec.samples:
            key = parse_sample(spec, event_type).streamer_key
            if key:
                found[key] = None
        keys[kind] = list(found)
    return keys
