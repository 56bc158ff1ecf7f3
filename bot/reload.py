"""SIGHUP: read bot.toml and the templates again and apply what can change while running.

Routes, [behaviour], [delivery], [logging], the sources' settings and the templates take
effect at once. Sections a running process cannot swap (the listener's address, the
database, the chat clients' tokens and endpoints, the console switch, /metrics) are named
in the log as waiting for a restart. A config that fails the same checks as
`python -m bot check` changes nothing: the old one stays in force and the log says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

from bot.commands import Commands
from bot.config import Config
from bot.errors import ConfigError
from bot.logs import setup_logging
from bot.outbox import OutboxWorker
from bot.pipeline.dispatch import Dispatcher
from bot.preflight import Preflight
from bot.render import Renderer
from bot.samples import sample_events
from bot.sources import Source
from bot.sources.service import SourceRunner

log = logging.getLogger(__name__)

#: Config sections whose change needs a restart, with why, for the log line.
RESTART_SECTIONS = ("server", "storage", "console", "platforms", "metrics")


def restart_needed(old: Config, new: Config) -> list[str]:
    """The keys (`server.port`, `telegram.token`...) that differ and need a restart.

    Only key names: the values may be secrets.
    """
    changed: list[str] = []
    sections: list[tuple[str, object, object]] = []
    for name in RESTART_SECTIONS:
        if name == "platforms":
            # Each platform's section by its own name: `telegram.token`, not `platforms`.
            sections += [
                (platform, old.platforms.get(platform), new.platforms.get(platform))
                for platform in dict.fromkeys([*old.platforms, *new.platforms])
            ]
        else:
            sections.append((name, getattr(old, name), getattr(new, name)))
    for section, before, after in sections:
        if before == after:
            continue
        if dataclasses.is_dataclass(before):
            for item in dataclasses.fields(before):
                if getattr(before, item.name) != getattr(after, item.name):
                    changed.append(f"{section}.{item.name}")
        else:
            changed.append(section)
    return changed


class Reloader:
    """Applies a re-read config to the running parts, or refuses it whole."""

    def __init__(
        self,
        *,
        config: Config,
        load: Callable[[], Config],
        build_sources: Callable[[Config], dict[str, Source]],
        renderer: Renderer,
        dispatcher: Dispatcher,
        commands: Commands,
        workers: Mapping[str, OutboxWorker],
        sources: dict[str, Source],
        log_level: str | None = None,
        preflight: Preflight | None = None,
        source_runner: SourceRunner | None = None,
    ) -> None:
        self.config = config
        self._load = load
        self._build_sources = build_sources
        self._renderer = renderer
        self._dispatcher = dispatcher
        self._commands = commands
        self._workers = workers
        self._sources = sources
        self._log_level = log_level
        self._preflight = preflight
        self._source_runner = source_runner

    async def reload(self) -> bool:
        """Read the config again and apply it; False (nothing changed) when it is invalid.

        The templates are checked in a worker thread: rendering every template in every
        language takes the better part of a second, and the bot keeps answering (webhooks,
        /status) meanwhile. The checker is a renderer of its own, shared with nothing."""
        log.info("reloading the config (SIGHUP)")
        try:
            new = self._load()
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, the running config stays: %s", problem)
            return False
        checker = Renderer(
            formats=self._renderer.formats,
            user_dir=new.templates.dir,
            route_dirs=new.route_template_dirs,
            locale=new.behaviour.locale,
        )
        # The languages the new config uses: loading every one would keep all their
        # CLDR data in memory (`check` renders every language).
        problems = await asyncio.to_thread(checker.check, sample_events(), new.locales_in_use)
        for problem in problems:
            log.error("reload refused, the running config stays: template %s", problem)
        if problems:
            return False
        self._apply(new)
        for key in restart_needed(self.config, new):
            log.warning("reload: %s changed; that takes effect at the next restart", key)
        before = {entry.name for entry in self.config.sources}
        after = {entry.name for entry in new.sources}
        added, removed = sorted(after - before), sorted(before - after)
        log.info(
            "reloaded: %d routes, %d sources%s%s, templates from %s",
            len(new.routes),
            len(new.sources),
            f" (added {', '.join(added)})" if added else "",
            f" (removed {', '.join(removed)})" if removed else "",
            new.templates.dir or "the built-in set",
        )
        self.config = _keep_restart_sections(self.config, new)
        return True

    def _apply(self, new: Config) -> None:
        routes = new.routes
        self._renderer.reload(
            new.templates.dir, new.route_template_dirs, locale=new.behaviour.locale
        )
        self._dispatcher.reconfigure(routes=routes, behaviour=new.behaviour)
        if self._preflight is not None:
            # Every target again: new ones, and permissions that changed meanwhile.
            self._preflight.reconfigure(routes=routes)
        for worker in self._workers.values():
            worker.max_age = new.delivery.max_age
        sources = self._build_sources(new)
        # A source whose entry did not change keeps running as it is: one that works
        # beside the listener (Twitch) keeps its state and does not start over.
        for entry in new.sources:
            # Compared by value: an entry's options are a dict, so entries do not hash.
            if entry in self.config.sources and entry.name in self._sources:
                sources[entry.name] = self._sources[entry.name]
        self._sources.clear()
        self._sources.update(sources)
        followers = None
        if self._source_runner is not None:
            self._source_runner.replace(sources)
            followers = self._source_runner.followers
        self._commands.reconfigure(routes=routes, followers=followers, locale=new.behaviour.locale)
        if new.logging != self.config.logging:
            setup_logging(self._log_level or new.logging.level, new.logging.format)


def _keep_restart_sections(old: Config, new: Config) -> Config:
    """`new`, but with the sections still running from `old` (so later diffs stay true)."""
    kept: dict[str, Any] = {section: getattr(old, section) for section in RESTART_SECTIONS}
    return dataclasses.replace(new, **kept)
