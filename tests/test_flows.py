"""The sans-IO flows (`broker.oauth.flows`), driven by hand with in-memory responses."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from broker.errors import BrokerError, DiscoveryError, InvalidClient, NetworkError
from broker.model import Binding, ConnectionSettings, ConnectionState, Discovered
from broker.oauth.flows import (
    CheckEndpoint,
    FlowEvent,
    NeedCode,
    Registered,
    client_recognised_flow,
    disconnect_flow,
    discovery_flow,
    login_flow,
    registration_flow,
    revoke_flow,
)
from broker.oauth.http import HttpRequest
from broker.oauth.registration import ClientRegistration
from broker.oauth.tokens import TokenSet
from broker.secret import Secret

from .sansio import ISSUER, as_doc, as_metadata, resp

MCP = "https://mcp.example.com/mcp"
REDIRECT = "http://127.0.0.1:53682/callback"
PRM = {"resource": MCP, "authorization_servers": [ISSUER], "scopes_supported": ["files:read"]}
TOKENS = {"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-1"}
INVALID_CLIENT = resp(401, {"error": "invalid_client"})


def discovered(method="dynamic", **as_overrides):
    return Discovered(
        issuer=ISSUER,
        resource=MCP,
        scopes=("files:read", "offline_access"),
        scopes_offered=("files:read",),
        registration_method=method,
        resource_metadata_url="https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
        auth_server=as_metadata(**as_overrides),
    )


def dynamic(client_id="c1", issuer=ISSUER):
    return ClientRegistration(issuer=issuer, client_id=client_id, method="dynamic", redirect_uri=REDIRECT)


def settings(d=None, **kw):
    return ConnectionSettings(name="demo", server_url=MCP, discovered=d or discovered(), **kw)


def token_set(refresh="rt-1"):
    return TokenSet(
        access_token=Secret("at-1"),
        token_type="Bearer",
        expires_at=None,
        scope=("files:read",),
        refresh_token=Secret(refresh) if refresh else None,
        obtained_at=0,
    )


def drive(flow, answer):
    """Run a flow to its end: `answer(step)` gives the reply, or raises a
    `BrokerError` that goes back into the flow. Returns (steps, result)."""
    steps, reply, error = [], None, None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(reply)
        except StopIteration as done:
            return steps, done.value
        steps.append(step)
        reply, error = None, None
        try:
            reply = answer(step)
        except BrokerError as exc:
            error = exc


def form(request):
    return {k: v[0] for k, v in parse_qs(request.body.decode()).items()}


# -- discovery ------------------------------------------------------------------


def test_discovery_falls_back_to_root_prm_and_to_oidc_then_checks_every_endpoint():
    flow = discovery_flow(MCP)
    probe = next(flow)
    assert (probe.method, probe.url) == ("POST", MCP)
    step = flow.send(resp(401))
    assert step.url == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    step = flow.send(resp(404))
    assert step.url == "https://mcp.example.com/.well-known/oauth-protected-resource"
    step = flow.send(resp(200, PRM))
    assert step.url == f"{ISSUER}/.well-known/oauth-authorization-server"
    step = flow.send(resp(404))
    assert step.url == f"{ISSUER}/.well-known/openid-configuration"
    checks = [flow.send(resp(200, as_doc()))]
    with pytest.raises(StopIteration) as done:
        while True:
            checks.append(flow.send(None))
    assert checks == [
        CheckEndpoint(f"{ISSUER}/authorize", f"`authorization_endpoint` of {ISSUER}"),
        CheckEndpoint(f"{ISSUER}/token", f"`token_endpoint` of {ISSUER}"),
        CheckEndpoint(f"{ISSUER}/register", f"`registration_endpoint` of {ISSUER}"),
        CheckEndpoint(f"{ISSUER}/revoke", f"`revocation_endpoint` of {ISSUER}"),
    ]
    result = done.value.value
    assert result.auth_server.source == "openid"
    assert result.resource_metadata_url == "https://mcp.example.com/.well-known/oauth-protected-resource"
    assert result.registration_method == "dynamic"


def test_discovery_uses_only_the_challenge_prm_url():
    challenge = ("WWW-Authenticate", 'Bearer resource_metadata="https://mcp.example.com/prm"')
    flow = discovery_flow(MCP)
    next(flow)
    step = flow.send(resp(401, headers=[challenge]))
    assert step.url == "https://mcp.example.com/prm"
    with pytest.raises(DiscoveryError, match="publishes no protected resource metadata"):
        flow.send(resp(404))


def test_discovery_names_every_as_metadata_url_it_tried():
    urls = {f"{ISSUER}/.well-known/oauth-authorization-server", f"{ISSUER}/.well-known/openid-configuration"}

    def answer(step):
        return resp(401) if step.method == "POST" else resp(200, PRM) if "protected" in step.url else resp(404)

    with pytest.raises(DiscoveryError) as err:
        drive(discovery_flow(MCP), answer)
    assert all(url in str(err.value) for url in urls)


def test_endpoints_are_not_checked_before_the_metadata_is_validated():
    def answer(step):
        if isinstance(step, CheckEndpoint):
            pytest.fail("checked an endpoint of a refused document")
        if step.method == "POST":
            return resp(401)
        return resp(200, PRM) if "protected" in step.url else resp(200, as_doc(issuer="https://evil.example"))

    with pytest.raises(BrokerError, match="claims issuer"):
        drive(discovery_flow(MCP), answer)


# -- "this 4xx means the server forgot our client" ---------------------------------


@pytest.mark.parametrize(
    ("status", "recognised"),
    [(302, True), (200, True), (400, False), (401, False), (404, False), (499, False), (500, True)],
)
def test_a_4xx_from_the_authorization_endpoint_means_a_forgotten_client(status, recognised):
    flow = client_recognised_flow(discovered(), dynamic())
    request = next(flow)
    assert (request.method, request.purpose) == ("GET", "authorization endpoint")
    assert parse_qs(request.url.split("?", 1)[1])["client_id"] == ["c1"]
    with pytest.raises(StopIteration) as done:
        flow.send(resp(status))
    assert done.value.value is recognised


def test_an_unreachable_authorization_endpoint_is_inconclusive():
    flow = client_recognised_flow(discovered(), dynamic())
    next(flow)
    with pytest.raises(StopIteration) as done:
        flow.throw(NetworkError("cannot reach the authorization endpoint"))
    assert done.value.value is True


def test_a_recognised_registration_is_kept():
    state = ConnectionState(registration=dynamic())
    steps, result = drive(registration_flow(settings(), state, discovered(), REDIRECT, 0), lambda step: resp(302))
    assert [s.method for s in steps] == ["GET"]
    assert result == dynamic()


def test_a_forgotten_registration_is_replaced():
    state = ConnectionState(registration=dynamic())
    answers = {"GET": resp(400), "POST": resp(201, {"client_id": "c2", "redirect_uris": [REDIRECT]})}
    steps, result = drive(
        registration_flow(settings(), state, discovered(), REDIRECT, 0),
        lambda step: None if isinstance(step, FlowEvent) else answers[step.method],
    )
    assert [type(s).__name__ for s in steps] == ["HttpRequest", "FlowEvent", "HttpRequest"]
    assert steps[1].stage == "registering"
    assert steps[2].url == f"{ISSUER}/register"
    assert result.client_id == "c2"


@pytest.mark.parametrize(
    "registration",
    [
        dynamic(issuer="https://other.example.com"),
        ClientRegistration(ISSUER, "c1", "dynamic", "http://127.0.0.1:1/callback"),
    ],
)
def test_a_registration_for_another_issuer_or_redirect_is_not_probed(registration):
    state = ConnectionState(registration=registration)
    steps, result = drive(
        registration_flow(settings(), state, discovered(), REDIRECT, 0),
        lambda step: None if isinstance(step, FlowEvent) else resp(201, {"client_id": "c2"}),
    )
    assert [s.url for s in steps if isinstance(s, HttpRequest)] == [f"{ISSUER}/register"]
    assert result.client_id == "c2"


# -- the retry on invalid_client -----------------------------------------------------


def login_answers(token_answers, registered=("c2", "c3")):
    """Answers for a login: codes, registrations (client ids in order), the
    token endpoint's answers in order; a 302 for the recognition probe."""
    token_answers, registered = list(token_answers), list(registered)

    def answer(step):
        if isinstance(step, NeedCode):
            return Secret("code")
        if isinstance(step, (FlowEvent, Registered)):
            return None
        if step.method == "GET":
            return resp(302)
        if step.url.endswith("/register"):
            return resp(201, {"client_id": registered.pop(0)})
        return token_answers.pop(0)

    return answer


