"""Scope step-up: a server said a token lacks scope (HTTP 403
`insufficient_scope`, RFC 6750 section 3.1; the MCP authorization spec's
"scope challenge"), so the next login asks for more.

Pure rules, kept in the connection's settings (so a restart keeps them):

- the next login asks for the union of the scopes asked before and the
  challenged ones (never fewer: a step-up must not drop what works);
- a login counts as one attempt at the challenged set; once it is granted
  the step-up is done;
- the same set challenged again after `MAX_ATTEMPTS` logins that did not
  earn it is not asked for again: the server does not grant it, and asking
  the user to log in once more would loop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["MAX_ATTEMPTS", "MAX_SCOPES", "StepUp", "check_scopes", "after_login", "on_challenge", "union"]

#: Logins for the same challenged set before the broker stops asking.
MAX_ATTEMPTS = 2
#: At most this many scopes in one challenge, each at most 128 characters.
MAX_SCOPES = 32
_SCOPE_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "\\"}  # RFC 6749 3.3 NQCHAR


@dataclass(frozen=True)
class StepUp:
    #: The scope the server's challenge named, in its order.
    scopes: tuple[str, ...]
    #: Those of `scopes` the token did not carry: what a login will newly ask for.
    missing: tuple[str, ...]
    #: Logins completed since this set was first challenged.
    attempts: int = 0
    #: A login is needed (the user is told so).
    pending: bool = True
    #: `MAX_ATTEMPTS` logins did not earn it: no longer asked for.
    given_up: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "scopes": list(self.scopes),
            "missing": list(self.missing),
            "attempts": self.attempts,
            "pending": self.pending,
            "given_up": self.given_up,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepUp:
        return cls(
            scopes=tuple(str(s) for s in data.get("scopes") or ()),
            missing=tuple(str(s) for s in data.get("missing") or ()),
            attempts=int(data.get("attempts") or 0),
            pending=bool(data.get("pending", True)),
            given_up=bool(data.get("given_up", False)),
        )


def check_scopes(value: object) -> tuple[str, ...] | None:
    """The scopes of a report, or None when they are not a list of 1 to
    `MAX_SCOPES` RFC 6749 scope tokens."""
    if not isinstance(value, list) or not 0 < len(value) <= MAX_SCOPES:
        return None
    for scope in value:
        if not isinstance(scope, str) or not 0 < len(scope) <= 128 or not _SCOPE_CHARS.issuperset(scope):
            return None
    return tuple(dict.fromkeys(value))


def union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def on_challenge(current: StepUp | None, challenged: tuple[str, ...], granted: tuple[str, ...]) -> StepUp:
    """The step-up after the server challenged for `challenged` a token that carried `granted`."""
    missing = tuple(s for s in challenged if s not in granted) or challenged
    if current is not None and set(current.scopes) == set(challenged):
        if current.attempts >= MAX_ATTEMPTS:
            return replace(current, pending=False, given_up=True)
        return replace(current, missing=missing, pending=not current.given_up)
    return StepUp(scopes=challenged, missing=missing)


def after_login(current: StepUp | None, granted: tuple[str, ...]) -> StepUp | None:
    """The step-up after a login whose token carries `granted`."""
    if current is None or not current.pending:
        return current
    attempts = current.attempts + 1
    if set(current.scopes) <= set(granted):
        return replace(current, attempts=attempts, pending=False)
    if attempts >= MAX_ATTEMPTS:
        return replace(current, attempts=attempts, pending=False, given_up=True)
    return replace(current, attempts=attempts)
