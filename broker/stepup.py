"""Scope step-up: a server said a token lacks scope (HTTP 403
`insufficient_scope`, RFC 6750 section 3.1; the MCP authorization spec's
"scope challenge"), so the next login asks for more.

Pure rules, kept in the connection's settings (so a restart keeps them):

- the next login asks for the union of the scopes asked before and the
  challenged ones (never fewer: a step-up must not drop what works);
- a login that earns the challenged scopes ends the step-up (nothing is
  counted against them);
- a login that does not earn a missing scope counts one attempt at that
  scope, across challenges: after `MAX_ATTEMPTS` such logins the scope is
  refused, and a challenge naming only refused scopes is not asked for again
  (the server does not grant them; asking the user to log in once more, or
  alternating between two challenges, would loop);
- a challenge for scopes the token already carried is held against the
  server: the next login cannot prove it earned them, so it counts too;
- a login the authorization server refused for its scope (`invalid_scope`)
  earned nothing, so it counts as one that did not earn them (held or not);
- once a step-up is given up, the next login asks for the scopes asked before
  it began: a scope the server will not grant must not break every login.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_SCOPES",
    "StepUp",
    "check_scopes",
    "after_login",
    "after_refused_login",
    "logins_given_up",
    "next_request",
    "on_challenge",
    "union",
]

#: Logins for the same challenged set before the broker stops asking.
MAX_ATTEMPTS = 2
#: At most this many scopes in one challenge, each at most 128 characters.
MAX_SCOPES = 32
_SCOPE_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "\\"}  # RFC 6749 3.3 NQCHAR


@dataclass(frozen=True)
class StepUp:
    #: The scope the server's challenge named, in its order.
    scopes: tuple[str, ...]
    #: Those of `scopes` the token did not carry (all of them if it carried them all).
    missing: tuple[str, ...]
    #: A login is needed (the user is told so).
    pending: bool = True
    #: Every missing scope is refused: no longer asked for.
    given_up: bool = False
    #: Logins that did not earn each scope, across challenges: (scope, count).
    tries: tuple[tuple[str, int], ...] = ()
    #: Scopes `MAX_ATTEMPTS` logins did not earn.
    refused: tuple[str, ...] = ()
    #: The token carried every challenged scope: a login cannot show it earned them.
    held: bool = False
    #: The connection's scopes before the step-up widened them (restored when it is
    #: given up); None in files written before they were kept.
    before: tuple[str, ...] | None = None

    @property
    def attempts(self) -> int:
        """Logins that did not earn the missing scopes (the most for any of them)."""
        counts = dict(self.tries)
        return max((counts.get(s, 0) for s in self.missing), default=0)

    @property
    def logins_left(self) -> int:
        """Logins that may still not earn the missing scopes before the broker
        stops asking: the most any scope not yet refused has left. A scope
        refused in an earlier challenge and named again has none left, and its
        earlier logins are not this step-up's."""
        counts = dict(self.tries)
        return max((MAX_ATTEMPTS - counts.get(s, 0) for s in self.missing if s not in self.refused), default=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "scopes": list(self.scopes),
            "missing": list(self.missing),
            "attempts": self.attempts,
            "pending": self.pending,
            "given_up": self.given_up,
            "tries": dict(self.tries),
            "refused": list(self.refused),
            "held": self.held,
            "before": list(self.before) if self.before is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepUp:
        missing = tuple(str(s) for s in data.get("missing") or ())
        given_up = bool(data.get("given_up", False))
        tries = data.get("tries")
        if isinstance(tries, dict):
            counts = tuple((str(k), int(v)) for k, v in tries.items())
        else:  # written before per-scope counts: the set's count for each of its scopes
            attempts = int(data.get("attempts") or 0)
            counts = tuple((s, attempts) for s in missing) if attempts else ()
        refused = data.get("refused")
        before = data.get("before")
        return cls(
            scopes=tuple(str(s) for s in data.get("scopes") or ()),
            missing=missing,
            pending=bool(data.get("pending", True)),
            given_up=given_up,
            tries=counts,
            refused=tuple(str(s) for s in refused) if isinstance(refused, list) else (missing if given_up else ()),
            held=bool(data.get("held", False)),
            before=tuple(str(s) for s in before) if isinstance(before, list) else None,
        )


def check_scopes(value: object, max_count: int = MAX_SCOPES, *, allow_empty: bool = False) -> tuple[str, ...] | None:
    """The scopes of a report (or of an adopted token, `broker.service.adoption`),
    or None when they are not a list of 1 (0 with `allow_empty`) to `max_count`
    RFC 6749 scope tokens of at most 128 characters."""
    if not isinstance(value, list) or not (0 if allow_empty else 1) <= len(value) <= max_count:
        return None
    for scope in value:
        if not isinstance(scope, str) or not 0 < len(scope) <= 128 or not _SCOPE_CHARS.issuperset(scope):
            return None
    return tuple(dict.fromkeys(value))


def union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def on_challenge(
    current: StepUp | None, challenged: tuple[str, ...], granted: tuple[str, ...], *, asked: tuple[str, ...] = ()
) -> StepUp:
    """The step-up after the server challenged for `challenged` a token that
    carried `granted`, while the connection's settings asked for `asked`."""
    lacking = tuple(s for s in challenged if s not in granted)
    missing = lacking or challenged
    tries = current.tries if current is not None else ()
    refused = current.refused if current is not None else ()
    given_up = set(missing) <= set(refused)
    # A step-up still under way widened `asked` already: keep what came before it.
    before = current.before if current is not None and not current.given_up else asked
    return StepUp(
        scopes=challenged,
        missing=missing,
        pending=not given_up,
        given_up=given_up,
        tries=tries,
        refused=refused,
        held=not lacking,
        before=before,
    )


def after_login(current: StepUp | None, granted: tuple[str, ...]) -> StepUp | None:
    """The step-up after a login whose token carries `granted`: None once it
    earned the missing scopes, else one more attempt at each it did not earn."""
    if current is None or not current.pending:
        return current
    unearned = current.missing if current.held else tuple(s for s in current.missing if s not in granted)
    if not unearned:
        return None
    counts = dict(current.tries)
    for scope in unearned:
        counts[scope] = counts.get(scope, 0) + 1
    refused = union(current.refused, tuple(s for s in unearned if counts[s] >= MAX_ATTEMPTS))
    given_up = set(unearned) <= set(refused)
    # A held challenge's login did what it could: wait for the server's next word.
    return replace(
        current,
        tries=tuple(counts.items()),
        refused=refused,
        given_up=given_up,
        pending=not (given_up or current.held),
    )


def after_refused_login(current: StepUp | None) -> StepUp | None:
    """The step-up after a login the authorization server refused for its
    scope (`invalid_scope`): it earned nothing, so it counts like a login
    whose token carried none of the missing scopes. That holds for a challenge
    the old token carried too (`held`): there is no new token, so the step-up
    stays pending until it gives up, rather than waiting for a challenge that
    no login will bring."""
    if current is None:
        return None
    after = after_login(replace(current, held=False), ())
    return replace(after, held=current.held) if after is not None else None


def logins_given_up(before: StepUp, after: StepUp) -> int:
    """Logins that did not earn the scopes the login from `before` to `after`
    gave up on: those it refused, not those refused in an earlier challenge
    (asked for again, they count more logins than this step-up had)."""
    counts = dict(after.tries)
    refused_now = [s for s in after.refused if s not in before.refused]
    return max((counts.get(s, 0) for s in refused_now), default=after.attempts)


def next_request(step: StepUp | None, scopes: tuple[str, ...]) -> tuple[str, ...]:
    """The scopes the next login asks for, the connection's being `scopes`:
    those asked before the step-up once it is given up (a file without them:
    `scopes` less the refused ones), else `scopes` unchanged."""
    if step is None or not step.given_up:
        return scopes
    if step.before is not None:
        return step.before
    return tuple(s for s in scopes if s not in step.refused)
