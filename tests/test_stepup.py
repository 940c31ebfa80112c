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
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

from broker.client.api_client import BrokerClient
from broker.stepup import (
    MAX_ATTEMPTS,
    StepUp,
    after_login,
    after_refused_login,
    check_scopes,
    logins_given_up,
    next_request,
    on_challenge,
)

pytestmark = pytest.mark.timeout(120)

REQUEST = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "admin_echo", "arguments": {}}}


def _connected(cli, mcp_url: str, name: str) -> None:
    assert cli("add", name, mcp_url).returncode == 0
    r = cli("connect", name)
    assert r.returncode == 0, r.stderr


def _authorize_scopes(cli) -> list[set[str]]:
    """The `scope` of every authorization URL the test browser opened, in order."""
    found = []
    for url in re.findall(r"https?://\S+/auth(?:orize)?\?\S+", cli.browser_log.read_text()):
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


# -- an authorization server that refuses the challenged scope ------------------------


@pytest.fixture(scope="module")
def sdk_as():
    """The MCP SDK's AS handlers: a client may only ask for the scopes it registered,
    from those the server lists, so `mcp:write` is refused at the authorize step."""
    from .servers.fixtures import SdkAsServer

    with SdkAsServer() as server:
        yield server


def _settings(name: str):
    from broker.storage.keystore import KeyringKeyStore
    from broker.storage.paths import Paths
    from broker.storage.store import Store

    return Store(Paths.default(), KeyringKeyStore).load_settings()[name]


def test_a_step_up_the_server_refuses_at_login_is_given_up_and_the_earlier_scopes_log_in(cli, sdk_as, service):
    _connected(cli, sdk_as.url, "sdk")
    before = _settings("sdk").scopes
    first = _authorize_scopes(cli)[-1]
    assert "mcp:write" not in first
    client = BrokerClient(str(service.socket_path))
    answer = client.report_insufficient_scope("sdk", client.token("sdk")["access_token"], ["mcp:read", "mcp:write"])
    assert answer["pending"] is True and answer["missing"] == ["mcp:write"], answer

    for attempt in range(1, MAX_ATTEMPTS + 1):
        refused = cli("connect", "sdk")
        assert refused.returncode != 0, refused.stderr
        assert "invalid_scope" in refused.stderr and "mcp:write" in refused.stderr, refused.stderr
        assert "mcp:write" in _authorize_scopes(cli)[-1]
        left = MAX_ATTEMPTS - attempt
        assert attempt == MAX_ATTEMPTS or f"if {left} more login(s) do not get it, it stops asking" in refused.stderr
        step_up = client.connection("sdk")["step_up"]
        assert step_up["tries"] == {"mcp:write": attempt}, step_up
    assert step_up["given_up"] is True and step_up["pending"] is False and step_up["refused"] == ["mcp:write"]
    assert _settings("sdk").scopes == before, _settings("sdk").scopes
    assert f"no longer asks for mcp:write (not granted in {MAX_ATTEMPTS} logins)" in refused.stderr, refused.stderr
    assert "not granted by the server (mcp:write)" in cli("show", "sdk").stdout

    again = cli("connect", "sdk")
    assert again.returncode == 0, again.stderr
    assert _authorize_scopes(cli)[-1] == first  # what worked before the step-up
    assert client.connection("sdk")["status"] == "connected"


