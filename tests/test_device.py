"""Device login (RFC 8628), sans-IO: `broker.oauth.device` and `device_login_flow`,
driven by hand with in-memory responses and a clock that only `Wait` moves."""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

import pytest

from broker.errors import (
    AccessDenied,
    BadResponse,
    DeviceCodeExpired,
    DeviceLoginUnsupported,
    NetworkError,
    OAuthError,
    UnsafeEndpoint,
)
from broker.model import ConnectionSettings, ConnectionState, Discovered
from broker.oauth.device import (
    DEVICE_GRANT,
    DevicePoller,
    Wait,
    parse_device_authorization,
    read_poll,
)
from broker.oauth.flows import CheckEndpoint, FlowEvent, Registered, device_login_flow
from broker.oauth.http import HttpRequest
from broker.oauth.registration import ClientRegistration
from broker.oauth.tokens import TokenSet
from broker.stepup import StepUp

from .sansio import ISSUER, as_doc, as_metadata, resp

MCP = "https://mcp.example.com/mcp"
DEVICE_ENDPOINT = f"{ISSUER}/device/auth"
TOKENS = {"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-1"}
DEVICE_CODE = "dc-SECRET-4f1a"
ANSWER = {
    "device_code": DEVICE_CODE,
    "user_code": "WDJB-MJHT",
    "verification_uri": f"{ISSUER}/device",
    "verification_uri_complete": f"{ISSUER}/device?user_code=WDJB-MJHT",
    "expires_in": 60,
    "interval": 2,
}
PENDING = resp(400, {"error": "authorization_pending"})
SLOW_DOWN = resp(400, {"error": "slow_down"})


def discovered(**overrides):
    overrides.setdefault("device_authorization_endpoint", DEVICE_ENDPOINT)
    return Discovered(
        issuer=ISSUER,
        resource=MCP,
        scopes=("files:read", "offline_access"),
        scopes_offered=("files:read",),
        registration_method="dynamic",
        resource_metadata_url="https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
        auth_server=as_metadata(**overrides),
    )


def settings():
    return ConnectionSettings(name="demo", server_url=MCP, discovered=discovered())


