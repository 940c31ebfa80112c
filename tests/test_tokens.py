"""Token endpoint requests and responses, in memory."""

import base64
from urllib.parse import parse_qs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import BadResponse, InvalidClient, InvalidGrant, OAuthError
from broker.oauth.registration import ClientRegistration
from broker.oauth.tokens import (
    TokenSet,
    code_exchange_request,
    parse_token_response,
    read_revocation_response,
    refresh_request,
    revocation_request,
    revocation_wants_body_credentials,
)
from broker.secret import Secret

from .sansio import ISSUER, as_metadata, resp

PUBLIC = ClientRegistration(ISSUER, "cid", "dynamic", "http://127.0.0.1:1/callback")
CONFIDENTIAL = ClientRegistration(
    ISSUER, "c id", "preregistered", "http://127.0.0.1:1/callback", "client_secret_basic", Secret("s:e/cret")
)


def form(req):
    return {k: v[0] for k, v in parse_qs(req.body.decode()).items()}


def test_code_exchange_request_public_client():
    req = code_exchange_request(
        as_metadata(),
        PUBLIC,
        code=Secret("c0de"),
        code_verifier=Secret("v"),
        redirect_uri=PUBLIC.redirect_uri,
        resource="https://mcp.example.com/mcp",
    )
    f = form(req)
    assert req.url == f"{ISSUER}/token" and req.method == "POST"
    assert f == {
        "grant_type": "authorization_code",
        "code": "c0de",
        "redirect_uri": PUBLIC.redirect_uri,
        "code_verifier": "v",
        "resource": "https://mcp.example.com/mcp",
        "client_id": "cid",
    }
    assert "c0de" not in repr(req)


def test_refresh_with_basic_auth_encodes_per_rfc6749():
    req = refresh_request(as_metadata(), CONFIDENTIAL, refresh_token=Secret("rt"), resource=None)
    headers = dict(req.headers)
    raw = base64.b64decode(headers["Authorization"].split()[1]).decode()
    assert raw == "c%20id:s%3Ae%2Fcret"
    assert form(req) == {"grant_type": "refresh_token", "refresh_token": "rt", "client_id": "c id"}


def test_revocation_request():
    req = revocation_request(as_metadata(), PUBLIC, Secret("rt"), "refresh_token")
    assert req.url.endswith("/revoke") and form(req) == {
        "token": "rt",
        "token_type_hint": "refresh_token",
        "client_id": "cid",
    }
    read_revocation_response(resp(200, b""))
    with pytest.raises(OAuthError):
        read_revocation_response(resp(400, {"error": "unsupported_token_type"}))


POST = ClientRegistration(
    ISSUER, "cid", "preregistered", "http://127.0.0.1:1/callback", "client_secret_post", Secret("s:e/cret")
)


def blank_form(req):
    return {k: v[0] for k, v in parse_qs(req.body.decode(), keep_blank_values=True).items()}


BASIC = "Basic " + base64.b64encode(b"c%20id:s%3Ae%2Fcret").decode()


@pytest.mark.parametrize(
    ("registration", "shape", "fields", "authorization"),
    [
        # 0: the registered method, and client_id in the body always (RFC 6749 section 3.2.1).
        (PUBLIC, 0, {"client_id": "cid"}, None),
        (POST, 0, {"client_id": "cid", "client_secret": "s:e/cret"}, None),
        (CONFIDENTIAL, 0, {"client_id": "c id"}, BASIC),
        # 1: plus a client_secret field (empty unless the method puts the secret there).
        (PUBLIC, 1, {"client_id": "cid", "client_secret": ""}, None),
        (CONFIDENTIAL, 1, {"client_id": "c id", "client_secret": ""}, BASIC),
        # 2, Basic clients only: client_secret_post, never the header as well.
        (CONFIDENTIAL, 2, {"client_id": "c id", "client_secret": "s:e/cret"}, None),
    ],
    ids=["none", "post", "basic", "none-fields", "basic-fields", "basic-post"],
)
def test_revocation_request_shape_per_auth_method(registration, shape, fields, authorization):
    req = revocation_request(as_metadata(), registration, Secret("rt"), "refresh_token", shape=shape)
    assert req.method == "POST" and req.url == f"{ISSUER}/revoke"
    assert dict(req.headers)["Content-Type"] == "application/x-www-form-urlencoded"
    assert blank_form(req) == {"token": "rt", "token_type_hint": "refresh_token", **fields}
    assert dict(req.headers).get("Authorization") == authorization
    assert "s:e/cret" not in repr(req)


