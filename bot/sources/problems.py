"""What is known to be wrong with a source's side of things, in one place.

A source that keeps state with its provider (Twitch's EventSub subscriptions) can find
that notifications for a channel will not come: a subscription revoked, a callback Twitch
could not verify, a login that names no user, credentials refused. Each is one line a
user can act on. /healthz lists them (`sources`), /status shows the ones about streams a
chat follows (and the source-wide ones) to its admins, and each is logged once, when it
first appears or changes. Like a target problem it never makes /healthz fail: a restart
would not fix a wrong callback URL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.events import glob_match

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """One thing wrong with one source, or with one stream it follows."""

    source: str
    #: The streamer key it is about ("twitch/quinn"), or "" for the whole source.
    streamer: str
    #: A stable word for the kind of problem (revoked, verification_failed,
    #: unknown_user, credentials, ...): the key /healthz and tests use.
    kind: str
    #: What is wrong and what to do, plain text (each place that shows it escapes it).
    detail: str

    def describe(self) -> str:
        """The log line's wording: the source and stream, then the detail."""
        about = f" {self.streamer}" if self.streamer else ""
        return f"source {self.source}{about}: {self.detail}"


class SourceProblems:
    """The problems known now, by (source, streamer, kind); shared by sources and readers."""

    def __init__(self) -> None:
        self._problems: dict[tuple[str, str, str], SourceProblem] = {}

    def report(self, problem: SourceProblem) -> bool:
        """Record `problem`; logs and returns True when it is new or its detail changed."""
        key = (problem.source, problem.streamer, problem.kind)
        known = self._problems.get(key)
        self._problems[key] = problem
        if known is not None and known.detail == problem.detail:
            return False
        log.warning("%s", problem.describe())
        return True

    def resolve(self, source: str, streamer: str, kind: str | None = None) -> None:
        """Forget `streamer`'s problems of `kind` (all of them when None)."""
        for key in [k for k in self._problems if k[:2] == (source, streamer)]:
            if kind is None or key[2] == kind:
                problem = self._problems.pop(key)
                about = f" {streamer}" if streamer else ""
                log.info("source %s%s: resolved (%s)", source, about, problem.kind)

    def kinds(self, source: str, streamer: str) -> set[str]:
        """The kinds of problem known now for one stream of a source."""
        return {kind for (src, who, kind) in self._problems if (src, who) == (source, streamer)}

    def forget_source(self, source: str, keep: Iterable[str] = ()) -> None:
        """Drop every problem of `source` except those about the streamers in `keep`
        (a reload removed the source, or stopped following some streams)."""
        kept = set(keep)
        for key in [k for k in self._problems if k[0] == source and k[1] not in kept]:
            del self._problems[key]

    def for_patterns(self, patterns: Iterable[str]) -> list[SourceProblem]:
        """The problems a chat following `patterns` should hear of: those about a stream
        a pattern matches, and every source-wide one."""
        wanted = list(patterns)
        return [
            problem
            for problem in self.all()
            if not problem.streamer or any(glob_match(problem.streamer, p) for p in wanted)
        ]

    def all(self) -> list[SourceProblem]:
        """Every known problem, in (source, streamer, kind) order."""
        return [self._problems[key] for key in sorted(self._problems)]

    def as_json(self) -> dict[str, list[dict[str, Any]]]:
        """/healthz `sources`: {source: [{streamer, kind, detail}, ...]}."""
        report: dict[str, list[dict[str, Any]]] = {}
        for problem in self.all():
            report.setdefault(problem.source, []).append(
                {
                    "streamer": problem.streamer or None,
                    "kind": problem.kind,
                    "detail": problem.detail,
                }
            )
        return report
