"""The audit log folded for people: one line per client, connection, outcome and minute.

A proxy that asks for a token on every request writes hundreds of identical
lines a minute; shown one by one they push a refusal or a new client out of
sight. Recent activity (the app's Details) and `audit` show such repeats as
one line with a count ("Claude Code (pid 7) got github's token ×42"). The
audit file itself keeps every line (`audit --raw`, `audit --json`).

Pure: no I/O, no clock. Entries are `read_audit`'s dicts, oldest first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Fold", "fold", "describe"]

#: Keys that differ between repeats of the same event: when it happened, and
#: the pid of the broker's own `token`/`headers` command (a new one per call).
_VOLATILE = frozenset({"time", "peer_pid"})


@dataclass(frozen=True)
class Fold:
    """`count` entries alike but for their times, `first` to `last`; `entry` is the last one."""

    entry: dict[str, Any]
    count: int
    first: float
    last: float


def _time(entry: dict[str, Any]) -> float:
    value = entry.get("time")
    return float(value) if isinstance(value, (int, float)) else 0.0


def _key(entry: dict[str, Any]) -> tuple[int, str]:
    """Same minute (since the epoch, so the same local minute in every zone that
    is whole minutes off UTC) and the same everything else: client, pid,
    executable, connection, outcome, detail, who answered."""
    rest = {k: v for k, v in entry.items() if k not in _VOLATILE}
    return int(_time(entry) // 60), json.dumps(rest, sort_keys=True, default=str)


def fold(entries: Iterable[dict[str, Any]]) -> list[Fold]:
    """Group repeats; groups come in the order of their last entry (oldest first)."""
    groups: dict[tuple[int, str], list[Any]] = {}  # key -> [first, last, count, entry, position]
    for position, entry in enumerate(entries):
        at = _time(entry)
        group = groups.get(key := _key(entry))
        if group is None:
            groups[key] = [at, at, 1, entry, position]
        else:
            group[0], group[1] = min(group[0], at), max(group[1], at)
            group[2] += 1
            group[3], group[4] = entry, position
    ordered = sorted(groups.values(), key=lambda g: (g[1], g[4]))
    return [Fold(entry=g[3], count=g[2], first=g[0], last=g[1]) for g in ordered]


def describe(item: Fold) -> str:
    """One sentence, without the time: "Cursor (pid 9) was refused linear's token ×3"."""
    e = item.entry
    who = str(e.get("client") or "?") + (f" (pid {e['pid']})" if e.get("pid") is not None else "")
    token = f"{e.get('connection')}'s token"
    detail = e.get("detail")
    outcome = e.get("outcome")
    if outcome == "served":
        text = f"{who} got {token}"
    elif outcome == "denied":
        text = f"{who} was refused {token}"
    elif outcome == "failed":
        text = f"{who} could not get {token}" + (f" ({detail})" if detail else "")
    elif outcome == "answered":
        text = f"{who} asked for {token}: {detail or e.get('decision')}"
    elif outcome == "answer_refused":
        text = f"{who} asked for {token}: an answer was refused" + (f" ({detail})" if detail else "")
    elif outcome == "identity_changed":
        text = f"{who} was refused: {detail or 'the process changed'}"
    else:
        words = str(outcome or "?").replace("_", " ")
        text = " ".join(part for part in (who, words, e.get("connection"), detail) if part)
    return f"{text} ×{item.count}" if item.count > 1 else text
