"""POST /v1/connections/NAME/adopt against a real `serve`: tokens another
tool obtained (mcp-remote's, read by `import --from mcp-remote`) go into the
running service's vault and memory together, so `token NAME` serves them at
once. Bad bodies are one-line 400s that never quote a token, the answer never
carries one, and a connection that holds tokens is never overwritten."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from broker.client.api_client import BrokerClient
from broker.errors import ServiceError

from .conftest import start_service

ACCESS = "at-adopted-7d1f0c"
REFRESH = "rt-adopted-2b9e4a"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def _body(issuer: str, *, access: str = ACCESS, refresh: str = REFRESH) -> dict:
    now = int(time.time())
    return {
        "tokens": {
            "access_token": access,
            "token_type": "Bearer",
            "expires_at": now + 3600,
            "scope": ["mcp:read"],
            "refresh_token": refresh,
            "obtained_at": now,
        },
        "registration": {
            "issuer": issuer,
            "client_id": "client-from-mcp-remote",
            "method": "dynamic",
            "redirect_uri": "http://localhost:3334/oauth/callback",
            "token_endpoint_auth_method": "none",
            "client_secret": None,
            "client_secret_expires_at": None,
            "registration_access_token": None,
            "registration_client_uri": None,
        },
    }


@pytest.fixture
def added(cli, stack):
    _, mcp = stack
    running = start_service(cli)
    try:
        result = cli("add", "team", mcp.url)
        assert result.returncode == 0, result.stderr
        issuer = cli("show", "team", "--json").json()["issuer"]
        yield running, BrokerClient(str(running.socket_path)), issuer
    finally:
        assert running.stop() == 0, running.log


def test_adopt_serves_the_tokens_at_once_and_never_echoes_them(cli, added):
    running, client, issuer = added
    answer = client.request("POST", "/v1/connections/team/adopt", _body(issuer))
    text = json.dumps(answer)
    assert ACCESS not in text and REFRESH not in text and "client-from-mcp-remote" not in text
    assert answer["connection"]["name"] == "team" and answer["connection"]["status"] == "connected"
    token = cli("token", "team")  # the service's memory agrees with the vault: no restart
    assert token.returncode == 0, token.stderr
    assert digest(token.stdout.strip()) == digest(ACCESS)
    audit = (Path(cli.env["XDG_STATE_HOME"]) / "mcp-token-broker" / "audit.log").read_text()
    adopted = [json.loads(line) for line in audit.splitlines() if '"adopted"' in line]
    assert len(adopted) == 1 and adopted[0]["connection"] == "team"
    assert adopted[0]["detail"] == "adopted tokens from mcp-remote"
    assert ACCESS not in audit and REFRESH not in audit and ACCESS not in running.log
    # Tokens held are never overwritten.
    with pytest.raises(ServiceError) as again:
        client.request("POST", "/v1/connections/team/adopt", _body(issuer, access="at-second"))
    assert again.value.code == "bad_request" and "already holds tokens" in str(again.value)
    assert digest(cli("token", "team").stdout.strip()) == digest(ACCESS)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda b: [], "JSON object"),
        (lambda b: {"tokens": b["tokens"]}, "registration"),
        (lambda b: b | {"extra": 1}, "extra"),
        (lambda b: b["tokens"].update(access_token=ACCESS + "\r\nX-Evil: 1"), "access_token"),
        (lambda b: b["tokens"].update(access_token="a" * 20_000), "access_token"),
        (lambda b: b["tokens"].update(refresh_token=REFRESH + " x"), "refresh_token"),
        (lambda b: b["tokens"].update(expires_at="soon"), "expires_at"),
        (lambda b: b["tokens"].update(expires_at=True), "expires_at"),
        (lambda b: b["tokens"].update(scope="mcp:read"), "scope"),
        (lambda b: b["tokens"].update(scope=['a"b']), "scope"),
        (lambda b: b["registration"].update(token_endpoint_auth_method="magic"), "token_endpoint_auth_method"),
        (lambda b: b["registration"].update(client_id=""), "client_id"),
        (lambda b: b["registration"].update(method="preregistered"), "method"),
        (lambda b: b["registration"].update(issuer="https://evil.example"), "another authorization server"),
    ],
)
def test_bad_bodies_are_refused_in_one_line_and_adopt_nothing(cli, added, change, words):
    _, client, issuer = added
    body = _body(issuer)
    changed = change(body)
    sent = body if changed is None else changed
    with pytest.raises(ServiceError) as refused:
        client.request("POST", "/v1/connections/team/adopt", sent)
    message = str(refused.value)
    assert refused.value.code == "bad_request", message
    assert words in message and "\n" not in message
    assert ACCESS not in message and REFRESH not in message
    assert cli("show", "team", "--json").json()["status"] == "not_connected"


def test_unknown_connection_and_oversized_bodies(added):
    _, client, issuer = added
    with pytest.raises(ServiceError) as unknown:
        client.request("POST", "/v1/connections/nobody/adopt", _body(issuer))
    assert unknown.value.code == "unknown_connection"
    with pytest.raises(ServiceError) as large:
        client.request("POST", "/v1/connections/team/adopt", _body(issuer, access="a" * 70_000))
    assert large.value.status == 413
    with pytest.raises(ServiceError) as method:
        client.request("GET", "/v1/connections/team/adopt")
    assert method.value.code == "method_not_allowed"
