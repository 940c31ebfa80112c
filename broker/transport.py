"""The one place that sends `HttpRequest`s, with the limits every call needs.

Every request gets: the URL policy (https, or http on loopback), no redirect
following, a connect/read timeout, a total deadline (so a server that drips
one byte a second cannot hold a flow forever) and a cap on the body size.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from . import __version__
from .errors import NetworkError, ResponseTooLarge
from .http import HttpRequest, HttpResponse
from .urls import check_endpoint_url

__all__ = ["Limits", "Transport"]

USER_AGENT = f"mcp-token-broker/{__version__}"


@dataclass(frozen=True)
class Limits:
    #: Seconds for connecting and between reads.
    timeout: float = 10.0
    #: Seconds for the whole exchange, headers and body.
    deadline: float = 30.0
    #: Bytes of response body accepted.
    max_body: int = 1 << 20


class Transport:
    """Sends requests with httpx. Owns its client unless one is passed in."""

    def __init__(self, client: httpx.AsyncClient | None = None, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(limits.timeout),
            follow_redirects=False,
            trust_env=True,
            headers={"User-Agent": USER_AGENT},
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send(self, request: HttpRequest) -> HttpResponse:
        check_endpoint_url(request.url, f"the {request.purpose} URL")
        try:
            async with asyncio.timeout(self.limits.deadline):
                return await self._send(request)
        except TimeoutError:
            raise NetworkError(f"{request.purpose} did not answer within {self.limits.deadline:g} s") from None
        except httpx.TimeoutException:
            raise NetworkError(f"{request.purpose} timed out") from None
        except httpx.HTTPError as exc:
            raise NetworkError(f"cannot reach the {request.purpose}: {type(exc).__name__}") from None

    async def _send(self, request: HttpRequest) -> HttpResponse:
        req = self._client.build_request(
            request.method, request.url, headers=list(request.headers), content=request.body or None
        )
        response = await self._client.send(req, stream=True, follow_redirects=False)
        try:
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.limits.max_body:
                raise ResponseTooLarge(
                    f"{request.purpose} sent {int(declared)} bytes; the limit is {self.limits.max_body}"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.limits.max_body:
                    raise ResponseTooLarge(
                        f"{request.purpose} sent more than {self.limits.max_body} bytes"
                    )
                chunks.append(chunk)
        finally:
            await response.aclose()
        return HttpResponse(response.status_code, tuple(response.headers.multi_items()), b"".join(chunks))
