"""Plain request and response values for the sans-IO protocol steps.

The OAuth steps build `HttpRequest`s and read `HttpResponse`s; they never do
I/O. `broker.driver.transport` sends them. Tests hand the steps responses made in
memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from ..errors import BadResponse

__all__ = ["HttpRequest", "HttpResponse", "form_request", "json_request"]


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    #: What this request is for, in words, for error messages ("token endpoint").
    purpose: str
    # Headers and body may carry codes, tokens and secrets: keep them out of repr.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    body: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    body: bytes = field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]

    def json_object(self, purpose: str) -> dict[str, Any]:
        """The body as a JSON object, or a `BadResponse` naming `purpose`."""
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise BadResponse(f"{purpose} did not return JSON (HTTP {self.status})") from None
        if not isinstance(value, dict):
            raise BadResponse(f"{purpose} returned JSON that is not an object")
        return value


def form_request(
    url: str, purpose: str, fields: dict[str, str], headers: tuple[tuple[str, str], ...] = ()
) -> HttpRequest:
    return HttpRequest(
        "POST",
        url,
        purpose,
        (("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json"), *headers),
        urlencode(fields).encode(),
    )


def json_request(
    url: str, purpose: str, payload: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()
) -> HttpRequest:
    return HttpRequest(
        "POST",
        url,
        purpose,
        (("Content-Type", "application/json"), ("Accept", "application/json"), *headers),
        json.dumps(payload).encode(),
    )
