"""The `mcp-token-broker` console script.

`token` and `headers` run on every request an MCP client makes, so they take
a fast path: the standard library's socket and json, nothing else (no
argparse-heavy CLI, no asyncio, httpx, keyring, cryptography, platformdirs
or Qt). `proxy NAME` goes straight to `broker.client.proxy`, whose start-up
is the SDK's import: the CLI's parser and its modules would only add to it.
Everything else goes to `broker.cli.main`.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

_FAST = ("token", "headers")


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
        from .proxy import main as proxy_main

        return proxy_main(args[1])
    from ..cli.main import main as full_main

    return full_main(args)
