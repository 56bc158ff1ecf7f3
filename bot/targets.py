"""What is known to be wrong with a chat target (a channel, chat or topic), in one place.

Problems come from the preflight (the platforms' read calls at start and in
`check --online`) and from sending (a Discord channel that drops embeds, a Telegram group
that became a supergroup). Each is one line a user can act on. /healthz lists them
(`targets`), /status shows a chat's own to its admins, and each is logged once, when it
first appears or changes. A target problem never makes /healthz fail: a restart would
not fix a missing permission.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

log = logging.getLogger(__name__)

Origin = Literal["preflight", "send"]

PREFLIGHT: Final[Origin] = "preflight"
SEND: Final[Origin] = "send"


@dataclass(frozen=True, slots=True)
class TargetProblem:
    """One thing wrong with one target, said so that a user can fix it."""

    sink: str
    target: str
    #: A stable word for the kind of problem (not_found, not_text, missing_permissions,
    #: no_embed_links, moved, ...): the key /healthz and tests use.
    kind: str
    #: What is wrong and what to do, plain text, one sentence or two (no markup: each
    #: place that shows it escapes it).
    detail: str
    #: True when nothing can be posted there; False when posts go out degraded (a card
    #: without its embed) or a config change is due (a chat that moved).
    blocking: bool = True
    #: Who found it: the preflight (replaced on every re-check) or a send (kept until the
    #: sink says it is resolved, or the process ends).
    origin: Origin = PREFLIGHT

    def describe(self) -> str:
        """The log line's and /status's wording: the target, then the detail."""
        return f"{self.sink} {self.target}: {self.detail}"


class TargetProblems:
    """The problems known now, by (sink, target, kind); shared by every sink and reader."""

    def __init__(self) -> None:
        self._problems: dict[tuple[str, str, str], TargetProblem] = {}
        #: Set by the preflight runner: called with (sink, target) when a send hit a
        #: permission-related error, so that target is checked again.
        self.on_recheck: Callable[[str, str], None] | None = None

    def request_recheck(self, sink: str, target: str) -> None:
        """A send to `target` was refused in a way a permission change explains: have
        the preflight look at it again (nothing happens when no preflight runs)."""
        if self.on_recheck is not None:
            self.on_recheck(sink, target)

    def report(self, problem: TargetProblem) -> bool:
        """Record `problem`; logs and returns True when it is new or its detail changed."""
        key = (problem.sink, problem.target, problem.kind)
        known = self._problems.get(key)
        self._problems[key] = problem
        if known is not None and known.detail == problem.detail:
            return False
        log.warning("%s", problem.describe())
        return True

    def resolve(self, sink: str, target: str, kind: str | None = None) -> None:
        """Forget `target`'s problems of `kind` (all of them when None)."""
        for key in [k for k in self._problems if k[:2] == (sink, target)]:
            if kind is None or key[2] == kind:
                problem = self._problems.pop(key)
                log.info("%s %s: resolved (%s)", sink, target, problem.kind)

    def replace(self, sink: str, targets: Iterable[str], found: Iterable[TargetProblem]) -> None:
        """A preflight of `targets` found `found`: their earlier preflight results go,
        problems a send reported stay, and each new or changed problem is logged once."""
        checked = set(targets)
        fresh = {(p.sink, p.target, p.kind): p for p in found}
        for key, problem in list(self._problems.items()):
            if (
                problem.origin == PREFLIGHT
                and key[0] == sink
                and key[1] in checked
                and key not in fresh
            ):
                del self._problems[key]
                log.info("%s %s: resolved (%s)", sink, key[1], problem.kind)
        for problem in fresh.values():
            self.report(problem)

    def for_chat(self, sink: str, chat: str) -> list[TargetProblem]:
        """The problems of a chat and of its topics ("-100123" and "-100123/42")."""
        return [
            problem
            for (p_sink, target, _kind), problem in sorted(self._problems.items())
            if p_sink == sink and (target == chat or target.partition("/")[0] == chat)
        ]

    def all(self) -> list[TargetProblem]:
        """Every known problem, in (sink, target, kind) order."""
        return [self._problems[key] for key in sorted(self._problems)]

    def as_json(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """/healthz `targets`: {sink: {target: [{kind, detail, blocking}, ...]}}."""
        report: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for problem in self.all():
            report.setdefault(problem.sink, {}).setdefault(problem.target, []).append(
                {"kind": problem.kind, "detail": problem.detail, "blocking": problem.blocking}
            )
        return report
