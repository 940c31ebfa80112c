"""URL routes of the socket API (the names are the contract; see
docs/socket-api.md).

The HTTP side of the service: a route parses the request, calls the service,
and turns what it returns into an answer; every `BrokerError` becomes an
error answer with the status `broker.codes` gives its code. The service
never sees a status; it reaches this module only through `BrokerService.handle`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..codes import status_for
from ..errors import ApiError, BrokerError, UnknownConnection, UsageError
from .api import ApiRequest, PlainText, error_body

if TYPE_CHECKING:
    from .service import BrokerService

__all__ = ["error_answer", "route"]

_MODES = ("browser", "no-browser", "paste", "device")


def _int_param(request: ApiRequest, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name} must be a whole number of seconds") from None
    if not low <= value <= high:
        raise UsageError(f"{name} must be between {low} and {high}")
    return value


def _body(request: ApiRequest) -> dict[str, Any]:
    if request.body is None:
        return {}
    if not isinstance(request.body, dict):
        raise UsageError("the body must be a JSON object")
    return request.body


def _method(request: ApiRequest, *allowed: str) -> None:
    if request.method not in allowed:
        raise ApiError("method_not_allowed", f"{request.method} is not allowed here")


def error_answer(exc: BrokerError) -> tuple[int, dict[str, str]]:
    """The answer to a request that failed with `exc`."""
    return status_for(exc.code), error_body(exc.code, str(exc))


async def route(service: BrokerService, request: ApiRequest) -> tuple[int, Any]:
    """Answer one request: (status, JSON-able body or `PlainText`)."""
    try:
        try:
            return await _route(service, request)
        except UnknownConnection:
            # Nothing was done yet. If connections.json changed since the
            # service read it (a CLI that found no socket wrote it), read it
            # again and answer once more.
            if not await service.reload_if_changed():
                raise
            return await _route(service, request)
    except BrokerError as exc:
        return error_answer(exc)


async def _route(service: BrokerService, request: ApiRequest) -> tuple[int, Any]:
    seg = request.segments
    if not seg or seg[0] != "v1":
        raise ApiError("not_found", "unknown endpoint; see docs/socket-api.md")
    seg = seg[1:]
    match seg:
        case ("health",):
            _method(request, "GET")
            return 200, service.health()
        case ("connections",):
            if request.method == "POST":
                return 201, await service.add(_body(request))
            _method(request, "GET")
            await service.reload_if_changed()  # a CLI that found no socket may have added one (one stat)
            return 200, {"connections": service.views(), "orphaned": service.orphans()}
        case ("connections", name):
            if request.method == "DELETE":
                return 200, await service.remove(name)
            _method(request, "GET")
            if request.query.get("detail") == "full":
                return 200, await service.show(name)
            return 200, service.view(name)
        case ("connections", name, "token"):
            _method(request, "GET")
            min_ttl = _int_param(request, "min_ttl", 0, 0, 86400)
            # Held for a person's answer (policy `ask`): say so at once with a
            # `102 Processing` (`Broker-Waiting: approval; seconds=N`), so the
            # client can tell its user; the final answer follows.
            tokens = await service.token_for(
                name,
                request.peer.identity,
                min_ttl=min_ttl,
                on_hold=lambda held: request.interim(
                    [("Broker-Waiting", f"approval; seconds={math.ceil(held.seconds_left())}")]
                ),
            )
            if request.query.get("format") == "text":
                return 200, PlainText(tokens.access_token.reveal())
            return 200, {
                "access_token": tokens.access_token.reveal(),
                "token_type": "Bearer",
                "expires_at": tokens.expires_at,
                "scope": " ".join(tokens.scope),
            }
        case ("connections", name, "proxy"):
            # A proxy session the service hosts (broker.service.proxy_session):
            # authorized as a token request, then the connection is taken over.
            _method(request, "POST")
            return 101, await service.open_proxy(
                name,
                request.peer.identity,
                on_hold=lambda held: request.interim(
                    [("Broker-Waiting", f"approval; seconds={math.ceil(held.seconds_left())}")]
                ),
            )
        case ("connections", name, "token", "rejected"):
            _method(request, "POST")
            digest = _body(request).get("token_sha256")
            return 200, await service.report_rejected(name, request.peer.identity, digest)
        case ("connections", name, "insufficient-scope"):
            _method(request, "POST")
            body = _body(request)
            return 200, await service.report_insufficient_scope(
                name, request.peer.identity, body.get("token_sha256"), body.get("scopes")
            )
        case ("connections", name, "connect"):
            _method(request, "POST")
            mode = _body(request).get("mode", "browser")
            if mode not in _MODES:
                raise UsageError(f"mode must be one of {', '.join(_MODES)}")
            flow = service.start_flow(name, mode)
            return 202, flow.to_json()
        case ("connections", name, "disconnect"):
            _method(request, "POST")
            return 200, await service.disconnect(name)
        case ("connections", name, "adopt"):
            # Writes tokens into the vault: a same-user peer, as for add (the
            # socket admits no other). The body is checked in broker.service.adoption.
            _method(request, "POST")
            return 200, await service.adopt(name, request.body, request.peer.identity)
        case ("flows", flow_id):
            if request.method == "DELETE":
                flow = service.flow(flow_id)
                flow.cancel()
                return 200, flow.to_json()
            _method(request, "GET")
            flow = service.flow(flow_id)
            after = _int_param(request, "after", 0, 0, 1_000_000)
            wait = _int_param(request, "wait", 0, 0, 60)
            if wait and not flow.done and len(flow.events) <= after:
                await flow.wait_changed(wait)
            return 200, flow.to_json(after)
        case ("flows", flow_id, "paste"):
            _method(request, "POST")
            url = _body(request).get("url")
            if not isinstance(url, str) or not url:
                raise UsageError('send {"url": "<the address the browser ended on>"}')
            flow = service.flow(flow_id)
            flow.paste(url)
            return 202, {"queued": True}
        case ("grants",):
            _method(request, "GET")
            return 200, {"grants": [g.to_json() for g in service.grants.list()]}
        case ("grants", grant_id):
            _method(request, "DELETE")
            grant = service.grants.revoke(grant_id)
            await service.grants.saved()
            if grant is None:
                raise ApiError("unknown_grant", f"no grant {grant_id!r}")
            return 200, {"revoked": grant.to_json()}
        case ("ui", "show"):
            _method(request, "POST")
            service.show_window()
            return 200, {"shown": True}
        case ("approvals",):
            _method(request, "GET")
            return 200, {"approvals": service.pending_approvals()}
        case ("approvals", approval_id):
            _method(request, "POST")
            body = _body(request)
            code = body.get("code")
            service.answer_approval(
                approval_id,
                str(body.get("decision", "")),
                code=code if isinstance(code, str) else "",
                answerer=request.peer.identity,  # who answers: refused if related to the requester
            )
            return 200, {"answered": approval_id}
    raise ApiError("not_found", "unknown endpoint; see docs/socket-api.md")
