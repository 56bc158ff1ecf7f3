"""The Twitch source's own work: its EventSub subscriptions, and what stream.online lacks.

Subscriptions are the bot's job. At start, every `reconcile_interval`, after a revocation
that can be healed and when a chat subscribes or unsubscribes, one pass:

1. resolves the wanted logins (`channels`, and each exact `twitch/<login>` a chat
   subscribed to) to user ids, 100 per call; a login Twitch does not know is a problem;
2. lists the app's subscriptions (every page) and keeps those pointing at our callback
   that are alive and wanted; deletes the rest of ours (not wanted any more, revoked,
   failed verification, duplicates), never another callback's;
3. creates what is missing (409 "already exists" counts as done), then waits briefly
   for Twitch's challenge and looks again, so a callback Twitch cannot reach or a
   proxy that mangles the body is reported within seconds, not at the next pass;
4. records each channel's title and category (Get Channel Information) as the stream's
   state when it changed, so a stream.online card is complete at once, and records a
   start for each stream Helix lists as live (the same event id as the webhook's, so a
   stream that went live while the bot was down gets its card, and one it knows of
   does not get a second).

`stream.online` carries no title, category or thumbnail: after each, Get Streams is asked
a few times (Helix lists a new stream seconds late) and what it says is recorded as the
stream's state, which edits the card if it differs; if Helix never lists it, the
channel's information is used instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from bot import events as ev
from bot.durations import format_duration
from bot.errors import StoreUnavailable
from bot.events import Event, LiveInfo, utcnow
from bot.sources.keeper import FOLLOW_WAIT_SECONDS, Keeper
from bot.sources.twitch import eventsub
from bot.sources.twitch.eventsub import PLATFORM, Broadcaster
from bot.sources.twitch.helix import (
    CredentialsRefused,
    EventSubSubscription,
    Helix,
    HelixError,
    TwitchChannel,
    TwitchStream,
    TwitchUser,
)

log = logging.getLogger(__name__)

#: A Twitch login: "4-25 characters", letters, digits and underscores (a few old
#: accounts are shorter, so 1-25 is accepted).
LOGIN: Final = re.compile(r"[a-z0-9_]{1,25}")
_GLOB_CHARS: Final = frozenset("*?[")

ALIVE: Final = frozenset({"enabled", "webhook_callback_verification_pending"})
VERIFICATION_FAILED: Final = "webhook_callback_verification_failed"
#: Revocations after which subscribing again can work at once.
HEALABLE: Final = frozenset({"notification_failures_exceeded"})

#: After stream.online, how long to wait before each Get Streams (Helix lags by seconds).
LOOKUP_DELAYS: Final = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
#: After stream.offline, when to look for the stream's archive (its VOD, for the ended
#: cards' replay link). Twitch makes the archive while the stream runs, so the first
#: look usually finds it; some channels store no VODs, so the looks stop after these.
REPLAY_DELAYS: Final = (5.0, 60.0, 600.0)
#: How long a pass waits for Twitch's challenges to new subscriptions before looking.
VERIFY_WAIT_SECONDS: Final = 10.0
#: How long after a channel.update a Helix answer may still predate it (Helix serves
#: cached channel information; minutes have been reported, so this errs long).
HELIX_CACHE_SECONDS: Final = 600.0

# Problem kinds (stable words for /healthz and tests).
CREDENTIALS: Final = "credentials"
API: Final = "api"
UNKNOWN_USER: Final = "unknown_user"
REVOKED: Final = "revoked"
UNVERIFIED: Final = "verification_failed"
REFUSED: Final = "subscribe_failed"

_REVOCATION_WORDS: Final = {
    "user_removed": "the Twitch user was removed (banned or deleted), so Twitch stopped"
    " sending its events",
    "authorization_revoked": "the authorization was revoked, so Twitch stopped sending its events",
    "notification_failures_exceeded": "Twitch could not deliver its events to the callback"
    " for too long and stopped; the bot subscribes again",
    "version_removed": "Twitch no longer offers this subscription version; a newer"
    " version of the bot is needed",
}


@dataclass(frozen=True, slots=True)
class Settings:
    """What the Twitch source's own work needs from its `[[sources]]` entry."""

    source: str
    client_id: str
    client_secret: str = field(repr=False)
    secret: str = field(repr=False)
    callback_url: str
    channels: tuple[str, ...]
    api_url: str
    auth_url: str
    reconcile_interval: timedelta
    #: The stream.online types that notify (Get Streams lists only "live" ones).
    types: tuple[str, ...] = ("live",)


