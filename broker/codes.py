"""The one table of error codes: each code's HTTP status, exit status and meaning.

A code is the `error` of the socket API's answers (`{"error": CODE, "message": TEXT}`)
and the `code` of every `broker.errors.BrokerError`. The API answers with the
status found here, the CLI and the `token` fast path exit with the exit
status found here, and `BrokerError.exit_code` reads it from here: change an
exit status in one place, and every path agrees.

Standard library only, and no imports at all: the `token` fast path loads it.
README.md's exit-status table and docs/socket-api.md's error table are
checked against it (tests/test_errors.py).
"""

from __future__ import annotations

__all__ = ["CODES", "EXITS", "FALLBACK", "exit_for", "status_for"]

#: What an exit status tells the person at the terminal: whose problem it is.
EXITS: dict[int, str] = {
    1: "anything else: an internal error, an unexpected answer",
    2: "a mistake in the command",
    3: "local storage (keyring, vault, socket directory)",
    4: "the login flow (timeout, cancelled, port taken)",
    5: "the remote server",
    6: "no service running (or already running, for `serve`)",
    7: "access denied to this client",
    8: "the connection needs `connect` again",
    9: "nobody answered the approval request in time",
    10: "the broker hosts as many proxy sessions as it may",
}

#: code: (HTTP status, exit status, meaning). HTTP status 0: the service never
#: answers with it (the client decides it, or it only ends a login flow).
CODES: dict[str, tuple[int, int, str]] = {
    "bad_request": (400, 2, "malformed request, or a value the broker cannot take"),
    "unknown_connection": (404, 2, "no such connection"),
    "access_denied": (403, 7, "this client may not have this connection's token"),
    "answer_refused": (403, 7, "this approval answer is not accepted"),
    "identity_changed": (403, 7, "the process that opened this socket connection has exec'd or exited since"),
    # 504, not 408: the request arrived whole; the party it waited on (the
    # person asked) did not answer. Clients may retry a 408 on their own,
    # which would ask the person again.
    "approval_timeout": (504, 9, "nobody answered the approval request in time"),
    "authorization_required": (409, 8, "not connected, or the grant was revoked or expired: run `connect`"),
    "storage_error": (500, 3, "local state cannot be read or written; see the service's log"),
    "flow_error": (500, 4, "the login did not complete"),
    "cancelled": (0, 4, "the login was cancelled"),
    "remote_error": (502, 5, "the MCP or authorization server misbehaved or said no"),
    "refresh_failed": (503, 5, "the refresh failed and the current token is too close to expiry"),
    "too_many_sessions": (503, 10, "the broker already runs as many proxy sessions as it may"),
    "no_service": (0, 6, "no broker service answers on the socket"),
    "already_running": (0, 6, "a broker service already serves the socket"),
    "not_found": (404, 1, "no such endpoint"),
    "unknown_flow": (404, 1, "no such login flow"),
    "unknown_grant": (404, 1, "no such grant"),
    "unknown_approval": (404, 1, "no such pending approval"),
    "method_not_allowed": (405, 1, "wrong method for the path"),
    "timeout": (408, 1, "the request was not completed in time"),
    "no_ui": (409, 1, "this broker runs headless: it has no window"),
    "internal_error": (500, 1, "the broker hit an internal error; see its log"),
    "bad_response": (0, 1, "the broker's answer was not understood"),
    "error": (500, 1, "any other failure"),
}

#: The code of anything the table does not know.
FALLBACK = "error"


def exit_for(code: str) -> int:
    """The exit status for `code` (1 for a code this table does not know)."""
    entry = CODES.get(code)
    return entry[1] if entry is not None else 1


def status_for(code: str) -> int:
    """The HTTP status the service answers `code` with (500 if it never should)."""
    entry = CODES.get(code)
    return entry[0] if entry is not None and entry[0] else 500
