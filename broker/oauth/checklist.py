"""The OAuth security check of a server, from what discovery found.

Shown in the desktop app's add dialog and details pane, and by `show`.
Each item passes, warns or fails, with a sentence that says why it matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from .discovery import AuthServerMetadata

__all__ = ["CheckItem", "security_check"]

Verdict = Literal["pass", "warn", "fail", "unknown"]


@dataclass(frozen=True)
class CheckItem:
    key: str
    label: str
    verdict: Verdict
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "label": self.label, "verdict": self.verdict, "detail": self.detail}


def _https_verdict(server: AuthServerMetadata) -> CheckItem:
    urls = [
        server.issuer,
        server.authorization_endpoint,
        server.token_endpoint,
        *(u for u in (server.registration_endpoint, server.revocation_endpoint) if u),
    ]
    plain = [u for u in urls if urlsplit(u).scheme == "http"]
    if not plain:
        return CheckItem("https", "HTTPS-only endpoints", "pass", "Every endpoint uses https.")
    return CheckItem(
        "https",
        "HTTPS-only endpoints",
        "warn",
        "Plain http on the loopback interface (a local development server); refused anywhere else.",
    )


def security_check(
    server: AuthServerMetadata,
    *,
    resource_sent: bool = True,
    rotation_seen: bool | None = None,
) -> list[CheckItem]:
    """`rotation_seen`: True/False once a refresh showed whether the refresh
    token rotates; None before the first refresh."""
    items = [
        CheckItem(
            "pkce",
            "PKCE with S256",
            "pass" if "S256" in server.code_challenge_methods_supported else "fail",
            "Codes are bound to this app with a SHA-256 challenge (RFC 7636)."
            if "S256" in server.code_challenge_methods_supported
            else "The server does not offer S256; the broker will not log in.",
        ),
        _https_verdict(server),
        CheckItem(
            "iss",
            "Issuer in the authorization response",
            "pass" if server.iss_parameter_supported else "warn",
            "Responses name their issuer, which defeats mix-up attacks (RFC 9207)."
            if server.iss_parameter_supported
            else "The server does not say it sends `iss` (RFC 9207); mix-up attacks are harder to detect.",
        ),
        CheckItem(
            "rotation",
            "Refresh-token rotation",
            "unknown" if rotation_seen is None else "pass" if rotation_seen else "warn",
            "Not known until the first refresh."
            if rotation_seen is None
            else "Each refresh issues a new refresh token, so a stolen one soon stops working."
            if rotation_seen
            else "The refresh token does not change on refresh; a stolen one keeps working.",
        ),
        CheckItem(
            "revocation",
            "Revocation offered",
            "pass" if server.revocation_endpoint else "warn",
            "Disconnect revokes the tokens at the server (RFC 7009)."
            if server.revocation_endpoint
            else "No revocation endpoint: disconnecting forgets the tokens, but they stay valid until they expire.",
        ),
        CheckItem(
            "resource",
            "Resource indicators",
            "pass" if resource_sent else "warn",
            "Tokens are requested for this server only (RFC 8707), so they are useless elsewhere."
            if resource_sent
            else "The resource parameter is switched off for this connection; tokens may be valid beyond this server.",
        ),
    ]
    return items