def test_a_refused_login_of_a_connection_removed_meanwhile_reports_the_refusal(sdk_as, user_dirs, tmp_path, caplog):
    # Counting the refusal cannot find the connection: the AS's invalid_scope is what the user sees.
    import os
    import subprocess

    from broker.driver.engine import Engine
    from broker.driver.transport import Transport
    from broker.errors import OAuthError
    from broker.storage.keystore import FileKeyStore
    from broker.storage.paths import Paths
    from broker.storage.store import Store

    from .servers.fixtures import BROWSER_SCRIPT

    def store() -> Store:
        return Store(Paths.default(), lambda: FileKeyStore(tmp_path / "key"))

    env = {**os.environ, "BROWSER_LOG": str(tmp_path / "browser.log")}
    removed = []

    def opener(url: str) -> bool:
        if "mcp%3Awrite" in url or "mcp:write" in url:  # the step-up's login: the user removes the connection
            with store().transaction() as txn:
                del txn.settings["gone"]
                txn.states.pop("gone", None)
            removed.append(url)
        subprocess.run([BROWSER_SCRIPT, url], env=env, check=True, timeout=30)
        return True

    async def main() -> BaseException:
        engine = Engine(store(), Transport(), opener=opener, flow_timeout=30)
        try:
            await engine.add("gone", sdk_as.url)
            await engine.connect("gone")

            def widen(txn):
                current, _ = txn.get("gone")
                step = on_challenge(None, ("mcp:write",), (), asked=current.scopes)
                txn.settings["gone"] = replace(current, step_up=step, scopes=(*current.scopes, "mcp:write"))

            await engine.store.update(widen, secrets=False)
            with pytest.raises(OAuthError) as refused:
                await engine.connect("gone")
            return refused.value
        finally:
            await engine.transport.aclose()

    with caplog.at_level("WARNING", logger="broker.driver.engine"):
        error = anyio.run(main)
    assert removed and error.error == "invalid_scope", error
    assert any("gone" in r.getMessage() and "step-up" in r.getMessage() for r in caplog.records), caplog.records


def test_refused_logins_count_in_their_messages_only_the_scopes_of_this_step_up(sdk_as, user_dirs, tmp_path):
    # mcp:write was given up in an earlier step-up; a challenge names it again with
    # mcp:new. Each refused login counts both, but the logins left and the give-up's
    # count are mcp:new's: mcp:write's earlier logins are not this step-up's.
    import os
    import subprocess

    from broker.driver.engine import Engine
    from broker.driver.transport import Transport
    from broker.errors import OAuthError
    from broker.storage.keystore import FileKeyStore
    from broker.storage.paths import Paths
    from broker.storage.store import Store

    from .servers.fixtures import BROWSER_SCRIPT

    env = {**os.environ, "BROWSER_LOG": str(tmp_path / "browser.log")}

    def opener(url: str) -> bool:
        subprocess.run([BROWSER_SCRIPT, url], env=env, check=True, timeout=30)
        return True

    async def main() -> list[str]:
        store = Store(Paths.default(), lambda: FileKeyStore(tmp_path / "key"))
        engine = Engine(store, Transport(), opener=opener, flow_timeout=30)
        try:
            await engine.add("mixed", sdk_as.url)
            await engine.connect("mixed")

            def challenge(txn):
                current, _ = txn.get("mixed")
                step: StepUp | None = on_challenge(None, ("mcp:write",), (), asked=current.scopes)
                for _ in range(MAX_ATTEMPTS):
                    step = after_login(step, ())
                assert step is not None and step.given_up
                step = on_challenge(step, ("mcp:write", "mcp:new"), (), asked=current.scopes)
                assert step.pending and step.refused == ("mcp:write",)
                scopes = (*current.scopes, "mcp:write", "mcp:new")
                txn.settings["mixed"] = replace(current, step_up=step, scopes=scopes)

            await engine.store.update(challenge, secrets=False)
            messages = []
            for _ in range(MAX_ATTEMPTS):
                with pytest.raises(OAuthError) as refused:
                    await engine.connect("mixed")
                assert refused.value.error == "invalid_scope"
                messages.append(str(refused.value))
            return messages
        finally:
            await engine.transport.aclose()

    first, last = anyio.run(main)
    assert "if 1 more login(s) do not get it, it stops asking" in first, first
    assert f"no longer asks for mcp:write mcp:new (not granted in {MAX_ATTEMPTS} logins)" in last, last


