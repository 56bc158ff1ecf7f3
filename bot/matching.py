"""Matching stream text that nobody trusts: category globs and linear-time title regexes.

Stream titles are written by strangers, and route patterns by admins who may not know
what catastrophic backtracking is: `(a+)+$` against a long title makes Python's `re`
run for minutes. Titles are therefore matched with RE2 (google-re2), whose automaton
runs in time linear in the title whatever the pattern, and which refuses the features
that cannot be matched so (backreferences, lookaround) when the pattern is read, so
`check` names the key. Categories are matched with globs, case-insensitively, as the
streamer keys in routes are.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Final

import re2

#: RE2's memory budget per pattern (its default is 8 MiB); a pattern needing more is
#: refused when it is read.
MAX_MEMORY: Final = 1 << 22


class PatternError(ValueError):
    """A regex RE2 cannot use; the message says why, without the pattern."""


class TitlePattern:
    """A compiled, linear-time, case-insensitive regex for stream titles."""

    __slots__ = ("_compiled", "source")

    def __init__(self, source: str) -> None:
        options = re2.Options()
        options.log_errors = False  # the error is raised (and named by key), not printed
        options.case_sensitive = False
        options.max_mem = MAX_MEMORY
        try:
            self._compiled = re2.compile(source, options)
        except re2.error as exc:
            detail = exc.args[0] if exc.args else "not a valid pattern"
            if isinstance(detail, bytes):
                detail = detail.decode(errors="replace")
            raise PatternError(str(detail)) from None
        self.source = source

    def __repr__(self) -> str:
        return f"TitlePattern({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TitlePattern) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def search(self, title: str) -> bool:
        """Whether the pattern occurs anywhere in `title` (in time linear in its length:
        a title is bounded by the webhook's body limit anyway)."""
        return self._compiled.search(title) is not None


def category_matches(categories: Iterable[str], globs: Iterable[str]) -> bool:
    """Whether any category matches any glob, ignoring case ("just chatting" matches
    "Just Chatting", "celeste*" matches "Celeste Classic")."""
    folded = [glob.casefold() for glob in globs]
    return any(
        fnmatch.fnmatchcase(category.casefold(), glob)
        for category in categories
        for glob in folded
    )
