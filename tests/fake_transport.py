"""A `Transport` that answers from a function, like httpx's `MockTransport`.

Only `send` is replaced: `for_server` and `check_url` are the real ones, so
the endpoint policy (`broker.oauth.netpolicy`) still judges every URL; names
resolve through `resolver` (a public address unless a test says otherwise),
never through DNS. Every request sent is recorded, in order.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.driver.transport import Transport
from broker.oauth.http import HttpRequest, HttpResponse

PUBLIC_ADDRESS = "93.184.216.34"

Handler = Callable[[HttpRequest], HttpResponse]


async def public_resolver(host: str, port: int) -> list[str]:
    return [PUBLIC_ADDRESS]


class FakeTransport(Transport):
    def __init__(self, handler: Handler, *, resolver=public_resolver) -> None:
        super().__init__(resolver=resolver)
        self.handler = handler
        self.requests: list[HttpRequest] = []

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Same contract as `Transport.send`: the policy check first, then
        the answer (the handler may raise, e.g. `NetworkError`)."""
        await self.check_url(request.url, f"the {request.purpose} URL")
        self.requests.append(request)
        return self.handler(request)

    def urls(self, method: str | None = None) -> list[str]:
        """The URLs sent to, in order (only `method` ones if given), without query."""
        return [r.url.split("?", 1)[0] for r in self.requests if method is None or r.method == method]
