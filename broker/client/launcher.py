"""The `mcp-token-broker` console script.

`token` and `headers` run on every request an MCP client makes, so they take
a fast path: the standard library's socket and json, nothing else (no
argparse-heavy CLI, no asyncio, httpx, keyring, cryptography, platformdirs
or Qt). `proxy NAME` goes straight to `broker.client.proxy`, whose start-up
is the SDK's import: the CLI's parser and its modules would only add to it.
Everything else goes to `broker.cli.main`.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]

_FAST = ("token", "headers")
#: As `broker.cli.main.DEBUG_ENV`: set, an internal error shows its traceback.
DEBUG_ENV = "MCP_TOKEN_BROKER_DEBUG"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in _FAST and not any(a in ("-h", "--help") for a in args):
        from .fastpath import run

        code = run(args)
        if code is not None:
            return code
    if len(args) == 2 and args[0] == "proxy" and not args[1].startswith("-"):
        from .proxy_thin import run as hosted

        code = hosted(args[1])  # the broker runs the session; None: it cannot
        if code is not None:
            return code
        return _proxy(args[1])
    from ..cli.main import main as full_main

    return full_main(args)


def _proxy(name: str) -> int:
    """The in-process proxy, with the CLI's promise (`broker.cli.main`): one
    line on stderr, never a traceback, without loading the CLI's parser."""
    from .proxy import main as proxy_main

    try:
        return proxy_main(name)
    except KeyboardInterrupt:
        print("mcp-token-broker: cancelled", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        if os.environ.get(DEBUG_ENV):
            raise
        print(
            f"mcp-token-broker: internal error ({type(exc).__name__}); rerun with {DEBUG_ENV}=1 for details",
            file=sys.stderr,
            flush=True,
        )
        return 1
