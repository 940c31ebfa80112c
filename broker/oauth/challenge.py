"""`WWW-Authenticate` parsing (RFC 9110 section 11.6.1, RFC 6750 section 3).

A total function: any header value, however hostile, gives a list of
challenges (possibly empty) and never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Challenge", "BearerChallenge", "parse_www_authenticate", "bearer_challenge", "insufficient_scope"]

MAX_HEADER = 8192
_TCHAR = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68_EXTRA = set("-._~+/")


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercased
    params: tuple[tuple[str, str], ...]  # names lowercased, first occurrence kept

    def get(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class BearerChallenge:
    resource_metadata: str | None
    scope: tuple[str, ...] | None
    error: str | None


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t":
        i += 1
    return i


def _token(s: str, i: int) -> tuple[str, int]:
    j = i
    while j < len(s) and s[j] in _TCHAR:
        j += 1
    return s[i:j], j


def _quoted(s: str, i: int) -> tuple[str, int]:
    # s[i] == '"'
    out: list[str] = []
    i += 1
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        elif ch == '"':
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out), i  # unterminated: take what there is


def parse_www_authenticate(value: str) -> list[Challenge]:
    s = value[:MAX_HEADER]
    challenges: list[Challenge] = []
    i = 0
    while i < len(s):
        i = _skip_ws(s, i)
        if i < len(s) and s[i] == ",":
            i += 1
            continue
        scheme, j = _token(s, i)
        if not scheme:
            # Not a challenge start: skip to the next comma.
            nxt = s.find(",", i + 1)
            i = len(s) if nxt < 0 else nxt + 1
            continue
        i = j
        params: dict[str, str] = {}
        while True:
            k = _skip_ws(s, i)
            while k < len(s) and s[k] in ", \t":
                k += 1
            name, after_name = _token(s, k)
            if not name:
                # token68 form, or junk: skip it up to the next comma.
                if k < len(s) and (s[k].isalnum() or s[k] in _TOKEN68_EXTRA):
                    nxt = s.find(",", k)
                    i = len(s) if nxt < 0 else nxt
                    continue
                i = k
                break
            eq = _skip_ws(s, after_name)
            if eq >= len(s) or s[eq] != "=":
                # A bare token: the start of the next challenge.
                i = k
                break
            v = _skip_ws(s, eq + 1)
            if v < len(s) and s[v] == '"':
                val, i = _quoted(s, v)
            else:
                val, i = _token(s, v)
                if not val:
                    # token68 padding ("abc==") or an empty value.
                    while i < len(s) and s[i] == "=":
                        i += 1
            params.setdefault(name.lower(), val)
        challenges.append(Challenge(scheme.lower(), tuple(params.items())))
        if i >= len(s):
            break
    return challenges


def bearer_challenge(header_values: list[str]) -> BearerChallenge | None:
    """The first Bearer challenge among all `WWW-Authenticate` values."""
    for value in header_values:
        for challenge in parse_www_authenticate(value):
            if challenge.scheme == "bearer":
                scope = challenge.get("scope")
                return BearerChallenge(
                    resource_metadata=challenge.get("resource_metadata") or None,
                    scope=tuple(scope.split()) if scope is not None else None,
                    error=challenge.get("error") or None,
                )
    return None


def insufficient_scope(header_values: list[str]) -> tuple[str, ...] | None:
    """The scope a 403's Bearer challenge asks for when its error is
    `insufficient_scope` (RFC 6750 section 3.1, the MCP spec's scope
    challenge); None for any other answer, or one that names no scope."""
    challenge = bearer_challenge(header_values)
    if challenge is None or challenge.error != "insufficient_scope" or not challenge.scope:
        return None
    return challenge.scope
