"""One error vocabulary: every error is a `BrokerError` in `broker.errors`, and
one table (`broker.codes`) gives each error code its HTTP status, its exit
status and its meaning, for the API, the CLI, the client and the `token` fast
path alike. The README and docs/socket-api.md are checked against the table."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import pytest

from broker import errors
from broker.client.api_client import BrokerClient, ServiceError, ServiceUnavailable

from .servers.fixtures import running_stack

REPO = Path(__file__).resolve().parent.parent
BROKER = REPO / "broker"


# -- the bugs -------------------------------------------------------------------


def test_refresh_failed_exits_the_same_from_token_and_the_full_cli(cli, user_dirs, tmp_path):
    """`refresh_failed` exited 9 from `token` (the fast path's own table) and 5
    from the rest of the CLI; 9 was documented nowhere. Now 5 everywhere."""
    from .test_service import Clock, connect, make_service

    with running_stack(access_ttl=120) as (oidc, mcp):
        clock = Clock()

        async def main():
            service = make_service(tmp_path, clock=clock)
            await service.start()
            try:
                await connect(service, "down", mcp.url)
                tokens = service._states["down"].tokens
                service.scheduler.set("down", None)
                oidc.outage(503)
                clock.offset = tokens.expires_at - clock() - 5  # below the 10 s floor: a refresh is a must
                token = await asyncio.to_thread(cli, "token", "down")
                headers = await asyncio.to_thread(cli, "headers", "down")

                def sdk() -> ServiceError:
                    with pytest.raises(ServiceError) as info:
                        BrokerClient().token("down")
                    return info.value

                error = await asyncio.to_thread(sdk)
                return token, headers, error
            finally:
                await service.stop()

        token, headers, error = asyncio.run(main())
    assert "refreshing down failed" in token.stderr and token.stdout == ""
    assert token.returncode == headers.returncode == 5, token.stderr
    # The full CLI reports a service's error with the error's own exit status.
    assert error.code == "refresh_failed" and error.status == 503
    assert error.exit_code == token.returncode


@pytest.mark.parametrize(
    "args",
    [["--redirect-port", "70000"], ["--redirect-port", "0"]],
    ids=["port-too-high", "port-zero"],
)
def test_a_usage_mistake_in_add_exits_2_not_5(cli, args):
    """The engine called these a `RegistrationError`: a remote server's fault, exit 5."""
    r = cli("add", "x", "https://mcp.example.com/mcp", *args)
    assert r.returncode == 2, r.stderr
    assert "--redirect-port must be between 1 and 65535" in r.stderr


def test_a_usage_mistake_through_the_service_is_a_bad_request(cli, service):
    r = cli("add", "x", "https://mcp.example.com/mcp", "--redirect-port", "70000")
    assert r.returncode == 2, r.stderr
    assert "--redirect-port must be between 1 and 65535" in r.stderr
    client = BrokerClient(str(service.socket_path))
    # A client secret without a client id (the CLI refuses it before asking).
    with pytest.raises(ServiceError) as info:
        client.request(
            "POST", "/v1/connections", {"name": "x", "server_url": "https://mcp.example.com/mcp", "client_secret": "s"}
        )
    assert (info.value.status, info.value.code, info.value.exit_code) == (400, "bad_request", 2)
    assert "needs a --client-id" in info.value.message and "s" not in info.value.message.split()


# -- one table --------------------------------------------------------------------


def _error_classes() -> list[type[errors.BrokerError]]:
    found, todo = [], [errors.BrokerError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if c.__module__ == "broker.errors"]


def test_every_error_class_has_a_code_in_the_table():
    from broker import codes

    classes = _error_classes()
    assert len(classes) > 40
    for cls in classes:
        assert cls.code in codes.CODES, cls
        assert cls.__name__ in errors.__all__, cls
    assert errors.RefreshError("x").exit_code == 5
    assert errors.NotConnected("x").exit_code == 8
    assert errors.ServiceError(0, "no_such_code", "x").exit_code == 1


def test_the_tree_in_the_docstring_names_every_class_under_its_parent():
    """The drawn tree is the class tree: every class once, indented under its base."""
    lines = [line for line in errors.__doc__.splitlines() if re.match(r"\s+(BrokerError|[│├└ ]+── )", line)]
    drawn: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in lines:
        name = re.search(r"(\w+)", line.replace("── ", "  ", 1)).group(1)
        depth = line.find(name)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        drawn[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    actual = {
        cls.__name__: (cls.__bases__[0].__name__ if cls is not errors.BrokerError else None) for cls in _error_classes()
    }
    assert drawn == actual


def test_every_code_the_broker_uses_is_in_the_table():
    """`ApiError("...")`, `ServiceError(status, "...")`, `error_body("...")`,
    `status_for("...")`, `exit_for("...")` and class `code = "..."` in broker/."""
    from broker import codes

    used: dict[str, str] = {}
    for path in sorted(BROKER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                args = node.args
                if name == "ServiceError":
                    args = args[1:]
                if name in ("ApiError", "ServiceError", "error_body", "status_for", "exit_for", "_send_error"):
                    if name == "_send_error":
                        args = args[3:]
                    if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
                        used[args[0].value] = f"{path.name}:{node.lineno}"
            elif (
                isinstance(node, ast.Assign)
                and [getattr(t, "id", None) for t in node.targets] == ["code"]
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                used[node.value.value] = f"{path.name}:{node.lineno}"
    assert {"not_found", "unknown_flow", "no_ui", "timeout", "refresh_failed", "already_running"} <= used.keys()
    unknown = {code: where for code, where in used.items() if code not in codes.CODES}
    assert not unknown


def test_no_exit_table_besides_the_one():
    """The CLI, the fast path and the client read `broker.codes`; nobody keeps a copy."""
    from broker import codes
    from broker.cli import main as cli
    from broker.client import fastpath

    assert not hasattr(cli, "_EXIT_FOR_CODE") and not hasattr(fastpath, "_EXIT")
    for path in sorted(BROKER.rglob("*.py")):
        if path.name == "codes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict) and node.keys:  # {"some_code": <an exit or HTTP status>, ...}
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                numbers = all(isinstance(v, ast.Constant) and isinstance(v.value, int) for v in node.values)
                assert not (numbers and keys & codes.CODES.keys()), f"{path.name}:{node.lineno}"
            if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["exit_code"]:
                raise AssertionError(f"{path.name}:{node.lineno} sets exit_code; give the class a code instead")


def test_exceptions_live_in_errors_py():
    """Outside broker/errors.py only private control-flow signals, and the wire's
    two (the stdlib-only `token` path may not load errors.py on success)."""
    allowed = {("wire.py", "Unavailable"), ("wire.py", "BadAnswer")}
    for path in sorted(BROKER.rglob("*.py")):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if bases & {"Exception", "BaseException", "ValueError", "RuntimeError"} or any(
                    b.endswith("Error") for b in bases
                ):
                    assert node.name.startswith("_") or (path.name, node.name) in allowed, (path.name, node.name)


def test_the_client_names_stay_importable():
    import broker.client.api_client

    assert broker.client.api_client.ServiceError is errors.ServiceError
    assert broker.client.api_client.ServiceUnavailable is errors.ServiceUnavailable
    assert issubclass(ServiceUnavailable, errors.BrokerError)


# -- the documents agree with the table ---------------------------------------------


def readme_exit_table() -> str:
    """What README.md shows; to regenerate it:
    `python -c 'from tests.test_errors import readme_exit_table as t; print(t())'`."""
    from broker import codes

    rows = ["| exit | whose problem | error codes |", "|---|---|---|"]
    for status in sorted(codes.EXITS, key=lambda s: (s == 1, s)):  # "anything else" last
        names = ", ".join(f"`{c}`" for c, (_, exit_status, _) in codes.CODES.items() if exit_status == status)
        rows.append(f"| {status} | {codes.EXITS[status]} | {names} |")
    return "\n".join(rows) + "\n"


def test_the_readme_exit_table_matches_the_codes_table():
    readme = (REPO / "README.md").read_text()
    assert readme_exit_table() in readme, "README.md's exit-status table is out of date:\n" + readme_exit_table()
    assert re.search(r"\|\s*5\s*\|.*`refresh_failed`", readme)  # it once exited 9, documented nowhere
    exits = {status for _, status, _ in __import__("broker.codes").codes.CODES.values()}
    assert exits == set(__import__("broker.codes").codes.EXITS)  # every exit status explained, none unused


def test_the_socket_api_error_table_matches_the_codes_table():
    """docs/socket-api.md: every code the service answers with, at its status."""
    from broker import codes

    doc = (REPO / "docs" / "socket-api.md").read_text()
    section = doc.split("### Errors", 1)[1].split("\n### ", 1)[0]
    documented: dict[str, int] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1][:3].isdigit():
            for code in re.findall(r"`(\w+)`", cells[0]):
                documented[code] = int(cells[1][:3])
    answered = {code: status for code, (status, _, _) in codes.CODES.items() if status}
    assert documented == answered