def login_of(pattern: str) -> str | None:
    """The login a `twitch/<login>` pattern names exactly, else None."""
    platform, slash, channel = pattern.strip().partition("/")
    if not slash or platform.strip().lower() != PLATFORM or _GLOB_CHARS & set(pattern):
        return None
    login = channel.strip().lower()
    return login if LOGIN.fullmatch(login) else None


def streamer(login: str) -> str:
    """The streamer key of a login: `twitch/<login>`."""
    return f"{PLATFORM}/{login}"


class Follower(Keeper):
    """Keeps the subscriptions right and fills in new streams; one per Twitch source."""

    def __init__(
        self,
        settings: Settings,
        *,
        helix: Callable[[], Helix] | None = None,
        lookup_delays: Sequence[float] = LOOKUP_DELAYS,
        replay_delays: Sequence[float] = REPLAY_DELAYS,
        verify_wait: float = VERIFY_WAIT_SECONDS,
        follow_wait: float = FOLLOW_WAIT_SECONDS,
    ) -> None:
        super().__init__(
            source=settings.source,
            interval=settings.reconcile_interval,
            follow_wait=follow_wait,
        )
        self.settings = settings
        self._make_helix = helix or self._default_helix
        self._lookup_delays = tuple(lookup_delays)
        self._verify_wait = verify_wait
        self._helix: Helix | None = None
        #: The users of the wanted logins as last resolved, by login.
        self._users: dict[str, TwitchUser] = {}
        #: (title, category) last recorded per user id, so unchanged channels record nothing.
        self._recorded: dict[str, tuple[str, str]] = {}
        #: When a channel.update last came, per user id (time.monotonic()): what Helix
        #: answers shortly after can be older than it (Helix caches), so it must not
        #: undo the webhook's news.
        self._told: dict[str, float] = {}
        #: Subscription ids whose challenge came in (answered by the webhook handler).
        self._challenged: set[str] = set()
        self._challenge = asyncio.Event()
        self._lookups: dict[str, asyncio.Task[None]] = {}
        self._replay_delays = tuple(replay_delays)
        #: The stream id of each user's stream now live, as stream.online or the check
        #: at start said (stream.offline carries none; its archive is found by it).
        self._streams: dict[str, str] = {}
        #: Looks for ended streams' archives under way.
        self._replays: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"Follower(source={self.settings.source!r})"

    def _default_helix(self) -> Helix:
        s = self.settings
        return Helix(
            client_id=s.client_id,
            client_secret=s.client_secret,
            api_url=s.api_url,
            auth_url=s.auth_url,
        )

    # -- what the webhook handler tells ------------------------------------------------

    def avatar(self, login: str) -> str | None:
        """The user's profile image, when the user has been resolved."""
        user = self._users.get(login)
        return user.profile_image_url if user is not None else None

    def challenged(self, subscription_id: str) -> None:
        """Twitch's challenge for this subscription came in (and was answered)."""
        self._challenged.add(subscription_id)
        self._challenge.set()

    def revoked(self, subscription: EventSubSubscription) -> None:
        """Twitch revoked a subscription of ours: say so, and heal what can be healed."""
        login = self._login_by_id(subscription.broadcaster_user_id)
        who = streamer(login) if login else ""
        words = _REVOCATION_WORDS.get(
            subscription.status, f"Twitch revoked it ({subscription.status[:64]})"
        )
        self.report(who, REVOKED, f"the {subscription.type} subscription was revoked: {words}")
        if subscription.status in HEALABLE:
            self.reconcile_soon()

    def went_live(self, who: Broadcaster, stream_id: str) -> None:
        """A stream.online came: ask Helix for what it did not carry."""
        if self.host is None:
            return  # not running (a sample being parsed): nobody to record it
        self._streams[who.id] = stream_id
        running = self._lookups.pop(who.id, None)
        if running is not None:
            running.cancel()
        task = asyncio.get_running_loop().create_task(
            self._look_up(who, stream_id), name=f"twitch-lookup-{who.login}"
        )
        self._lookups[who.id] = task
        task.add_done_callback(lambda done: self._forget_lookup(who.id, done))

    def channel_updated(self, user_id: str) -> None:
        """A channel.update came: the freshest word on this channel for a while."""
        self._told[user_id] = time.monotonic()

    def _told_since(self, user_id: str, since: float) -> bool:
        return self._told.get(user_id, float("-inf")) >= since

    def went_offline(self, user_id: str) -> None:
        """A stream.offline came: a lookup still waiting for Helix is moot."""
        task = self._lookups.pop(user_id, None)
        if task is not None:
            task.cancel()

    def ended(self, who: Broadcaster) -> None:
        """A stream.offline came: look for the stream's archive, for the ended cards'
        replay link."""
        stream_id = self._streams.pop(who.id, None)
        if self.host is None or not stream_id:
            return
        task = asyncio.get_running_loop().create_task(
            self._find_replay(who, stream_id), name=f"twitch-replay-{who.login}"
        )
        self._replays.add(task)
        task.add_done_callback(self._replays.discard)

    async def _find_replay(self, who: Broadcaster, stream_id: str) -> None:
        """`GET /videos?type=archive` until it lists this stream's archive; then a
        replay_ready event with its URL (public archives only)."""
        for delay in self._replay_delays:
            await asyncio.sleep(delay)
            helix = self._helix
            if helix is None:
                return
            try:
                videos = await helix.archives(who.id)
            except HelixError:
                continue
            video = next((v for v in videos if v.stream_id == stream_id), None)
            if video is None:
                continue
            if video.viewable != "public" or not video.url:
                log.info("twitch %s: %s's archive is not public", self.settings.source, who.login)
                return
            now = utcnow()
            event = Event(
                source=self.settings.source,
                event_id=f"replay/{video.id}",
                kind=ev.REPLAY_READY,
                occurred_at=now,
                received_at=now,
                platform=PLATFORM,
                channel=who.login,
                display_name=who.name or who.login,
                url=eventsub.CHANNEL_URL.format(login=who.login),
                replay_url=video.url,
            )
            with contextlib.suppress(StoreUnavailable):
                await self.emit(event)
            return

    def _forget_lookup(self, user_id: str, task: asyncio.Task[None]) -> None:
        if self._lookups.get(user_id) is task:
            del self._lookups[user_id]

    # -- what a chat tells -------------------------------------------------------------

    async def followed(self, pattern: str, *, added: bool) -> str | None:
        """/subscribe or /unsubscribe of `pattern`: subscribe at Twitch (or stop), and
        say how it went, waiting a couple of seconds at most."""
        platform = pattern.strip().partition("/")[0].strip().lower()
        if platform != PLATFORM and pattern.strip() != "*":
            return None
        login = login_of(pattern)
        if login is None:
            if not added:
                return None
            if _GLOB_CHARS & set(pattern):
                return (
                    "Twitch is asked about exact logins only, so this matches only the"
                    " Twitch channels the bot follows already (its channels in bot.toml,"
                    " and each /subscribe twitch/<login>)."
                )
            return (
                "That is not a Twitch login (letters, digits and _), so Twitch cannot be"
                " asked about it."
            )
        if login in self.settings.channels:
            return (
                f"Twitch: {login} is followed already (channels in bot.toml)." if added else None
            )
        if self.host is None:
            return None
        done = await self.reconcile_and_wait()
        key = streamer(login)
        problems = self.host.problems.kinds(self.settings.source, key)
        if not added:
            return f"Twitch: the bot no longer asks Twitch about {login}." if done else None
        if UNKNOWN_USER in problems:
            return f"Twitch has no user {login}: check the spelling."
        if problems:
            return f"Twitch: following {login} has a problem; /status shows it."
        if done and login in self._users:
            return f"Twitch will tell the bot when {login} goes live."
        return f"The bot is asking Twitch to follow {login}; /status shows it if that fails."

    # -- the loop ----------------------------------------------------------------------

    async def started(self) -> None:
        """Make the API client (the loop's passes use it)."""
        self._helix = self._make_helix()

    async def stopped(self) -> None:
        """Cancel lookups still waiting for Helix and close the client."""
        tasks = [*self._lookups.values(), *self._replays]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._helix is not None:
            await self._helix.close()
            self._helix = None

    async def one_pass(self) -> bool:
        """One reconcile pass; False when it failed and is to be tried again soon."""
        assert self._helix is not None
        return await self._one_pass(self._helix)

    async def _one_pass(self, helix: Helix) -> bool:
        """One reconcile pass; False when it failed and is to be tried again soon."""
        try:
            await self._reconcile(helix)
        except CredentialsRefused as exc:
            self.report(
                "",
                CREDENTIALS,
                f"Twitch refused the client_id / client_secret ({exc.message}); copy them"
                " again from your app at dev.twitch.tv/console, then restart or reload",
            )
            return False
        except HelixError as exc:
            self.report("", API, f"Twitch's API is not answering as it should ({exc.message})")
            return False
        except StoreUnavailable:
            return False  # the database says so itself; the pass runs again
        self.resolve("", CREDENTIALS)
        self.resolve("", API)
        return True

    async def _reconcile(self, helix: Helix) -> None:
        host = self.host
        assert host is not None
        wanted = dict.fromkeys(self.settings.channels)
        for pattern in await host.subscription_patterns():
            login = login_of(pattern)
            if login is not None:
                wanted.setdefault(login)
        users = await helix.users(wanted)
        for login in wanted:
            if login in users:
                self.resolve(streamer(login), UNKNOWN_USER)
            else:
                self.report(
                    streamer(login),
                    UNKNOWN_USER,
                    f"Twitch has no user {login} (renamed, removed, or a typo in channels"
                    " or a /subscribe)",
                )
        self._users = dict(users)
        by_id = {user.id: user for user in users.values()}
        self._forget_unwanted(wanted)
        created = await self._subscribe(helix, by_id)
        if created:
            await self._check_verification(helix, created)
        await self._record_channels(helix, by_id)
        await self._catch_up(helix, by_id)

    def _forget_unwanted(self, wanted: Collection[str]) -> None:
        """Problems about logins no longer followed are moot."""
        assert self.host is not None
        keep = [streamer(login) for login in wanted] + [""]
        self.host.problems.forget_source(self.settings.source, keep)

    async def _subscribe(
        self, helix: Helix, by_id: dict[str, TwitchUser]
    ) -> list[EventSubSubscription]:
        """Delete what is ours and not wanted alive, create what is missing."""
        callback = self.settings.callback_url
        desired = {
            (sub_type, version, user_id)
            for user_id in by_id
            for sub_type, version in eventsub.SUBSCRIBED
        }
        have: set[tuple[str, str, str]] = set()
        for sub in await helix.subscriptions():
            if sub.callback != callback:
                continue  # another deployment's (same app, another bot): never touched
            key = (sub.type, sub.version, sub.broadcaster_user_id or "")
            if sub.status in ALIVE and key in desired and key not in have:
                have.add(key)
                continue
            login = self._login_by_id(sub.broadcaster_user_id)
            if sub.status == VERIFICATION_FAILED and login is not None:
                self.report(streamer(login), UNVERIFIED, self._unverified(sub))
            log.info(
                "twitch %s: deleting subscription %s (%s for %s, %s)",
                self.settings.source,
                sub.id,
                sub.type,
                login or sub.broadcaster_user_id,
                sub.status,
            )
            await helix.delete_subscription(sub.id)
        created: list[EventSubSubscription] = []
        for sub_type, version, user_id in sorted(desired - have):
            login = by_id[user_id].login
            try:
                new = await helix.create_subscription(
                    type=sub_type,
                    version=version,
                    broadcaster_user_id=user_id,
                    callback=callback,
                    secret=self.settings.secret,
                )
            except HelixError as exc:
                if exc.retryable:
                    raise
                self.report(
                    streamer(login),
                    REFUSED,
                    f"Twitch refused the {sub_type} subscription: {exc.message}",
                )
                continue
            if new is not None:
                created.append(new)
        return created

    async def _check_verification(self, helix: Helix, created: list[EventSubSubscription]) -> None:
        """Wait (briefly) for the challenges, then see what Twitch made of each answer."""
        ids = {sub.id for sub in created}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._verify_wait):
                while not ids <= self._challenged:
                    self._challenge.clear()
                    await self._challenge.wait()
        status = {sub.id: sub for sub in await helix.subscriptions()}
        settled: dict[str, bool] = {}
        for sub in created:
            login = self._login_by_id(sub.broadcaster_user_id)
            if login is None:
                continue
            now = status.get(sub.id)
            if now is not None and now.status == "enabled":
                settled.setdefault(login, True)
            elif now is not None and (now.status in ALIVE or now.status == VERIFICATION_FAILED):
                settled[login] = False
                self.report(streamer(login), UNVERIFIED, self._unverified(now))
            else:
                # Gone, or revoked meanwhile (a revocation reports itself).
                settled[login] = False
        for login, ok in settled.items():
            if ok:
                for kind in (UNVERIFIED, REVOKED, REFUSED):
                    self.resolve(streamer(login), kind)
                log.info("twitch %s: following %s", self.settings.source, login)

    def _unverified(self, sub: EventSubSubscription) -> str:
        url = self.settings.callback_url
        if sub.status in ALIVE:
            return (
                f"Twitch has not verified {url} yet (its challenge did not come within"
                f" {format_duration(timedelta(seconds=self._verify_wait))}); check that"
                " callback_url reaches this bot over HTTPS on port 443"
            )
        if sub.id in self._challenged:
            return (
                f"Twitch could not verify {url}: the bot answered its challenge, but the"
                " answer arrived changed (a proxy in front of the bot that rewrites"
                " bodies or headers?)"
            )
        return (
            f"Twitch could not verify {url}: its challenge never reached the bot (is"
            " callback_url right, public, HTTPS on port 443, and passed on to"
            f" /webhook/{self.settings.source}?)"
        )

    async def _record_channels(self, helix: Helix, by_id: dict[str, TwitchUser]) -> None:
        """Each channel's title and category as the stream's state, when it changed."""
        asked = time.monotonic()
        for user_id, channel in (await helix.channels(by_id)).items():
            look = (channel.title, channel.game_name)
            if self._recorded.get(user_id) == look:
                continue
            if self._told_since(user_id, asked - HELIX_CACHE_SECONDS):
                continue  # a channel.update said more recently what Helix may not know yet
            user = by_id[user_id]
            event = self._state_event(user, f"helix-channels/{user_id}/{time.time_ns()}")
            await self.emit(_with_channel(event, channel))
            self._recorded[user_id] = look

    async def _catch_up(self, helix: Helix, by_id: dict[str, TwitchUser]) -> None:
        """A start for each stream Helix lists as live (deduped against the webhook's)."""
        if "live" not in self.settings.types:
            return  # Get Streams lists live streams only, and those are not wanted
        for user_id, stream in (await helix.streams(by_id)).items():
            user = by_id.get(user_id)
            if user is None:
                continue
            self._streams[user_id] = stream.id
            start = self._state_event(user, eventsub.online_event_id(stream.id))
            live = _stream_info(stream, user)
            start = start.with_changes(kind=ev.LIVE_START, live=live, started_at=None)
            if await self.emit(start):
                log.info(
                    "twitch %s: %s is live (started %s), seen at the check of Helix",
                    self.settings.source,
                    user.login,
                    stream.started_at.isoformat() if stream.started_at else "?",
                )

    async def _look_up(self, who: Broadcaster, stream_id: str) -> None:
        """After stream.online: Get Streams until it lists the stream, else the channel."""
        helix = self._helix
        if helix is None:
            return
        user = self._users.get(who.login) or TwitchUser(
            id=who.id, login=who.login, display_name=who.name, profile_image_url=None
        )
        began = time.monotonic()
        for delay in self._lookup_delays:
            await asyncio.sleep(delay)
            try:
                stream = (await helix.streams([who.id])).get(who.id)
            except HelixError:
                continue
            if stream is not None and stream.id == stream_id:
                event = self._state_event(user, f"helix-streams/{stream_id}")
                info = _stream_info(stream, user)
                if self._told_since(who.id, began):
                    # A channel.update came meanwhile: its title and category are newer.
                    info = dataclasses.replace(info, title=None, categories=())
                await self.emit(event.with_changes(live=info))
                return
        log.info(
            "twitch %s: Helix did not list %s's stream %s; using the channel's information",
            self.settings.source,
            who.login,
            stream_id,
        )
        if self._told_since(who.id, began):
            return  # a channel.update said it already
        try:
            channel = (await helix.channels([who.id])).get(who.id)
        except HelixError:
            return
        if channel is not None:
            event = self._state_event(user, f"helix-channels/{stream_id}")
            await self.emit(_with_channel(event, channel))

    def _state_event(self, user: TwitchUser, event_id: str) -> Event:
        """A stream_update about `user`, made by the bot (no webhook behind it)."""
        now = utcnow()
        return Event(
            source=self.settings.source,
            event_id=event_id,
            kind=ev.STREAM_UPDATE,
            occurred_at=now,
            received_at=now,
            platform=PLATFORM,
            channel=user.login,
            display_name=user.display_name or user.login,
            url=eventsub.CHANNEL_URL.format(login=user.login),
            live=LiveInfo(avatar=user.profile_image_url, uid=user.id, uname=user.login),
        )

    # -- problems ----------------------------------------------------------------------

    def _login_by_id(self, user_id: str | None) -> str | None:
        for login, user in self._users.items():
            if user.id == user_id:
                return login
        return None


def _stream_info(stream: TwitchStream, user: TwitchUser) -> LiveInfo:
    """What Get Streams says about a live stream, as the bot's LiveInfo."""
    return LiveInfo(
        title=stream.title,
        categories=(stream.game_name,) if stream.game_name else (),
        cover=eventsub.thumbnail(stream.thumbnail_url),
        avatar=user.profile_image_url,
        uid=user.id,
        uname=user.login,
        status=stream.type or "live",
        live_id=stream.id,
        start_time=stream.started_at,
    )


def _with_channel(event: Event, channel: TwitchChannel) -> Event:
    """`event` carrying the channel's title and category."""
    assert event.live is not None
    return event.with_changes(
        live=LiveInfo(
            title=channel.title,
            categories=(channel.game_name,) if channel.game_name else (),
            avatar=event.live.avatar,
            uid=event.live.uid,
            uname=event.live.uname,
        )
    )
