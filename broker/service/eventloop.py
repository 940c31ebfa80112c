"""The event loop the broker runs on (`serve`, and the app's service thread).

uvloop (libuv) where it is installed, asyncio's own loop otherwise. Every
message of every hosted proxy session (`broker.service.proxy_session`) passes
through this loop twice, through some twenty task switches and socket
operations; on uvloop the broker spends about 8% less CPU per `tools/call`
(`benchmarks/proxy_bench.py`), and the socket API answers faster too.

`MCP_TOKEN_BROKER_EVENT_LOOP=asyncio` picks the standard loop: for a bug
report, or a platform where uvloop misbehaves. Nothing in the broker depends on
which loop runs: it uses asyncio's public API only (`/v1/health` says which).
Any other value is a typo: a warning names the accepted ones and the loop
that runs (uvloop where it loads).
A uvloop that fails to load (a broken binary raises more than ImportError) is
a warning too, and the standard loop runs: `serve` must not fail for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

__all__ = ["ENV", "loop_factory", "loop_name", "run"]

ENV = "MCP_TOKEN_BROKER_EVENT_LOOP"

T = TypeVar("T")

log = logging.getLogger(__name__)


def loop_factory(environ: Mapping[str, str] = os.environ) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's `new_event_loop`, or None for asyncio's (asked for, or uvloop
    missing or broken)."""
    value = environ.get(ENV, "")
    choice = value.strip().lower()
    if choice == "asyncio":
        return None
    factory = _uvloop()
    if choice not in ("", "uvloop"):  # after the import: the warning names the loop that runs
        running = "uvloop" if factory is not None else "asyncio's standard loop"
        log.warning('%s=%r is neither "uvloop" nor "asyncio"; running on %s', ENV, value[:64], running)
    return factory


def _uvloop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's `new_event_loop`, or None where it is missing or broken."""
    try:
        import uvloop
    except ImportError:  # not installed (a platform without wheels): the standard loop serves
        return None
    except Exception as exc:  # noqa: BLE001 - a broken build must not stop the broker
        log.warning("uvloop failed to load (%s: %s); running on asyncio's standard loop", type(exc).__name__, exc)
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], *, environ: Mapping[str, str] = os.environ) -> T:
    """`asyncio.run(main)` on the loop `loop_factory` picks."""
    with asyncio.Runner(loop_factory=loop_factory(environ)) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """ "uvloop" or "asyncio" (`/v1/health`)."""
    return "uvloop" if type(loop).__module__.partition(".")[0] == "uvloop" else "asyncio"