def test_logins_that_succeed_without_the_scope_give_up_back_to_the_earlier_scopes(cli, stack, service):
    _, mcp = stack
    _connected(cli, mcp.url, "og")
    before, first = _settings("og").scopes, _authorize_scopes(cli)[-1]
    client = BrokerClient(str(service.socket_path))
    answer = client.report_insufficient_scope("og", client.token("og")["access_token"], ["mcp:unknown"])
    assert answer["pending"] is True, answer
    for _ in range(MAX_ATTEMPTS):
        r = cli("connect", "og")
        assert r.returncode == 0, r.stderr  # oidc-provider drops a scope it does not know
        assert "mcp:unknown" in _authorize_scopes(cli)[-1]
    assert client.connection("og")["step_up"]["given_up"] is True
    assert _settings("og").scopes == before, _settings("og").scopes
    assert cli("connect", "og").returncode == 0
    assert _authorize_scopes(cli)[-1] == first


def test_a_login_the_user_cancels_is_not_counted_against_the_step_up(cli, stack):
    from .conftest import start_service

    _, mcp = stack
    _connected(cli, mcp.url, "cancel")
    running = start_service(cli, env={"BROWSER_MODE": "deny"})  # its logins open the browser
    try:
        client = BrokerClient(str(running.socket_path))
        client.report_insufficient_scope("cancel", client.token("cancel")["access_token"], ["mcp:admin"])
        for _ in range(MAX_ATTEMPTS):
            r = cli("connect", "cancel")
            assert r.returncode != 0 and "access_denied" in r.stderr, r.stderr
        step_up = client.connection("cancel")["step_up"]
        assert step_up["pending"] is True and step_up["tries"] == {}, step_up  # only invalid_scope counts
    finally:
        assert running.stop() == 0


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
    step = after_login(on_challenge(None, ("a", "b"), ("a",), asked=("a",)), ("a",))
    assert step is not None and StepUp.from_json(step.to_json()) == step and step.before == ("a",)
    unknown = replace(step, before=None)
    assert StepUp.from_json(unknown.to_json()) == unknown
    old = StepUp.from_json({"scopes": ["a", "b"], "missing": ["b"], "attempts": 2, "pending": False, "given_up": True})
    assert old.refused == ("b",) and old.attempts == 2 and on_challenge(old, ("b",), ("a",)).given_up


def test_a_login_the_server_refused_for_its_scope_counts_and_gives_up_back_to_the_earlier_scopes():
    before = ("mcp:read",)
    step: StepUp | None = on_challenge(None, ("mcp:read", "mcp:write"), ("mcp:read",), asked=before)
    assert step is not None and step.before == before
    for attempt in range(1, MAX_ATTEMPTS):
        step = after_refused_login(step)  # the server answered invalid_scope: no token at all
        assert step is not None and step.attempts == attempt and step.pending
        assert next_request(step, ("mcp:read", "mcp:write")) == ("mcp:read", "mcp:write")  # still asked for
    step = after_refused_login(step)
    assert step is not None and step.given_up and not step.pending and step.refused == ("mcp:write",)
    assert next_request(step, ("mcp:read", "mcp:write")) == before  # what worked before the step-up
    assert after_refused_login(step) == step  # nothing pending: nothing more to count


def test_refused_logins_count_when_the_challenge_named_scopes_the_token_carried():
    # A held challenge (the token carried X): a refused login has no token, so it
    # is counted as one that earned nothing, and the step-up stays under way.
    step: StepUp | None = on_challenge(None, ("X",), ("X", "Y"), asked=())
    assert step is not None and step.held
    for attempt in range(1, MAX_ATTEMPTS):
        step = after_refused_login(step)
        assert step is not None and step.attempts == attempt and step.pending and not step.given_up
    step = after_refused_login(step)
    assert step is not None and step.given_up and not step.pending and step.refused == ("X",)
    assert next_request(step, ("X",)) == ()  # what was asked before the step-up


