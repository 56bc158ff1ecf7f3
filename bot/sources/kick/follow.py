"""The Kick source's own work: its public key, its event subscriptions, and a slow poll.

Each pass (at start, every `reconcile_interval`, and when a chat subscribes or
unsubscribes): fetch Kick's public key unless `public_key` pins it, and keep it in the
database when it changed (a restart while Kick's API is down still verifies); resolve the
wanted slugs (`channels` and each exact `/subscribe kick/<slug>`) to broadcaster ids;
list the app's subscriptions, delete ours (the two livestream events) that are duplicates
or no longer wanted, and create what is missing. Kick unsubscribes an app whose webhook
failed for a day, so the hourly pass also heals that.

Because Kick's deliveries are reported lost or minutes late, `GET /livestreams` for the
followed channels every `poll_interval` is a backstop: a stream it lists is a start (the
same event id as the webhook's, so one card whichever comes first), and a stream seen live
that it has not listed twice running is an end (twice: the listing can lag a start). What
was seen live is kept in the database, so a restart does not forget a stream to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import rsa

from bot import events as ev
from bot.errors import StoreUnavailable
from bot.events import Event, LiveInfo, utcnow
from bot.sources.keeper import Keeper, first_of
from bot.sources.kick import webhooks
from bot.sources.kick.api import ApiError, CredentialsRefused, KickApi, KickLivestream
from bot.sources.kick.webhooks import PLATFORM, KeyProblem, load_public_key
from bot.sources.service import SourceHost

log = logging.getLogger(__name__)

#: A Kick channel slug, as in kick.com/<slug>: lower-case letters, digits, _ and -.
SLUG: Final = re.compile(r"[a-z0-9_-]{1,64}")
_GLOB_CHARS: Final = frozenset("*?[")
#: How many polls in a row must miss a stream before the poll calls it ended.
MISSES_FOR_AN_END: Final = 2
#: Two start times of one channel this close are one stream: the webhook's `started_at`
#: and the API's are not documented to agree to the second, and two event ids for one
#: stream would post two cards.
SAME_STREAM: Final = timedelta(minutes=2)
#: After a webhook start, when to ask `/livestreams` for what the webhook lacks (the
#: thumbnail and the category); the listing can lag the start by seconds.
LOOKUP_DELAYS: Final = (2.0, 5.0, 15.0)

# Keys of the values kept in the database.
PUBLIC_KEY: Final = "public_key"
#: How often a process that only takes the webhooks reads the key another one keeps.
KEY_REREAD_SECONDS: Final = 30.0
LIVE: Final = "live"

# Problem kinds (stable words for /healthz and tests).
CREDENTIALS: Final = "credentials"
API: Final = "api"
NO_KEY: Final = "public_key"
UNKNOWN_CHANNEL: Final = "unknown_channel"
REFUSED: Final = "subscribe_failed"


@dataclass(frozen=True, slots=True)
class Settings:
    """What the Kick source's own work needs from its `[[sources]]` entry."""

    source: str
    client_id: str
    client_secret: str = field(repr=False)
    channels: tuple[str, ...]
    api_url: str
    auth_url: str
    reconcile_interval: timedelta
    poll_interval: timedelta
    #: `public_key` from config (PEM), which is then never fetched; None to fetch it.
    pinned_key: str | None = None


def slug_of(pattern: str) -> str | None:
    """The slug a `kick/<slug>` pattern names exactly, else None."""
    platform, slash, channel = pattern.strip().partition("/")
    if not slash or platform.strip().lower() != PLATFORM or _GLOB_CHARS & set(pattern):
        return None
    slug = channel.strip().lower()
    return slug if SLUG.fullmatch(slug) else None


def streamer(slug: str) -> str:
    """The streamer key of a channel: `kick/<slug>`."""
    return f"{PLATFORM}/{slug}"