def stored(client_id="c1"):
    return ConnectionState(
        registration=ClientRegistration(
            issuer=ISSUER, client_id=client_id, method="dynamic", redirect_uri="http://127.0.0.1:5000/callback"
        )
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def form(request: HttpRequest) -> dict[str, list[str]]:
    return parse_qs(request.body.decode())


def run(flow, answers, clock):
    """Drive `flow`: `answers` maps a request's URL to a list of responses
    (popped in order; an exception is thrown in). Returns (result, steps)."""
    steps: list[object] = []
    answer: object = None
    failure: BaseException | None = None
    while True:
        try:
            step = flow.throw(failure) if failure is not None else flow.send(answer)
        except StopIteration as done:
            return done.value, steps
        answer, failure = None, None
        steps.append(step)
        if isinstance(step, Wait):
            clock.now += step.seconds
        elif isinstance(step, HttpRequest):
            out = answers[step.url].pop(0)
            if isinstance(out, BaseException):
                failure = out
            else:
                answer = out


def waits(steps):
    return [s.seconds for s in steps if isinstance(s, Wait)]


def polls(steps):
    return [s for s in steps if isinstance(s, HttpRequest) and s.url.endswith("/token")]


# -- the device authorization response -------------------------------------------------


def test_parse_device_authorization_keeps_the_device_code_secret():
    auth = parse_device_authorization(resp(200, ANSWER), now=100.0)
    assert auth.user_code == "WDJB-MJHT" and auth.interval == 2 and auth.expires_at == 160.0
    assert auth.device_code.reveal() == DEVICE_CODE
    assert DEVICE_CODE not in repr(auth) and "WDJB" not in repr(auth)


def test_interval_defaults_to_five_seconds():
    answer = {k: v for k, v in ANSWER.items() if k != "interval"}
    assert parse_device_authorization(resp(200, answer), now=0).interval == 5


@pytest.mark.parametrize(
    "change",
    [
        {"device_code": None},
        {"device_code": "x" * 5000},
        {"user_code": None},
        {"user_code": ""},
        {"user_code": "A" * 65},
        {"user_code": "AB\x1b[2JCD"},
        {"user_code": 1234},
        {"verification_uri": None},
        {"verification_uri": "x" * 3000},
        {"expires_in": None},
        {"expires_in": 0},
        {"expires_in": True},
        {"expires_in": 10**9},
        {"interval": 0},
        {"interval": "soon"},
        {"interval": 10_000},
    ],
)
def test_bad_device_authorization_is_a_bad_response(change):
    answer = {**ANSWER, **change}
    answer = {k: v for k, v in answer.items() if v is not None}
    with pytest.raises(BadResponse):
        parse_device_authorization(resp(200, answer), now=0)


@pytest.mark.parametrize("key", ["verification_uri", "verification_uri_complete"])
@pytest.mark.parametrize("uri", ["http://evil.example/device", "javascript:alert(1)", "https://u:p@auth.example.com/d"])
def test_verification_uri_must_be_https(key, uri):
    with pytest.raises(UnsafeEndpoint):
        parse_device_authorization(resp(200, {**ANSWER, key: uri}), now=0)


def test_device_authorization_refusal_is_the_servers_error():
    with pytest.raises(BadResponse):
        parse_device_authorization(resp(500, b"oops"), now=0)


# -- each poll answer --------------------------------------------------------------------


def test_read_poll_answers():
    assert read_poll(PENDING, now=0, requested_scope=()) == "pending"
    assert read_poll(SLOW_DOWN, now=0, requested_scope=()) == "slow_down"
    tokens = read_poll(resp(200, TOKENS), now=0, requested_scope=("a",))
    assert isinstance(tokens, TokenSet) and tokens.access_token.reveal() == "at-1"
    with pytest.raises(AccessDenied):
        read_poll(resp(400, {"error": "access_denied"}), now=0, requested_scope=())
    with pytest.raises(DeviceCodeExpired):
        read_poll(resp(400, {"error": "expired_token"}), now=0, requested_scope=())
    with pytest.raises(BadResponse):
        read_poll(resp(502, b"<html>"), now=0, requested_scope=())


def test_poller_slow_down_adds_five_seconds_for_good_and_expiry_stops_it():
    auth = parse_device_authorization(resp(200, ANSWER), now=0)
    poller = DevicePoller(auth)
    assert poller.next_wait(0) == 2
    poller.answered("slow_down")
    assert poller.next_wait(2) == 7
    poller.answered("pending")
    assert poller.next_wait(9) == 7
    with pytest.raises(DeviceCodeExpired):
        poller.next_wait(54)  # the next poll would come after the code expired at 60


# -- the flow ----------------------------------------------------------------------------


def test_device_flow_polls_at_the_interval_and_honours_slow_down(caplog):
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    answers = {
        DEVICE_ENDPOINT: [resp(200, ANSWER)],
        f"{ISSUER}/token": [PENDING, SLOW_DOWN, PENDING, resp(200, TOKENS)],
    }
    (registration, tokens), steps = run(device_login_flow(settings(), stored(), discovered(), clock), answers, clock)
    assert registration.client_id == "c1" and tokens.access_token.reveal() == "at-1"
    assert waits(steps) == [2, 2, 7, 7]  # slow_down (2nd poll): +5 s for this and every later poll
    sent = [form(p) for p in polls(steps)]
    assert all(f["grant_type"] == [DEVICE_GRANT] and f["device_code"] == [DEVICE_CODE] for f in sent)
    assert all(f["resource"] == [MCP] and f["client_id"] == ["c1"] for f in sent)
    shown = [s for s in steps if isinstance(s, FlowEvent) and s.stage == "waiting_for_device"]
    assert len(shown) == 1 and shown[0].user_code == "WDJB-MJHT" and shown[0].url == f"{ISSUER}/device"
    assert shown[0].expires_at == 1060.0
    checked = [s.url for s in steps if isinstance(s, CheckEndpoint)]
    assert checked == [ANSWER["verification_uri"], ANSWER["verification_uri_complete"]]
    assert any(isinstance(s, FlowEvent) and s.stage == "slow_down" for s in steps)
    # The device code is a credential and the user code is for the user: neither in a repr or a log.
    text = caplog.text + "".join(repr(s) for s in steps)
    assert DEVICE_CODE not in text and "WDJB-MJHT" not in text


def test_device_authorization_request_carries_scope_and_resource():
    clock = Clock()
    answers = {DEVICE_ENDPOINT: [resp(200, ANSWER)], f"{ISSUER}/token": [resp(200, TOKENS)]}
    _, steps = run(device_login_flow(settings(), stored(), discovered(), clock), answers, clock)
    first = next(s for s in steps if isinstance(s, HttpRequest))
    assert first.url == DEVICE_ENDPOINT
    assert form(first) == {"scope": ["files:read offline_access"], "resource": [MCP], "client_id": ["c1"]}


def test_device_flow_ends_when_the_code_expires():
    clock = Clock()
    answers = {
        DEVICE_ENDPOINT: [resp(200, {**ANSWER, "expires_in": 9, "interval": 2})],
        f"{ISSUER}/token": [PENDING, SLOW_DOWN, PENDING, PENDING],
    }
    with pytest.raises(DeviceCodeExpired):
        run(device_login_flow(settings(), stored(), discovered(), clock), answers, clock)
    # Polls at +2, +4 (slow_down: 7 s now), then 4+7 > 9: no poll after the deadline.
    assert answers[f"{ISSUER}/token"] == [PENDING, PENDING]


def test_device_flow_server_says_expired_token():
    clock = Clock()
    answers = {DEVICE_ENDPOINT: [resp(200, ANSWER)], f"{ISSUER}/token": [resp(400, {"error": "expired_token"})]}
    with pytest.raises(DeviceCodeExpired):
        run(device_login_flow(settings(), stored(), discovered(), clock), answers, clock)


def test_device_flow_access_denied():
    clock = Clock()
    answers = {
        DEVICE_ENDPOINT: [resp(200, ANSWER)],
        f"{ISSUER}/token": [PENDING, resp(400, {"error": "access_denied"})],
    }
    with pytest.raises(AccessDenied):
        run(device_login_flow(settings(), stored(), discovered(), clock), answers, clock)


def test_network_error_while_polling_backs_off():
    clock = Clock()
    answers = {
        DEVICE_ENDPOINT: [resp(200, ANSWER)],
        f"{ISSUER}/token": [NetworkError("cannot reach auth.example.com:443: timed out"), resp(200, TOKENS)],
    }
    _, steps = run(device_login_flow(settings(), stored(), discovered(), clock), answers, clock)
    assert waits(steps) == [2, 4]


def test_client_without_the_device_grant_registers_again_with_it():
    clock = Clock()
    answers = {
        DEVICE_ENDPOINT: [resp(400, {"error": "unauthorized_client"}), resp(200, ANSWER)],
        f"{ISSUER}/register": [resp(201, {"client_id": "c2", "redirect_uris": ["http://127.0.0.1:5000/callback"]})],
        f"{ISSUER}/token": [resp(200, TOKENS)],
    }
    (registration, _), steps = run(device_login_flow(settings(), stored(), discovered(), clock), answers, clock)
    assert registration.client_id == "c2"
    register = next(s for s in steps if isinstance(s, HttpRequest) and s.url.endswith("/register"))
    body = json.loads(register.body)
    assert DEVICE_GRANT in body["grant_types"] and "authorization_code" in body["grant_types"]
    assert body["redirect_uris"] == ["http://127.0.0.1:5000/callback"]  # still good for a browser login
    assert [s.registration.client_id for s in steps if isinstance(s, Registered)] == ["c1", "c2"]


def test_stored_client_refused_with_invalid_request_registers_again():
    # oidc-provider's answer to a client registered without the device grant.
    refused = resp(400, {"error": "invalid_request", "error_description": "device_code is not allowed for this client"})
    clock = Clock()
    answers = {
        DEVICE_ENDPOINT: [refused, resp(200, ANSWER)],
        f"{ISSUER}/register": [resp(201, {"client_id": "c2"})],
        f"{ISSUER}/token": [resp(200, TOKENS)],
    }
    (registration, _), _ = run(device_login_flow(settings(), stored(), discovered(), clock), answers, clock)
    assert registration.client_id == "c2"


def test_stored_client_refused_with_invalid_scope_is_not_registered_again():
    # The scope is refused, not the client: a new client would be refused too and
    # stay registered at the server, one more for every login the step-up counts.
    clock = Clock()
    refused = resp(400, {"error": "invalid_scope", "error_description": "files:write is not allowed"})
    answers = {DEVICE_ENDPOINT: [refused, resp(200, ANSWER)], f"{ISSUER}/register": [resp(201, {"client_id": "c2"})]}
    with pytest.raises(OAuthError, match="invalid_scope") as raised:
        run(device_login_flow(settings(), stored(), discovered(), clock), answers, clock)
    assert raised.value.error == "invalid_scope"
    assert len(answers[f"{ISSUER}/register"]) == 1 and len(answers[DEVICE_ENDPOINT]) == 1  # neither asked again


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, "server_error"), (503, "temporarily_unavailable"), (400, "access_denied"), (400, "invalid_grant")],
)
def test_a_stored_client_is_registered_again_only_for_errors_that_refuse_the_client(status, error):
    # Only unauthorized_client, invalid_client and invalid_request say the stored client
    # cannot start a device login; another error would be the new client's answer too.
    clock = Clock()
    refused = resp(status, {"error": error})
    answers = {DEVICE_ENDPOINT: [refused, resp(200, ANSWER)], f"{ISSUER}/register": [resp(201, {"client_id": "c2"})]}
    with pytest.raises(OAuthError) as raised:
        run(device_login_flow(settings(), stored(), discovered(), clock), answers, clock)
    assert raised.value.error == error
    assert len(answers[f"{ISSUER}/register"]) == 1 and len(answers[DEVICE_ENDPOINT]) == 1  # neither asked again


