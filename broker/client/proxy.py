"""`mcp-token-broker proxy NAME`: a stdio MCP server that forwards to the
remote one, for clients that only start local (stdio) servers.

Messages pass through unchanged between the official SDK's stdio server
transport and its streamable HTTP client transport. Each HTTP request takes
a current token from the broker service (`httpx2_auth`), so a long session
never runs on an expired token and the proxy never refreshes on its own. A
401 from the server is reported to the broker (`/token/rejected`, by hash)
before the token is fetched again, so a token the server revoked early, or
one without an expiry, is replaced.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["run_proxy"]

log = logging.getLogger(__name__)


async def _pump(source: Any, sink: Any, what: str) -> None:
    async with sink:
        async for message in source:
            if isinstance(message, Exception):
                log.warning("%s: %s", what, message)
                continue
            await sink.send(message)


async def run_proxy(name: str, server_url: str, *, client: Any = None) -> None:
    import anyio
    import httpx2
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.stdio import stdio_server

    from .api_client import BrokerClient
    from .httpx_auth import httpx2_auth

    auth = httpx2_auth(name, client=client or BrokerClient())
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with httpx2.AsyncClient(auth=auth, timeout=timeout) as http:
        async with stdio_server() as (local_read, local_write):
            async with streamable_http_client(server_url, http_client=http) as (remote_read, remote_write):
                async with anyio.create_task_group() as tg:

                    async def upstream() -> None:
                        await _pump(local_read, remote_write, "from the client")
                        tg.cancel_scope.cancel()  # the client closed stdin: done

                    tg.start_soon(upstream)
                    tg.start_soon(_pump, remote_read, local_write, "from the server")
