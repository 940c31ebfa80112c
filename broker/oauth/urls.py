"""URL rules in one place: what may be fetched, opened or used as a resource.

OAuth 2.1 and the MCP spec require https for every authorization server
endpoint, with one exception the broker relies on for development and for
RFC 8252 redirects: plain http to the loopback interface.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ..errors import InvalidURL, UnsafeEndpoint

__all__ = [
    "is_loopback_host",
    "check_endpoint_url",
    "canonical_server_url",
    "origin_of",
    "path_inserted",
    "typed_server_url",
    "suggest_name",
    "MAX_URL_LENGTH",
]

MAX_URL_LENGTH = 4096


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split(url: object) -> SplitResult | None:
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        return None
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return None
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        return None
    return parts


def check_endpoint_url(url: object, what: str) -> str:
    """Return `url` if the broker may send requests (or the user) there.

    Raises `UnsafeEndpoint` for anything but https, or http on loopback:
    `javascript:`, `file:`, `data:`, plain http to a remote host, URLs with
    credentials or fragments.
    """
    parts = _split(url)
    if parts is None or not isinstance(url, str):
        raise UnsafeEndpoint(f"{what} is not a valid URL")
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise UnsafeEndpoint(f"{what} uses the {scheme or 'empty'}: scheme; only https is allowed")
    if not parts.hostname:
        raise UnsafeEndpoint(f"{what} has no host")
    if scheme == "http" and not is_loopback_host(parts.hostname):
        raise UnsafeEndpoint(f"{what} uses plain http to {parts.hostname}; https is required except on loopback")
    if parts.username is not None or parts.password is not None:
        raise UnsafeEndpoint(f"{what} carries credentials in the URL")
    if parts.fragment:
        raise UnsafeEndpoint(f"{what} has a fragment")
    return url


def canonical_server_url(url: str) -> str:
    """The canonical URI of an MCP server (RFC 8707 section 2, MCP spec).

    Lowercases scheme and host, drops a lone trailing slash and refuses
    fragments, credentials and anything but https or loopback http.
    """
    parts = _split(url.strip() if isinstance(url, str) else url)
    if parts is None or not parts.scheme or not parts.hostname:
        raise InvalidURL(f"{url!r} is not an absolute URL such as https://mcp.example.com/mcp")
    try:
        check_endpoint_url(urlunsplit(parts), "the server URL")
    except UnsafeEndpoint as exc:
        raise InvalidURL(str(exc)) from None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    path = "" if parts.path == "/" else parts.path
    return urlunsplit((parts.scheme.lower(), netloc, path, parts.query, ""))


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def path_inserted(url: str, well_known: str) -> str:
    """`https://h/p` -> `https://h/.well-known/<well_known>/p` (RFC 8414 / RFC 9728)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, f"/.well-known/{well_known}{path}", "", ""))


def typed_server_url(text: str) -> str:
    """What a person meant by `text`: `host/path` without a scheme is https,
    except on loopback (127.0.0.1, ::1, localhost), where servers run on plain
    http. A scheme the person typed is kept, for `canonical_server_url` to judge."""
    text = text.strip()
    if not text or "://" in text:
        return text
    netloc = text.split("/", 1)[0].split("?", 1)[0]
    host = netloc[1:].split("]", 1)[0] if netloc.startswith("[") else netloc.rsplit(":", 1)[0]
    return f"{'http' if is_loopback_host(host) else 'https'}://{text}"


#: Host labels that say nothing about which server it is.
_GENERIC_LABELS = frozenset({"www", "mcp", "api", "com", "org", "net", "io", "app", "dev"})
#: Path segments that say nothing either: versions and transport names.
_GENERIC_SEGMENT = re.compile(r"(v\d+|api|sse|stream|streamable|http|messages?|)", re.IGNORECASE)


def _name_safe(text: str) -> str:
    cleaned = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "-" for ch in text.lower())
    return cleaned[:64].strip("-._")


def suggest_name(url: str) -> str:
    """A connection name for `url`, or "" when there is nothing to go on.

    A host name gives its distinctive label (`mcp.example.com` -> `example`).
    An IP address or localhost says nothing, so the last meaningful path
    segment is used (`http://127.0.0.1:8123/mcp` -> `mcp`), else the port
    (`localhost-8123`), never `127`."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return ""
    if not host:
        return ""
    try:
        ipaddress.ip_address(host)
        is_address = True
    except ValueError:
        is_address = host == "localhost"
    if not is_address:
        labels = [p for p in host.split(".") if p not in _GENERIC_LABELS]
        return _name_safe(labels[0] if labels else host.split(".")[0])
    for segment in reversed(parts.path.split("/")):
        if not _GENERIC_SEGMENT.fullmatch(segment) and _name_safe(segment):
            return _name_safe(segment)
    base = "localhost" if is_loopback_host(host) else host.replace(".", "-").replace(":", "-")
    return _name_safe(base if port is None else f"{base}-{port}")