class Follower(Keeper):
    """Keeps the key and the subscriptions, and polls; one per Kick source."""

    def __init__(
        self,
        settings: Settings,
        *,
        api: Callable[[], KickApi] | None = None,
        lookup_delays: tuple[float, ...] = LOOKUP_DELAYS,
    ) -> None:
        super().__init__(source=settings.source, interval=settings.reconcile_interval)
        self.settings = settings
        self._make_api = api or self._default_api
        self._api: KickApi | None = None
        #: The key webhooks are checked with; None until known.
        self.key: rsa.RSAPublicKey | None = (
            load_public_key(settings.pinned_key) if settings.pinned_key else None
        )
        self._key_pem: str | None = settings.pinned_key
        #: Whether the key kept in the database was looked for (at start): until then a
        #: delivery is answered 503, not refused, since the key may be there.
        self.key_read = self.key is not None
        #: Broadcaster ids of the followed slugs, as last resolved.
        self._ids: dict[str, str] = {}
        #: Streams seen live: user id -> (slug, start time as sent), kept in the database.
        self._live: dict[str, tuple[str, str]] = {}
        self._misses: dict[str, int] = {}
        #: True when `_live` changed since it was last kept.
        self._live_changed = False
        self._poll_stop = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._lookup_delays = lookup_delays
        #: Look-ups after a webhook start, and writes of `_live`, under way.
        self._tasks: set[asyncio.Task[None]] = set()
        #: When a metadata webhook last came per user id (monotonic): newer than the API.
        self._told: dict[str, float] = {}
        #: When Kick sent its latest webhook about each user id, on Kick's clock.
        self._news_at: dict[str, datetime] = {}

    def __repr__(self) -> str:
        return f"Follower(source={self.settings.source!r})"

    def _default_api(self) -> KickApi:
        s = self.settings
        return KickApi(
            client_id=s.client_id,
            client_secret=s.client_secret,
            api_url=s.api_url,
            auth_url=s.auth_url,
        )

    # -- told by the webhook handler -----------------------------------------------------

    def known_start(self, user_id: str, started: datetime) -> datetime:
        """The start of the stream of this channel already known (by webhook or poll)
        when `started` is that stream's, else `started`."""
        known = self._live.get(user_id)
        if known is None:
            return started
        with contextlib.suppress(ValueError):
            at = datetime.fromisoformat(known[1])
            if abs(at - started) <= SAME_STREAM:
                return at
        return started

    def went_live(
        self, user_id: str, slug: str, started: datetime, *, sent: datetime | None = None
    ) -> None:
        """A start came by webhook (`sent` by Kick then): the poll will end it if Kick
        never says so, and a look at `/livestreams` soon adds the thumbnail and category
        it lacks."""
        if sent is not None:
            self._news_at[user_id] = sent
        new = self._live.get(user_id) != (slug, started.isoformat())
        self._live[user_id] = (slug, started.isoformat())
        self._misses.pop(user_id, None)
        self._live_changed = True
        if new and self._api is not None and not self._poll_stop.is_set():
            self._spawn(self._look_up(user_id, slug, started), "lookup")
            self._spawn(self._keep_live(), "keep")

    def metadata_came(self, user_id: str, *, sent: datetime | None = None) -> None:
        """A metadata webhook came: what it says is newer than the API's answers."""
        self._told[user_id] = time.monotonic()
        if sent is not None:
            self._news_at[user_id] = sent

    def went_offline(self, user_id: str) -> None:
        """An end came by webhook: nothing left for the poll to end."""
        if self._live.pop(user_id, None) is not None:
            self._live_changed = True
            if self._api is not None and not self._poll_stop.is_set():
                self._spawn(self._keep_live(), "keep")
        self._misses.pop(user_id, None)

    def _spawn(self, work: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=f"kick-{what}-{self.source}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_live(self) -> None:
        """Keep the streams seen live in the database (a restart must still end them);
        a failed write is tried again by the next poll."""
        if self.host is None or not self._live_changed:
            return
        self._live_changed = False
        try:
            await self.host.save(self.source, LIVE, json.dumps(self._live, sort_keys=True))
        except StoreUnavailable:
            self._live_changed = True

    # -- told by a chat ------------------------------------------------------------------

    async def followed(self, pattern: str, *, added: bool) -> str | None:
        """/subscribe or /unsubscribe of `pattern`: subscribe at Kick (or stop)."""
        if pattern.strip().partition("/")[0].strip().lower() != PLATFORM:
            return None
        slug = slug_of(pattern)
        if slug is None:
            if not added:
                return None
            if _GLOB_CHARS & set(pattern):
                return (
                    "Kick is asked about exact channels only, so this matches only the Kick"
                    " channels the bot follows already (its channels in bot.toml, and each"
                    " /subscribe kick/<channel>)."
                )
            return "That is not a Kick channel (as in kick.com/<channel>)."
        if slug in self.settings.channels:
            return f"Kick: {slug} is followed already (channels in bot.toml)." if added else None
        if self.host is None:
            return None
        done = await self.reconcile_and_wait()
        problems = self.problem_kinds(streamer(slug))
        if not added:
            return f"Kick: the bot no longer asks Kick about {slug}." if done else None
        if UNKNOWN_CHANNEL in problems:
            return f"Kick has no channel {slug}: check the spelling."
        if problems:
            return f"Kick: following {slug} has a problem; /status shows it."
        if done and slug in self._ids:
            return f"Kick will tell the bot when {slug} goes live."
        return f"The bot is asking Kick to follow {slug}; /status shows it if that fails."

    # -- the loop ------------------------------------------------------------------------

    async def standby(self, host: SourceHost, stop: asyncio.Event) -> None:
        """Another bot process keeps the key (and rotates it): this one reads what that
        one kept, at once and every KEY_REREAD_SECONDS, so its webhooks verify too."""
        self.host = host
        while not stop.is_set():
            if not self.settings.pinned_key:
                with contextlib.suppress(StoreUnavailable):
                    kept = await host.load(self.source, PUBLIC_KEY)
                    if kept and kept != self._key_pem:
                        with contextlib.suppress(KeyProblem):
                            self.key, self._key_pem = load_public_key(kept), kept
                    self.key_read = True
            await first_of(stop, asyncio.Event(), within=KEY_REREAD_SECONDS)

    async def started(self) -> None:
        """The API client, the key and the streams seen live as the database kept them,
        and the poll."""
        assert self.host is not None
        self._api = self._make_api()
        try:
            if self.key is None:
                kept = await self.host.load(self.source, PUBLIC_KEY)
                if kept:
                    with contextlib.suppress(KeyProblem):
                        self.key, self._key_pem = load_public_key(kept), kept
            self._live = _read_live(await self.host.load(self.source, LIVE))
        except StoreUnavailable:
            pass  # the first pass fetches the key from Kick
        finally:
            self.key_read = True
        self._poller = asyncio.create_task(self._poll_loop(), name=f"kick-poll-{self.source}")

    async def stopped(self) -> None:
        """Stop the poll and close the client."""
        self._poll_stop.set()
        tasks = [*self._tasks, *([self._poller] if self._poller is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._keep_live()
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def one_pass(self) -> bool:
        """The key, then the subscriptions; False when to be tried again soon."""
        assert self._api is not None
        try:
            await self._refresh_key(self._api)
            await self._reconcile(self._api)
        except CredentialsRefused as exc:
            self.report(
                "",
                CREDENTIALS,
                f"Kick refused the client_id / client_secret ({exc.message}); copy them"
                " again from your app at kick.com/settings/developer, then restart or reload",
            )
            return False
        except ApiError as exc:
            self.report("", API, f"Kick's API is not answering as it should ({exc.message})")
            return False
        except StoreUnavailable:
            return False
        self.resolve("", CREDENTIALS)
        self.resolve("", API)
        return True

    async def _refresh_key(self, api: KickApi) -> None:
        if self.settings.pinned_key:
            return
        assert self.host is not None
        try:
            pem = await api.public_key()
            key = load_public_key(pem)
        except (ApiError, KeyProblem) as exc:
            if self.key is None:
                why = exc.message if isinstance(exc, ApiError) else f"its answer {exc}"
                self.report(
                    "",
                    NO_KEY,
                    f"Kick's public key could not be fetched ({why}), so no webhook can be"
                    " checked yet; set public_key to pin it",
                )
            return
        self.resolve("", NO_KEY)
        if pem.strip() != (self._key_pem or "").strip():
            if self._key_pem is not None:
                log.warning("kick %s: Kick's public key changed; using the new one", self.source)
            self.key, self._key_pem = key, pem
            await self.host.save(self.source, PUBLIC_KEY, pem)

    async def _reconcile(self, api: KickApi) -> None:
        assert self.host is not None
        wanted = dict.fromkeys(self.settings.channels)
        for pattern in await self.host.subscription_patterns():
            slug = slug_of(pattern)
            if slug is not None:
                wanted.setdefault(slug)
        channels = await api.channels(wanted)
        for slug in wanted:
            if slug in channels:
                self.resolve(streamer(slug), UNKNOWN_CHANNEL)
            else:
                self.report(
                    streamer(slug),
                    UNKNOWN_CHANNEL,
                    f"Kick has no channel {slug} (renamed, removed, or a typo in channels or a"
                    " /subscribe)",
                )
        self._ids = {slug: channel.user_id for slug, channel in channels.items()}
        keep = [streamer(slug) for slug in wanted] + [""]
        self.host.problems.forget_source(self.source, keep)
        ours = {name for name, _version in webhooks.SUBSCRIBED}
        desired = {(user_id, name) for user_id in self._ids.values() for name in ours}
        have: set[tuple[str, str]] = set()
        unwanted: list[str] = []
        for sub in await api.subscriptions():
            if sub.event not in ours:
                continue  # the app's other events (chat, follows...) are not ours to touch
            key = (sub.user_id, sub.event)
            if key in desired and key not in have:
                have.add(key)
            else:
                unwanted.append(sub.id)
        if unwanted:
            log.info("kick %s: deleting %d subscriptions", self.source, len(unwanted))
            await api.unsubscribe(unwanted)
        by_id = {user_id: slug for slug, user_id in self._ids.items()}
        for user_id, slug in by_id.items():
            missing = [
                (name, version)
                for name, version in webhooks.SUBSCRIBED
                if (user_id, name) not in have
            ]
            if not missing:
                self.resolve(streamer(slug), REFUSED)
                continue
            try:
                results = await api.subscribe(user_id, missing)
            except ApiError as exc:
                if exc.retryable:
                    raise
                self.report(
                    streamer(slug), REFUSED, f"Kick refused the subscription: {exc.message}"
                )
                continue
            errors = [f"{name}: {error}" for name, error in results if error]
            if errors:
                self.report(
                    streamer(slug), REFUSED, f"Kick refused a subscription ({'; '.join(errors)})"
                )
            else:
                self.resolve(streamer(slug), REFUSED)
                log.info("kick %s: following %s", self.source, slug)

    # -- the poll ------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        wait = 1.0  # the first soon after start: what happened while the bot was down
        while not self._poll_stop.is_set():
            await first_of(self._poll_stop, asyncio.Event(), within=wait)
            if self._poll_stop.is_set():
                return
            wait = self.settings.poll_interval.total_seconds()
            if self._api is None or not self._ids:
                continue
            try:
                await self.poll_once(self._api)
            except (ApiError, StoreUnavailable) as exc:
                log.info("kick %s: the poll failed (%s); next in %.0fs", self.source, exc, wait)

    async def poll_once(self, api: KickApi) -> None:
        """One look at Kick's live streams of the followed channels."""
        assert self.host is not None
        streams = await api.livestreams(self._ids.values())
        slugs = {user_id: slug for slug, user_id in self._ids.items()}
        before = dict(self._live)
        for user_id, stream in streams.items():
            slug = slugs.get(user_id) or stream.slug
            if not slug or stream.started_at is None:
                continue
            self._misses.pop(user_id, None)
            started = self.known_start(user_id, stream.started_at)
            if await self.emit(self._start(user_id, slug, stream, started)):
                log.info("kick %s: %s is live, seen by the poll", self.source, slug)
            self._live[user_id] = (slug, started.isoformat())
        for user_id, (slug, since) in list(self._live.items()):
            if user_id in streams:
                continue
            self._misses[user_id] = self._misses.get(user_id, 0) + 1
            if self._misses[user_id] < MISSES_FOR_AN_END:
                continue
            if await self.emit(self._end(user_id, slug, datetime.fromisoformat(since))):
                log.info("kick %s: %s is no longer live, seen by the poll", self.source, slug)
            del self._live[user_id]
            self._misses.pop(user_id, None)
        if self._live != before or self._live_changed:
            await self.host.save(self.source, LIVE, json.dumps(self._live, sort_keys=True))
            self._live_changed = False

    def _event(self, event_id: str, kind: str, slug: str) -> Event:
        now = utcnow()
        return Event(
            source=self.source,
            event_id=event_id,
            kind=kind,
            occurred_at=now,
            received_at=now,
            platform=PLATFORM,
            channel=slug,
            url=webhooks.CHANNEL_URL.format(slug=slug),
        )

    def _start(self, user_id: str, slug: str, stream: KickLivestream, started: datetime) -> Event:
        event = self._event(webhooks.start_id(user_id, started), ev.LIVE_START, slug)
        return event.with_changes(
            live=LiveInfo(
                title=stream.title or None,
                categories=(stream.category,) if stream.category else (),
                cover=stream.thumbnail,
                avatar=stream.profile_picture,
                uid=user_id,
                uname=slug,
                start_time=started,
            )
        )

    async def _look_up(self, user_id: str, slug: str, started: datetime) -> None:
        """After a webhook start: `/livestreams` until it lists the stream, then its
        thumbnail and category (a metadata webhook since then knows better)."""
        began = time.monotonic()
        for delay in self._lookup_delays:
            await asyncio.sleep(delay)
            api = self._api
            if api is None:
                return
            try:
                stream = (await api.livestreams([user_id])).get(user_id)
            except ApiError:
                continue
            if stream is None or stream.started_at is None:
                continue
            if self.known_start(user_id, stream.started_at) != started:
                continue  # not (yet) this stream
            told = self._told.get(user_id, 0.0) >= began
            event = self._event(
                f"livestreams/{user_id}/{webhooks.moment(started)}", ev.STREAM_UPDATE, slug
            )
            if (news := self._news_at.get(user_id)) is not None:
                # What the API lists is no newer than Kick's latest webhook, so it is
                # dated then, on Kick's clock: a metadata webhook sent after it, whose
                # timestamp is to the second, must not look older than this answer.
                event = event.with_changes(occurred_at=news)
            live = LiveInfo(
                # The webhook's title is as new as any; a later one comes by webhook.
                categories=(stream.category,) if stream.category and not told else (),
                cover=stream.thumbnail,
                avatar=stream.profile_picture,
                uid=user_id,
                uname=slug,
            )
            with contextlib.suppress(StoreUnavailable):
                await self.emit(event.with_changes(live=live))
            return
        log.info("kick %s: Kick's API did not list %s's stream", self.source, slug)

    def _end(self, user_id: str, slug: str, started: datetime) -> Event:
        event = self._event(webhooks.end_id(user_id, started, ""), ev.LIVE_END, slug)
        return event.with_changes(started_at=started)


def _read_live(text: str | None) -> dict[str, tuple[str, str]]:
    """The streams seen live, as `poll_once` kept them (nothing when unreadable)."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    live: dict[str, tuple[str, str]] = {}
    for user_id, value in data.items():
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
            with contextlib.suppress(ValueError):
                datetime.fromisoformat(value[1])
                live[str(user_id)] = (value[0], value[1])
    return live