def test_a_client_registered_just_now_is_not_registered_again():
    clock = Clock()
    refused = resp(400, {"error": "invalid_request"})
    answers = {f"{ISSUER}/register": [resp(201, {"client_id": "c9"})], DEVICE_ENDPOINT: [refused, resp(200, ANSWER)]}
    with pytest.raises(OAuthError, match="invalid_request"):
        run(device_login_flow(settings(), ConnectionState(), discovered(), clock), answers, clock)
    assert answers[f"{ISSUER}/register"] == []


def test_new_client_registers_with_the_device_grant():
    clock = Clock()
    answers = {
        f"{ISSUER}/register": [resp(201, {"client_id": "c9"})],
        DEVICE_ENDPOINT: [resp(200, ANSWER)],
        f"{ISSUER}/token": [resp(200, TOKENS)],
    }
    (registration, _), steps = run(
        device_login_flow(settings(), ConnectionState(), discovered(), clock), answers, clock
    )
    assert registration.client_id == "c9"
    register = next(s for s in steps if isinstance(s, HttpRequest) and s.url.endswith("/register"))
    assert DEVICE_GRANT in json.loads(register.body)["grant_types"]


def test_a_pending_step_up_registers_first_and_never_asks_with_the_old_client():
    # As for a browser login: a step-up asks for scope the stored client may not be
    # registered for, so the device login registers anew before its first request.
    clock = Clock()
    stepping = ConnectionSettings(
        name="demo", server_url=MCP, discovered=discovered(), step_up=StepUp(("files:write",), ("files:write",))
    )
    answers = {
        f"{ISSUER}/register": [resp(201, {"client_id": "c2"})],
        DEVICE_ENDPOINT: [resp(200, ANSWER)],
        f"{ISSUER}/token": [resp(200, TOKENS)],
    }
    (registration, _), steps = run(device_login_flow(stepping, stored(), discovered(), clock), answers, clock)
    requests = [s for s in steps if isinstance(s, HttpRequest)]
    assert requests[0].url == f"{ISSUER}/register"
    assert DEVICE_GRANT in json.loads(requests[0].body)["grant_types"]
    device = [form(s)["client_id"][0] for s in requests if s.url == DEVICE_ENDPOINT]
    assert device == ["c2"] and registration.client_id == "c2"
    assert [s.registration.client_id for s in steps if isinstance(s, Registered)] == ["c2"]


def test_no_device_endpoint_is_a_clear_error():
    clock = Clock()
    d = discovered(device_authorization_endpoint=None)
    with pytest.raises(DeviceLoginUnsupported, match="no device login"):
        run(device_login_flow(settings(), stored(), d, clock), {}, clock)


def test_discovery_reads_and_checks_the_device_endpoint():
    assert as_metadata(device_authorization_endpoint=DEVICE_ENDPOINT).device_authorization_endpoint == DEVICE_ENDPOINT
    assert as_metadata().device_authorization_endpoint is None
    with pytest.raises(UnsafeEndpoint):
        as_metadata(device_authorization_endpoint="http://evil.example/device")
    doc = as_doc(device_authorization_endpoint=DEVICE_ENDPOINT)
    assert doc["device_authorization_endpoint"] == DEVICE_ENDPOINT
