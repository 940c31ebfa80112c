"""How long a token has left, as text: one formatter for the CLI and the app.

Standard library only: the desktop app's table imports it before the first
paint. The two styles differ on purpose. The CLI prints a coarse word
("in 5 min") that stays true for a while in a terminal or a log, beside the
local clock time (`expiry`); the app's table repaints every second, so it
counts down ("1h 05m", "4:59").
"""

from __future__ import annotations

import time
from typing import Literal

__all__ = ["expiry", "time_left"]


def time_left(expires_at: int | None, now: float, *, style: Literal["words", "clock"] = "words") -> str:
    """`expires_at` (epoch seconds, None: no expiry) seen from `now`, in `style`."""
    if expires_at is None:
        return "no expiry" if style == "words" else "—"
    left = int(expires_at - now)
    if left <= 0:
        return "expired"
    if style == "clock":
        hours, rest = divmod(left, 3600)
        minutes, seconds = divmod(rest, 60)
        if hours >= 48:
            return f"{hours // 24}d {hours % 24}h"
        if hours:
            return f"{hours}h {minutes:02d}m"
        return f"{minutes}:{seconds:02d}"
    if left < 120:
        return f"in {left} s"
    if left < 7200:
        return f"in {left // 60} min"
    if left < 2 * 86400:
        return f"in {left // 3600} h"
    return f"in {left // 86400} days"


def expiry(expires_at: int | None, now: float) -> str:
    """For people at a terminal: "expires 14:32 (in 9 min)" in local time, the
    date added when it is not today; "expired 14:32"; "no expiry"."""
    if expires_at is None:
        return "no expiry"
    when = time.localtime(expires_at)
    same_day = when[:3] == time.localtime(now)[:3]
    clock = time.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M", when)
    if expires_at <= now:
        return f"expired {clock}"
    return f"expires {clock} ({time_left(expires_at, now)})"
