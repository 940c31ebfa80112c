"""Revocation on the servers people run (issue 11, section 4).

The MCP SDK's authorization-server handlers (tests/servers/sdk_as_server.py)
want `client_id` and a `client_secret` field in the revocation form even
from a public client. `disconnect` must revoke there for real: the old
access token is then refused by the MCP endpoint and the refresh token no
longer refreshes. When a server refuses, the CLI says so, with how long the
tokens stay valid, and the socket API carries a typed `revocation` field.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest

from broker.client.api_client import BrokerClient
from broker.errors import BrokerError, NetworkError
from broker.model import Binding, ConnectionState, Discovered
from broker.oauth.flows import revoke_flow
from broker.oauth.registration import ClientRegistration
from broker.oauth.tokens import TokenSet
from broker.secret import Secret
from broker.storage.keystore import KeyringKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store

from .sansio import ISSUER, as_metadata, resp
from .servers.fixtures import SdkAsServer

pytestmark = pytest.mark.timeout(120)

MCP = "https://mcp.example.com/mcp"
REDIRECT = "http://127.0.0.1:53682/callback"


# -- the flow, sans-IO ------------------------------------------------------------------


def form(request):
    return {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}


def bound():
    d = Discovered(
        issuer=ISSUER,
        resource=MCP,
        scopes=("files:read",),
        scopes_offered=("files:read",),
        registration_method="dynamic",
        resource_metadata_url="https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
        auth_server=as_metadata(),
    )
    return Binding.of(MCP, d)


def state(method="none", secret=None, refresh="rt-1", expires_at=2_000_000_000):
    registration = ClientRegistration(ISSUER, "c1", "dynamic", REDIRECT, method, Secret(secret) if secret else None)
    tokens = TokenSet(
        access_token=Secret("at-1"),
        token_type="Bearer",
        expires_at=expires_at,
        scope=("files:read",),
        refresh_token=Secret(refresh) if refresh else None,
        obtained_at=1_000_000_000,
    )
    return ConnectionState(registration=registration, tokens=tokens)


def drive(flow, answers):
    answers, sent, reply, error = list(answers), [], None, None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(reply)
        except StopIteration as done:
            return sent, done.value
        sent.append(step)
        reply, error = None, None
        answer = answers.pop(0)
        if isinstance(answer, BrokerError):
            error = answer
        else:
            reply = answer


SDK_400 = resp(400, {"error": "invalid_request", "error_description": "client_secret: Field required"})


def test_a_400_from_the_sdk_handler_is_retried_once_with_the_credentials_in_the_body():
    sent, result = drive(revoke_flow(bound(), state()), [SDK_400, resp(200), resp(200)])
    assert [form(s) for s in sent] == [
        {"token": "rt-1", "token_type_hint": "refresh_token", "client_id": "c1"},
        {"token": "rt-1", "token_type_hint": "refresh_token", "client_id": "c1", "client_secret": ""},
        # The shape that worked is kept for the access token: no second 400.
        {"token": "at-1", "token_type_hint": "access_token", "client_id": "c1", "client_secret": ""},
    ]
    assert result.outcome == "revoked" and result.message(now=0) is None and not result.still_valid


def test_a_basic_client_adds_the_field_then_falls_back_to_client_secret_post_without_the_header():
    sent, result = drive(
        revoke_flow(bound(), state("client_secret_basic", "s3cret")),
        [SDK_400, resp(401, {"error": "invalid_client"}), resp(200), resp(200)],
    )
    headers = [dict(s.headers).get("Authorization", "") for s in sent]
    # Basic as registered (client_id beside it), then Basic with an empty client_secret field
    # (the Python SDK's form), then the secret in the body alone (the TypeScript SDK).
    assert headers[0].startswith("Basic ") and headers[1].startswith("Basic ")
    assert form(sent[0]) == {"token": "rt-1", "token_type_hint": "refresh_token", "client_id": "c1"}
    assert blank(sent[1])["client_secret"] == ""
    assert headers[2] == "" and form(sent[2])["client_secret"] == "s3cret"
    # The access token goes straight to the shape that worked.
    assert headers[3] == "" and form(sent[3])["token_type_hint"] == "access_token"
    assert result.outcome == "revoked"


def blank(req):
    from urllib.parse import parse_qs

    return {k: v[0] for k, v in parse_qs(req.body.decode(), keep_blank_values=True).items()}


def test_unsupported_token_type_is_an_answer_about_the_token_not_a_reason_to_retry():
    sent, result = drive(revoke_flow(bound(), state(refresh=None)), [resp(400, {"error": "unsupported_token_type"})])
    assert len(sent) == 1
    assert result.outcome == "refused" and result.still_valid


def test_a_refusal_after_the_fallback_says_the_tokens_stay_valid_until_they_expire():
    sent, result = drive(
        revoke_flow(bound(), state()),
        [resp(401, {"error": "unauthorized_client"}), resp(401, {"error": "unauthorized_client"})],
    )
    assert len(sent) == 2  # the refresh token, in both shapes; nothing after a refusal
    assert result.outcome == "refused" and result.still_valid
    assert result.access_expires_at == 2_000_000_000
    assert result.to_json() == {"outcome": "refused", "still_valid": True, "access_expires_at": 2_000_000_000}
    line = result.message(now=2_000_000_000 - 540)
    assert line.startswith(f"{ISSUER} refused to revoke the tokens (")
    assert "; they stay valid until they expire: the access token expires " in line and "(in 9 min)" in line
    assert "rt-1" not in line and "at-1" not in line


@pytest.mark.parametrize(
    "access_answer",
    [resp(400, {"error": "invalid_request"}), NetworkError("cannot reach auth.example.com")],
    ids=["refused", "unreachable"],
)
def test_a_failure_after_the_refresh_token_was_revoked_says_only_the_access_token_stays_valid(access_answer):
    sent, result = drive(revoke_flow(bound(), state()), [resp(200), access_answer, access_answer, access_answer])
    assert [form(s)["token_type_hint"] for s in sent][0] == "refresh_token"
    assert result.still_valid and result.access_expires_at == 2_000_000_000
    line = result.message(now=2_000_000_000 - 540)
    assert "the refresh token was revoked" in line
    assert "the access token stays valid until it expires: expires " in line and "(in 9 min)" in line
    assert "refresh token when the server decides" not in line and "they stay valid" not in line
    assert "rt-1" not in line and "at-1" not in line


def test_an_unreachable_server_is_not_called_a_refusal():
    _, result = drive(revoke_flow(bound(), state()), [NetworkError("cannot reach auth.example.com")])
    assert result.outcome == "unreachable" and result.still_valid
    assert "could not reach" in result.message(now=0)


# -- the real thing: serve + CLI against the SDK's handlers -----------------------------


@pytest.fixture(scope="module")
def sdk_as():
    with SdkAsServer() as server:
        yield server


def tokens_in_vault(name):
    return Store(Paths.default(), KeyringKeyStore).load_states()[name].tokens


def mcp_status(server, access_token):
    params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
    headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json, text/event-stream"}
    return httpx.post(server.url, json=body, headers=headers, timeout=10).status_code


def refresh_status(server, client_id, refresh_token):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id, "client_secret": ""}
    return httpx.post(f"{server.issuer}/token", data=data, timeout=10).status_code


def connect(cli, server, name):
    r = cli("add", name, server.url)
    assert r.returncode == 0, r.stderr
    r = cli("connect", name)
    assert r.returncode == 0, r.stderr + cli.browser_log.read_text()
    return tokens_in_vault(name)


def test_disconnect_revokes_at_the_sdk_handlers_through_serve(cli, sdk_as, service):
    tokens = connect(cli, sdk_as, "sdk")
    access, refresh = tokens.access_token.reveal(), tokens.refresh_token.reveal()
    assert mcp_status(sdk_as, access) == 200  # the token works before
    before = sdk_as.stats()

    r = cli("disconnect", "sdk")

    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert "Disconnected sdk" in r.stdout
    after = sdk_as.stats()
    assert after["revoked"].get("refresh_token", 0) == before["revoked"].get("refresh_token", 0) + 1
    assert after["revoked"].get("access_token", 0) == before["revoked"].get("access_token", 0) + 1
    assert mcp_status(sdk_as, access) == 401  # the server really revoked: the old token is refused
    [client_id] = [c for c, m in after["clients"].items() if m == "none"][-1:]
    assert refresh_status(sdk_as, client_id, refresh) == 400  # and the refresh token no longer refreshes


def test_a_refusal_is_said_plainly_by_the_cli_and_typed_in_the_socket_api(cli, sdk_as, service):
    tokens = connect(cli, sdk_as, "sdk2")
    access = tokens.access_token.reveal()
    sdk_as.refuse_revocation(True)
    try:
        r = cli("disconnect", "sdk2")
        # The local disconnect happened (the broker holds no tokens to retry with): exit 0, one warning line.
        assert r.returncode == 0, r.stderr
        [line] = r.stderr.strip().splitlines()
        assert line.startswith(f"mcp-token-broker: warning: {sdk_as.issuer} refused to revoke the tokens (")
        assert "; they stay valid until they expire: the access token expires " in line
        assert access not in r.stderr
        assert "Disconnected sdk2" in r.stdout
        assert mcp_status(sdk_as, access) == 200  # what the line says is true

        connect(cli, sdk_as, "sdk3")
        answer = BrokerClient(str(service.socket_path)).request("POST", "/v1/connections/sdk3/disconnect")
        assert answer["revocation"]["outcome"] == "refused" and answer["revocation"]["still_valid"] is True
        assert isinstance(answer["revocation"]["access_expires_at"], int)
        assert "refused to revoke" in answer["warning"]
    finally:
        sdk_as.refuse_revocation(False)


def test_revocation_keeps_working_at_oidc_provider(cli, stack, service):
    oidc, mcp = stack
    connect(cli, type("S", (), {"url": mcp.url}), "oidc")
    before = oidc.stats()
    r = cli("disconnect", "oidc")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    after = oidc.stats()
    assert after["revocations"]["refresh_token"] == before["revocations"]["refresh_token"] + 1
    # The JWT access token cannot be revoked there; that is its only complaint.
    assert set(after["revocation_errors"]) <= {"unsupported_token_type"}
    answer = BrokerClient(str(service.socket_path)).request("POST", "/v1/connections/oidc/disconnect")
    assert answer["revocation"]["outcome"] == "no_tokens" and answer["warning"] is None


def test_a_preregistered_basic_client_logs_in_refreshes_and_revokes_at_the_sdk_handlers(cli, sdk_as, service):
    # The SDK's ClientAuthenticator wants client_id in the form even beside HTTP Basic
    # (RFC 6749 section 3.2.1 allows it; it is the same identity, not a second credential).
    port = socket_port()
    client = sdk_as._call(
        "POST",
        "/__test/clients",
        json={"redirect_uri": f"http://127.0.0.1:{port}/callback", "method": "client_secret_basic"},
    )
    r = cli(
        "add",
        "basic",
        sdk_as.url,
        "--client-id",
        client["client_id"],
        "--client-secret-stdin",
        "--redirect-port",
        str(port),
        input=client["client_secret"] + "\n",
    )
    assert r.returncode == 0, r.stderr
    r = cli("connect", "basic")
    assert r.returncode == 0, r.stderr + cli.browser_log.read_text()
    access = tokens_in_vault("basic").access_token.reveal()
    assert mcp_status(sdk_as, access) == 200

    r = cli("disconnect", "basic")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert mcp_status(sdk_as, access) == 401


def socket_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