def test_invalid_client_at_the_token_endpoint_registers_again_and_logs_in_once_more():
    state = ConnectionState(registration=dynamic())
    flow = login_flow(settings(), state, discovered(), REDIRECT, lambda: 1000.0)
    steps, (registration, tokens) = drive(flow, login_answers([INVALID_CLIENT, resp(200, TOKENS)]))
    kept = [s.registration.client_id for s in steps if isinstance(s, Registered)]
    codes = [s.pending.client_id for s in steps if isinstance(s, NeedCode)]
    exchanges = [form(s)["client_id"] for s in steps if isinstance(s, HttpRequest) and s.url.endswith("/token")]
    assert kept == ["c1", "c2"]
    assert codes == ["c1", "c2"]
    assert exchanges == ["c1", "c2"]
    assert registration.client_id == "c2"
    assert tokens.access_token.reveal() == "at-1"


def test_invalid_client_twice_gives_up():
    state = ConnectionState(registration=dynamic())
    flow = login_flow(settings(), state, discovered(), REDIRECT, lambda: 1000.0)
    steps = []
    inner = login_answers([INVALID_CLIENT, INVALID_CLIENT])

    def answer(step):
        steps.append(step)
        return inner(step)

    with pytest.raises(InvalidClient):
        drive(flow, answer)
    assert len([s for s in steps if isinstance(s, NeedCode)]) == 2
    assert len([s for s in steps if isinstance(s, HttpRequest) and s.url.endswith("/register")]) == 1


