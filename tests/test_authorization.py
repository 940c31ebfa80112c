"""The authorization request and the callback checks (state, iss, error)."""

import base64
import hashlib
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import (
    AccessDenied,
    BadResponse,
    IssuerMismatchInCallback,
    OAuthError,
    StateMismatch,
)
from broker.oauth.authorization import callback_params_from_url, pkce_pair, start_authorization, validate_callback

from .sansio import ISSUER, as_metadata

REDIRECT = "http://127.0.0.1:5555/callback"


def pending(**kw):
    args = dict(
        client_id="cid",
        redirect_uri=REDIRECT,
        scope=("files:read", "offline_access"),
        resource="https://mcp.example.com/mcp",
    )
    args.update(kw)
    return start_authorization(as_metadata(), **args)


def test_pkce_is_s256_of_the_verifier():
    verifier, challenge = pkce_pair()
    v = verifier.reveal()
    assert 43 <= len(v) <= 128
    expected = base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode()
    assert challenge == expected


def test_authorization_url_carries_everything():
    p = pending()
    q = {k: v[0] for k, v in parse_qs(urlsplit(p.url).query).items()}
    assert p.url.startswith(f"{ISSUER}/authorize?")
    assert q["response_type"] == "code" and q["client_id"] == "cid" and q["redirect_uri"] == REDIRECT
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert q["resource"] == "https://mcp.example.com/mcp"
    assert q["scope"] == "files:read offline_access" and q["prompt"] == "consent"
    assert len(base64.urlsafe_b64decode(q["state"] + "==")) * 8 >= 128
    assert q["state"] == p.state.reveal()
    assert "code_verifier" not in q and p.code_verifier.reveal() not in p.url
    # The per-flow record holds the expected issuer, and repr shows no secrets.
    assert p.issuer == ISSUER
    assert p.code_verifier.reveal() not in repr(p)


def test_no_resource_no_prompt():
    q = parse_qs(urlsplit(pending(resource=None, scope=("a",)).url).query)
    assert "resource" not in q and "prompt" not in q


def test_states_are_unique():
    assert len({pending().state.reveal() for _ in range(50)}) == 50


def test_valid_callback_returns_code():
    p = pending()
    code = validate_callback(p, {"code": "the-code", "state": p.state.reveal(), "iss": ISSUER})
    assert code.reveal() == "the-code"


def test_wrong_or_missing_state():
    p = pending()
    with pytest.raises(StateMismatch):
        validate_callback(p, {"code": "c", "state": "forged", "iss": ISSUER})
    with pytest.raises(StateMismatch):
        validate_callback(p, {"code": "c", "iss": ISSUER})


def test_iss_rules_follow_the_mcp_table():
    p = pending()
    s = p.state.reveal()
    with pytest.raises(IssuerMismatchInCallback):  # supported, absent
        validate_callback(p, {"code": "c", "state": s})
    with pytest.raises(IssuerMismatchInCallback):  # present, different
        validate_callback(p, {"code": "c", "state": s, "iss": "https://evil.example"})
    with pytest.raises(IssuerMismatchInCallback):  # no normalisation
        validate_callback(p, {"code": "c", "state": s, "iss": ISSUER + "/"})
    unsupported = replace(p, iss_parameter_supported=False)
    assert validate_callback(unsupported, {"code": "c", "state": s}).reveal() == "c"  # not supported, absent
    with pytest.raises(IssuerMismatchInCallback):  # not supported, present and wrong
        validate_callback(unsupported, {"code": "c", "state": s, "iss": "https://evil.example"})


def test_error_with_wrong_iss_is_not_acted_on():
    p = pending()
    params = {
        "error": "access_denied",
        "error_description": "CLICK http://evil",
        "state": p.state.reveal(),
        "iss": "https://evil.example",
    }
    with pytest.raises(IssuerMismatchInCallback) as info:
        validate_callback(p, params)
    assert "evil" not in str(info.value).replace("evil.example", "") and "CLICK" not in str(info.value)


def test_error_maps_to_typed_exception():
    p = pending()
    with pytest.raises(AccessDenied) as info:
        validate_callback(
            p,
            {
                "error": "access_denied",
                "error_description": "User said no\x1b[31m",
                "state": p.state.reveal(),
                "iss": ISSUER,
            },
        )
    assert "\x1b" not in str(info.value)
    with pytest.raises(OAuthError) as info:
        validate_callback(p, {"error": "invalid_scope", "state": p.state.reveal(), "iss": ISSUER})
    assert info.value.error == "invalid_scope"


def test_callback_without_code():
    p = pending()
    with pytest.raises(BadResponse):
        validate_callback(p, {"state": p.state.reveal(), "iss": ISSUER})


def test_callback_url_parsing_refuses_duplicates():
    assert callback_params_from_url("http://127.0.0.1/cb?code=a&state=b") == {"code": "a", "state": "b"}
    with pytest.raises(BadResponse):
        callback_params_from_url("http://127.0.0.1/cb?code=a&code=b")


@given(
    st.dictionaries(st.sampled_from(["code", "state", "iss", "error", "error_description", "x"]), st.text(max_size=50))
)
def test_validate_never_accepts_without_the_state(params):
    p = pending()
    try:
        validate_callback(p, params)
    except (StateMismatch, IssuerMismatchInCallback, OAuthError, BadResponse):
        return
    raise AssertionError("accepted a callback without the flow's state")


def test_callback_url_parsing_caps_parameters_with_a_typed_error():
    at_cap = "&".join(f"p{i}=x" for i in range(32))
    assert len(callback_params_from_url(f"http://127.0.0.1/cb?{at_cap}")) == 32
    with pytest.raises(BadResponse, match="too many parameters"):
        callback_params_from_url(f"http://127.0.0.1/cb?{at_cap}&p32=x")
    with pytest.raises(BadResponse):
        callback_params_from_url("http://[::1/cb?code=a&state=b")  # urlsplit's ValueError
