"""WWW-Authenticate parsing: examples from the specs, then properties."""

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.oauth.challenge import bearer_challenge, parse_www_authenticate


def test_mcp_spec_example():
    value = (
        'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource", scope="files:read"'
    )
    c = bearer_challenge([value])
    assert c.resource_metadata == "https://mcp.example.com/.well-known/oauth-protected-resource"
    assert c.scope == ("files:read",)
    assert c.error is None


def test_sdk_style_error_challenge():
    value = 'Bearer error="invalid_token", error_description="Authentication required", resource_metadata="http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp"'
    c = bearer_challenge([value])
    assert c.error == "invalid_token"
    assert c.resource_metadata.endswith("/oauth-protected-resource/mcp")
    assert c.scope is None


def test_multiple_challenges_and_case():
    value = 'Basic realm="x", BEARER Scope="a b", realm=api'
    challenges = parse_www_authenticate(value)
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert bearer_challenge([value]).scope == ("a", "b")


def test_bearer_in_second_header_value():
    assert bearer_challenge(['Basic realm="x"', 'Bearer scope="s"']).scope == ("s",)


def test_quoted_escapes_and_token68():
    challenges = parse_www_authenticate('Negotiate abc123==, Bearer realm="a \\"q\\" b"')
    assert challenges[-1].get("realm") == 'a "q" b'


def test_no_bearer():
    assert bearer_challenge(['Basic realm="x"']) is None
    assert bearer_challenge([]) is None


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
_value = st.text(alphabet=st.characters(codec="ascii", exclude_characters="\r\n\x00"), max_size=40)


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=300)
@given(st.dictionaries(_token, _value, max_size=6))
def test_round_trip(params):
    header = "Bearer " + ", ".join(f"{k}={_quote(v)}" for k, v in params.items())
    [c] = parse_www_authenticate(header)
    assert c.scheme == "bearer"
    assert dict(c.params) == {k.lower(): v for k, v in params.items()}


@settings(max_examples=500)
@given(st.text(max_size=300))
def test_total_on_any_input(text):
    challenges = parse_www_authenticate(text)
    assert isinstance(challenges, list)
    bearer_challenge([text])