@pytest.mark.parametrize(
    ("status", "body", "retry"),
    [
        (401, {"error": "invalid_client"}, True),
        (401, b"", True),
        (400, {"error": "invalid_request", "error_description": "client_secret: Field required"}, True),
        (400, b"not json", True),
        (400, {"error": "unsupported_token_type"}, False),
        (200, b"", False),
        (503, b"", False),
    ],
)
def test_which_revocation_answers_are_worth_the_body_credentials_retry(status, body, retry):
    assert revocation_wants_body_credentials(resp(status, body)) is retry


def ok(**over):
    body = {
        "access_token": "AT",
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": "RT",
        "scope": "a offline_access",
    }
    body.update(over)
    return resp(200, {k: v for k, v in body.items() if v is not None})


def test_parse_success():
    t = parse_token_response(ok(), now=1000, requested_scope=("a", "b"))
    assert t.access_token.reveal() == "AT" and t.refresh_token.reveal() == "RT"
    assert t.expires_at == 4600 and t.scope == ("a", "offline_access")
    assert "AT" not in repr(t) and "RT" not in repr(t)


def test_lowercase_bearer_and_missing_scope():
    t = parse_token_response(ok(token_type="bearer", scope=None), now=0, requested_scope=("x",))
    assert t.token_type == "Bearer" and t.scope == ("x",)


def test_rotation_keeps_newest_and_carries_old_when_absent():
    old = parse_token_response(ok(), now=0, requested_scope=())
    rotated = parse_token_response(ok(refresh_token="RT2"), now=10, requested_scope=(), previous=old)
    assert rotated.refresh_token.reveal() == "RT2"
    kept = parse_token_response(ok(refresh_token=None, scope=None), now=10, requested_scope=(), previous=old)
    assert kept.refresh_token.reveal() == "RT" and kept.scope == old.scope


@pytest.mark.parametrize(
    "over",
    [
        {"token_type": "mac"},
        {"token_type": None},
        {"access_token": None},
        {"access_token": ""},
        {"access_token": 5},
        {"expires_in": -1},
        {"expires_in": "soon"},
        {"expires_in": 10**12},
        {"scope": ["a"]},
        {"refresh_token": 7},
    ],
)
def test_bad_success_bodies(over):
    with pytest.raises(BadResponse):
        parse_token_response(ok(**over), now=0, requested_scope=())


def test_error_bodies_are_typed():
    with pytest.raises(InvalidGrant):
        parse_token_response(
            resp(400, {"error": "invalid_grant", "error_description": "rotated"}), now=0, requested_scope=()
        )
    with pytest.raises(InvalidClient):
        parse_token_response(resp(401, {"error": "invalid_client"}), now=0, requested_scope=())
    with pytest.raises(BadResponse):
        parse_token_response(resp(502, b"<html>bad gateway</html>"), now=0, requested_scope=())
    with pytest.raises(BadResponse):
        parse_token_response(resp(200, b"[1,2]"), now=0, requested_scope=())


def test_tokenset_json_round_trip():
    t = parse_token_response(ok(), now=5, requested_scope=())
    assert TokenSet.from_json(t.to_json()) == t


@given(st.binary(max_size=300), st.integers(100, 599))
def test_parse_is_total(body, status):
    try:
        parse_token_response(resp(status, body), now=0, requested_scope=())
    except (BadResponse, OAuthError):
        pass