def test_a_given_up_step_up_asks_for_the_earlier_scopes_however_it_ended():
    # Logins that succeed without the scope give up as refused logins do; so does a
    # challenge naming only refused scopes, whatever the step-up before it asked for.
    step = on_challenge(None, ("mcp:admin",), ("mcp:read",), asked=())
    for _ in range(MAX_ATTEMPTS):
        step = after_login(step, ("mcp:read",))
    assert step is not None and step.given_up and next_request(step, ("mcp:read", "mcp:admin")) == ()
    widened = on_challenge(step, ("mcp:x",), ("mcp:read",), asked=())
    assert widened.pending and widened.before == ()
    again = on_challenge(widened, ("mcp:admin",), ("mcp:read",), asked=("mcp:read", "mcp:x"))
    assert again.given_up and again.before == () and next_request(again, ("mcp:read", "mcp:x")) == ()
    # A step-up in progress keeps what was asked before it began.
    assert on_challenge(widened, ("mcp:y",), ("mcp:read",), asked=("mcp:read", "mcp:x")).before == ()
    assert next_request(None, ("a",)) == ("a",) and next_request(widened, ("a", "mcp:x")) == ("a", "mcp:x")


def test_logins_left_and_given_up_count_only_the_scopes_this_step_up_still_asks_for():
    # A challenged once, one login without it; then A and B: a refused login refuses A
    # (its second), B has one login left, not none.
    step: StepUp | None = after_login(on_challenge(None, ("A",), ()), ())
    assert step is not None and step.logins_left == MAX_ATTEMPTS - 1
    step = after_refused_login(on_challenge(step, ("A", "B"), ()))
    assert step is not None and step.refused == ("A",) and step.pending
    assert step.attempts == MAX_ATTEMPTS and step.logins_left == MAX_ATTEMPTS - 1
    # A given up in an earlier step-up, named again with B: B's logins, not A's.
    step = on_challenge(None, ("A",), ())
    for _ in range(MAX_ATTEMPTS):
        step = after_login(step, ())
    mixed = on_challenge(step, ("A", "B"), ())
    assert mixed.pending and mixed.logins_left == MAX_ATTEMPTS
    once = after_refused_login(mixed)
    assert once is not None and once.attempts == MAX_ATTEMPTS + 1 and once.logins_left == MAX_ATTEMPTS - 1
    done = after_refused_login(once)
    assert done is not None and done.given_up and done.logins_left == 0
    assert done.attempts == MAX_ATTEMPTS + 2 and logins_given_up(once, done) == MAX_ATTEMPTS
    # A step-up with nothing refused before: the count is its own.
    fresh = after_refused_login(on_challenge(None, ("C",), ()))
    assert fresh is not None and fresh.logins_left == MAX_ATTEMPTS - 1
    last = after_refused_login(fresh)
    assert last is not None and last.given_up and logins_given_up(fresh, last) == MAX_ATTEMPTS


def test_a_step_up_recorded_without_the_earlier_scopes_drops_the_refused_ones_when_given_up():
    old = StepUp.from_json({"scopes": ["mcp:write"], "missing": ["mcp:write"], "attempts": 1, "pending": True})
    assert old.before is None
    step = after_refused_login(old)
    assert step is not None and step.given_up
    assert next_request(step, ("mcp:read", "mcp:write")) == ("mcp:read",)


def test_scope_values_are_checked():
    assert check_scopes(["a", "b", "a"]) == ("a", "b")
    assert check_scopes([], allow_empty=True) == () and check_scopes(["a"] * 33, 64) == ("a",)  # adopted tokens
    for bad in ([], ["a b"], ['a"'], ["a\\"], [""], ["x" * 129], "a", [1], ["a"] * 33, ["é"]):
        assert check_scopes(bad) is None, bad
