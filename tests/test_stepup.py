"""Scope step-up (issue 11, section 3): a 403 `insufficient_scope` leads to a
login that asks for more, and only as often as it can help.

End to end with real parts: `serve`, oidc-provider, the test MCP server whose
`admin_echo` tool answers 403 `Bearer error="insufficient_scope",
scope="mcp:read mcp:admin"` to a token without mcp:admin, the official Python
SDK client through `mcp-token-broker proxy NAME`, and `BrokerAuth` on httpx.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

from broker.client.api_client import BrokerClient
from broker.stepup import MAX_ATTEMPTS, StepUp, after_login, check_scopes, on_challenge

pytestmark = pytest.mark.timeout(120)

REQUEST = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "admin_echo", "arguments": {}}}


def _connected(cli, mcp_url: str, name: str) -> None:
    assert cli("add", name, mcp_url).returncode == 0
    r = cli("connect", name)
    assert r.returncode == 0, r.stderr


def _authorize_scopes(cli) -> list[set[str]]:
    """The `scope` of every authorization URL the test browser opened, in order."""
    found = []
    for url in re.findall(r"https?://\S+/auth\?\S+", cli.browser_log.read_text()):
        scope = parse_qs(urlsplit(url).query).get("scope")
        if scope:
            found.append(set(scope[0].split()))
    return found


def _call_admin_echo(cli, name: str, text: str):
    from mcp.client.client import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    env = {"XDG_RUNTIME_DIR": cli.env["XDG_RUNTIME_DIR"]}

    async def main():
        params = StdioServerParameters(command=cli.exe, args=["proxy", name], env=env)
        async with Client(stdio_client(params)) as client:
            try:
                return await client.call_tool("admin_echo", {"text": text})
            except Exception as exc:  # the JSON-RPC error the proxy answered with  # noqa: BLE001
                return exc

    return anyio.run(main)


def test_proxy_reports_step_up_and_connect_asks_for_the_union(cli, stack, service):
    _, mcp = stack
    _connected(cli, mcp.url, "gh")
    assert all("mcp:admin" not in s for s in _authorize_scopes(cli))

    first = _call_admin_echo(cli, "gh", "hello")
    assert isinstance(first, Exception), first
    assert "gh needs more access (scope mcp:admin)" in str(first)
    assert "mcp-token-broker connect gh" in str(first) and "Reconnect in the app" in str(first)

    listed = cli("list")
    assert "needs more access (mcp:admin)" in listed.stdout, listed.stdout
    shown = cli("show", "gh")
    assert "needs more access (mcp:admin)" in shown.stdout, shown.stdout
    view = BrokerClient(str(service.socket_path)).connection("gh")
    assert view["step_up"]["missing"] == ["mcp:admin"] and view["step_up"]["pending"] is True
    assert {"mcp:read", "mcp:admin"} <= set(view["step_up"]["request"])

    connected = cli("connect", "gh")
    assert connected.returncode == 0, connected.stderr
    assert "will also ask for mcp:admin" in connected.stderr, connected.stderr
    last = _authorize_scopes(cli)[-1]
    assert {"mcp:read", "mcp:admin"} <= last, last  # the union: nothing that worked is dropped

    second = _call_admin_echo(cli, "gh", "with admin")
    assert not isinstance(second, Exception), second
    assert not second.is_error and "with admin" in str(second.content)
    assert "needs more access" not in cli("list").stdout
    assert BrokerClient(str(service.socket_path)).connection("gh")["step_up"] is None
    audit = [json.loads(line) for line in _audit_lines(cli)]
    assert any(e.get("outcome") == "step_up" and "mcp:admin" in e.get("detail", "") for e in audit), audit


def _audit_lines(cli) -> list[str]:
    from pathlib import Path

    path = Path(cli.env["XDG_STATE_HOME"]) / "mcp-token-broker" / "audit.log"
    return path.read_text().splitlines()


def test_brokerauth_reports_step_up_and_it_survives_a_restart(cli, stack):
    import httpx

    from broker.client.httpx_auth import BrokerAuth

    from .conftest import start_service

    _, mcp = stack
    _connected(cli, mcp.url, "ha")
    running = start_service(cli)
    try:
        client = BrokerClient(str(running.socket_path))
        with httpx.Client(auth=BrokerAuth("ha", client=client)) as http:
            response = http.post(
                mcp.url, json=REQUEST, headers={"Accept": "application/json, text/event-stream"}, timeout=30
            )
        assert response.status_code == 403
        assert "ha needs more access (scope mcp:admin)" in response.extensions["broker_step_up"]
        assert client.connection("ha")["step_up"]["missing"] == ["mcp:admin"]
    finally:
        assert running.stop() == 0
    running = start_service(cli)  # kept in the connection's settings
    try:
        view = BrokerClient(str(running.socket_path)).connection("ha")
        assert view["step_up"]["pending"] is True and view["step_up"]["missing"] == ["mcp:admin"]
    finally:
        assert running.stop() == 0


def test_report_refuses_a_token_it_did_not_issue_and_bad_scopes(cli, stack, service):
    from broker.errors import ServiceError

    _, mcp = stack
    _connected(cli, mcp.url, "bad")
    client = BrokerClient(str(service.socket_path))
    answer = client.report_insufficient_scope("bad", "not-the-token", ["mcp:admin"])
    assert answer["recorded"] is False and answer["reason"] == "stale"
    assert client.connection("bad")["step_up"] is None
    token = client.token("bad")["access_token"]
    with pytest.raises(ServiceError) as caught:
        client.report_insufficient_scope("bad", token, ['mcp:admin"'])
    assert caught.value.code == "bad_request"


# -- the retry limit, as rules --------------------------------------------------------


def test_same_challenge_after_logins_that_did_not_grant_it_stops_asking():
    challenged = ("mcp:read", "mcp:admin")
    step = on_challenge(None, challenged, ("mcp:read",))
    assert step.pending and step.missing == ("mcp:admin",)
    for attempt in range(1, MAX_ATTEMPTS):
        step = after_login(step, ("mcp:read",))  # the server did not grant it
        assert step is not None and step.attempts == attempt and step.pending
    step = after_login(step, ("mcp:read",))
    assert step is not None and step.given_up and not step.pending
    again = on_challenge(step, challenged, ("mcp:read",))
    assert again.given_up and not again.pending  # not asked again


def test_a_login_that_earns_the_scope_ends_the_step_up_and_counts_nothing():
    challenged = ("mcp:read", "mcp:admin")
    assert after_login(on_challenge(None, challenged, ("mcp:read",)), challenged) is None
    # Later (a token without it again) the same set: asked for, every attempt still left.
    step = on_challenge(None, challenged, ("mcp:read",))
    for _ in range(MAX_ATTEMPTS - 1):
        step = after_login(step, ("mcp:read",))
        assert step is not None and step.pending and not step.given_up


def test_alternating_challenges_the_server_never_grants_stop_being_asked():
    step: StepUp | None = None
    logins = 0
    for round_ in range(4 * MAX_ATTEMPTS + 2):
        step = on_challenge(step, ("mcp:x",) if round_ % 2 == 0 else ("mcp:y",), ("mcp:read",))
        if not step.pending:
            break
        logins += 1
        step = after_login(step, ("mcp:read",))  # the server grants neither
    assert step is not None and step.given_up and not step.pending
    assert logins == 2 * MAX_ATTEMPTS  # each scope asked for MAX_ATTEMPTS times, then no more


def test_a_challenge_for_scopes_the_token_carried_is_asked_for_a_bounded_number_of_logins():
    # The token said it had the scope, the server still refuses: a login cannot prove it earned it.
    challenged = ("mcp:admin",)
    step: StepUp | None = None
    logins = 0
    for _ in range(4 * MAX_ATTEMPTS):
        step = on_challenge(step, challenged, challenged)
        if not step.pending:
            break
        logins += 1
        step = after_login(step, challenged)
    assert step is not None and step.given_up and logins == MAX_ATTEMPTS
    assert on_challenge(step, ("mcp:other",), challenged).pending  # a different scope is asked for


def test_step_up_json_round_trip_and_the_earlier_form():
    step = after_login(on_challenge(None, ("a", "b"), ("a",)), ("a",))
    assert step is not None and StepUp.from_json(step.to_json()) == step
    old = StepUp.from_json({"scopes": ["a", "b"], "missing": ["b"], "attempts": 2, "pending": False, "given_up": True})
    assert old.refused == ("b",) and old.attempts == 2 and on_challenge(old, ("b",), ("a",)).given_up


def test_scope_values_are_checked():
    assert check_scopes(["a", "b", "a"]) == ("a", "b")
    assert check_scopes([], allow_empty=True) == () and check_scopes(["a"] * 33, 64) == ("a",)  # adopted tokens
    for bad in ([], ["a b"], ['a"'], ["a\\"], [""], ["x" * 129], "a", [1], ["a"] * 33, ["é"]):
        assert check_scopes(bad) is None, bad