def test_invalid_client_for_a_preregistered_client_is_not_retried():
    d = discovered("preregistered")
    flow = login_flow(settings(d, client_id="fixed"), ConnectionState(), d, REDIRECT, lambda: 1000.0)
    steps = []
    inner = login_answers([INVALID_CLIENT])

    def answer(step):
        steps.append(step)
        return inner(step)

    with pytest.raises(InvalidClient):
        drive(flow, answer)
    assert len([s for s in steps if isinstance(s, NeedCode)]) == 1
    assert not [s for s in steps if isinstance(s, HttpRequest) and s.url.endswith("/register")]


# -- revocation -------------------------------------------------------------------------


def revocations(answers):
    answers = list(answers)
    sent = []

    def answer(step):
        sent.append(form(step)["token_type_hint"])
        reply = answers.pop(0)
        if isinstance(reply, BrokerError):
            raise reply
        return reply

    return sent, answer


def bound():
    return Binding.of(MCP, discovered())


def test_the_refresh_token_is_revoked_before_the_access_token():
    state = ConnectionState(registration=dynamic(), tokens=token_set())
    sent, answer = revocations([resp(200), resp(200)])
    steps, result = drive(revoke_flow(bound(), state), answer)
    assert sent == ["refresh_token", "access_token"]
    assert all(s.url == f"{ISSUER}/revoke" for s in steps)
    assert result.outcome == "revoked" and result.message(now=0) is None


def test_unsupported_token_type_is_fine_once_the_grant_is_revoked():
    state = ConnectionState(registration=dynamic(), tokens=token_set())
    sent, answer = revocations([resp(200), resp(400, {"error": "unsupported_token_type"})])
    _, result = drive(revoke_flow(bound(), state), answer)
    assert sent == ["refresh_token", "access_token"]
    assert result.outcome == "revoked"


def test_unsupported_token_type_without_a_refresh_token_is_a_warning():
    state = ConnectionState(registration=dynamic(), tokens=token_set(refresh=None))
    sent, answer = revocations([resp(400, {"error": "unsupported_token_type"})])
    _, result = drive(revoke_flow(bound(), state), answer)
    warning = result.message(now=0)
    assert sent == ["access_token"]
    assert result.outcome == "refused" and "refused to revoke the tokens" in warning
    assert "unsupported_token_type" in warning


def test_a_failed_refresh_token_revocation_stops_and_warns():
    state = ConnectionState(registration=dynamic(), tokens=token_set())
    sent, answer = revocations([NetworkError("cannot reach the revocation endpoint")])
    _, result = drive(revoke_flow(bound(), state), answer)
    assert sent == ["refresh_token"]
    assert result.outcome == "unreachable"
    assert result.message(now=0).startswith(
        f"could not reach {ISSUER} to revoke the tokens (cannot reach the revocation endpoint); they stay valid"
    )


def test_no_revocation_endpoint_sends_nothing_and_warns():
    d = discovered(revocation_endpoint=None)
    state = ConnectionState(registration=dynamic(), tokens=token_set())
    steps, result = drive(revoke_flow(Binding.of(MCP, d), state), lambda step: pytest.fail("sent"))
    assert steps == []
    assert result.outcome == "not_offered"
    assert result.message(now=0).startswith(
        f"{ISSUER} offers no revocation endpoint; they stay valid until they expire"
    )


def test_disconnect_sends_nothing_when_the_settings_disagree_with_the_vault():
    state = ConnectionState(registration=dynamic(), tokens=token_set(), binding=bound())
    moved = settings(discovered(token_endpoint="https://auth.example.com/elsewhere"))
    steps, result = drive(disconnect_flow(moved, state), lambda step: pytest.fail("sent"))
    assert steps == []
    assert result.outcome == "not_sent" and result.still_valid
    assert result.message(now=0).startswith("not revoked at the server: connections.json no longer matches the vault")
