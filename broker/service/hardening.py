"""Keep tokens out of core dumps and out of reach of ptrace.

`serve`, `proxy` and the desktop app hold access tokens, refresh tokens and
client secrets in memory. A core dump would write them to disk (or hand them
to a crash reporter), and any process of the same user could read them with
ptrace or /proc/PID/mem. So, first thing at start:

- `RLIMIT_CORE` 0, soft and hard: no core file, and nothing can raise it again
  without privilege (children inherit it, which is fine: the broker only starts
  a browser helper).
- Linux: `prctl(PR_SET_DUMPABLE, 0)`. No core dump even through a piped
  `core_pattern`, and ptrace and the private /proc/PID files (mem, environ,
  maps, fd) need CAP_SYS_PTRACE: /proc/PID/* then belongs to root. It does not
  survive `exec`, so the desktop app sets it in its own process, not the
  `gui` command that execs it.

This is not a sandbox: malware running as the user can still, say, replace
the broker's executable. It stops the casual and the accidental leaks.
"""

from __future__ import annotations

import sys

__all__ = ["harden_process"]

_PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def harden_process() -> None:
    """No core dumps; on Linux, not dumpable (so not ptrace-able by the same user).
    A failure is logged, never fatal: the broker still works without it."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except ImportError:  # Windows
        pass
    except (ValueError, OSError) as exc:
        _warn("could not disable core dumps: %s", exc)
    if sys.platform.startswith("linux"):
        _not_dumpable()


def _not_dumpable() -> None:
    import ctypes
    import os

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        _warn("could not make the process non-dumpable: %s", exc)


def _warn(text: str, exc: BaseException) -> None:
    # `logging` only here: the thin proxy calls harden_process and never logs (5 ms of import).
    import logging

    logging.getLogger(__name__).warning(text, exc)
