"""Discovery rules, run against in-memory responses."""

import pytest

from broker.errors import (
    BadResponse,
    DiscoveryError,
    IssuerMismatch,
    PKCEUnsupported,
    ResourceMismatch,
    UnsafeEndpoint,
)
from broker.oauth.challenge import BearerChallenge
from broker.oauth.discovery import (
    ProbeResult,
    auth_server_metadata_urls,
    choose_scopes,
    parse_auth_server_metadata,
    parse_resource_metadata,
    probe_request,
    read_probe,
    resource_metadata_urls,
)

from .sansio import ISSUER, as_doc, as_metadata, resp

SERVER = "https://mcp.example.com/mcp"


def test_probe_is_an_mcp_initialize_post():
    req = probe_request(SERVER)
    assert req.method == "POST" and req.url == SERVER
    assert b'"initialize"' in req.body


def test_read_probe_extracts_challenge():
    r = resp(
        401,
        {"error": "invalid_token"},
        [("WWW-Authenticate", 'Bearer resource_metadata="https://mcp.example.com/prm", scope="a b"')],
    )
    probe = read_probe(r)
    assert probe.challenge.resource_metadata == "https://mcp.example.com/prm"
    assert probe.challenge.scope == ("a", "b")


def test_unprotected_server_is_reported():
    with pytest.raises(DiscoveryError, match="without asking for authorization"):
        read_probe(resp(200, {}))


def test_prm_urls_prefer_challenge_then_well_known_order():
    with_header = ProbeResult(401, BearerChallenge("https://x.example/prm", None, None))
    assert resource_metadata_urls(SERVER, with_header) == ["https://x.example/prm"]
    assert resource_metadata_urls(SERVER, ProbeResult(401, None)) == [
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
        "https://mcp.example.com/.well-known/oauth-protected-resource",
    ]
    assert resource_metadata_urls("https://mcp.example.com", ProbeResult(401, None)) == [
        "https://mcp.example.com/.well-known/oauth-protected-resource"
    ]


def test_as_urls_follow_the_spec_order():
    assert auth_server_metadata_urls("https://auth.example.com/tenant1") == [
        ("https://auth.example.com/.well-known/oauth-authorization-server/tenant1", "oauth"),
        ("https://auth.example.com/.well-known/openid-configuration/tenant1", "openid"),
        ("https://auth.example.com/tenant1/.well-known/openid-configuration", "openid"),
    ]
    assert auth_server_metadata_urls("https://auth.example.com") == [
        ("https://auth.example.com/.well-known/oauth-authorization-server", "oauth"),
        ("https://auth.example.com/.well-known/openid-configuration", "openid"),
    ]


def prm(**over):
    doc = {"resource": SERVER, "authorization_servers": [ISSUER], "scopes_supported": ["files:read"]}
    doc.update(over)
    return resp(200, doc)


def test_prm_parses():
    m = parse_resource_metadata(prm(), "u", SERVER)
    assert m.authorization_servers == (ISSUER,) and m.scopes_supported == ("files:read",)


@pytest.mark.parametrize(
    "resource", ["https://MCP.example.com/mcp", "https://mcp.example.com:443/mcp", "https://mcp.example.com/mcp/"]
)
def test_prm_resource_equal_as_a_uri_is_accepted(resource):
    assert parse_resource_metadata(prm(resource=resource), "u", SERVER).resource == resource


@pytest.mark.parametrize(
    "resource",
    [
        "https://evil.example.com/mcp",
        "https://mcp.example.com/other",
        "http://mcp.example.com/mcp",
        "https://mcp.example.com/mcpx",
        # A parent path is a wider audience: RFC 9728 section 3.3 asks for identity.
        "https://mcp.example.com",
        "https://mcp.example.com/",
        "https://mcp.example.com:8443/mcp",
        "https://mcp.example.com/mcp?tenant=other",
        "not a url",
    ],
)
def test_prm_for_another_resource_is_refused(resource):
    with pytest.raises(ResourceMismatch):
        parse_resource_metadata(prm(resource=resource), "u", SERVER)


def test_prm_404_means_try_next_and_other_errors_are_typed():
    assert parse_resource_metadata(resp(404, b"nope"), "u", SERVER) is None
    with pytest.raises(DiscoveryError):
        parse_resource_metadata(resp(500, b"boom"), "u", SERVER)
    with pytest.raises(BadResponse):
        parse_resource_metadata(resp(200, b"<html>"), "u", SERVER)
    with pytest.raises(DiscoveryError):
        parse_resource_metadata(prm(authorization_servers=[]), "u", SERVER)
    with pytest.raises(UnsafeEndpoint):
        parse_resource_metadata(prm(authorization_servers=["http://auth.example.com"]), "u", SERVER)


def test_as_metadata_valid():
    m = as_metadata()
    assert m.issuer == ISSUER and m.iss_parameter_supported and m.revocation_endpoint.endswith("/revoke")


def test_issuer_mismatch_is_refused():
    # The spec's own example: a document from the attacker naming the honest issuer.
    r = resp(200, as_doc(issuer="https://honest.example"))
    with pytest.raises(IssuerMismatch):
        parse_auth_server_metadata(
            r, "https://attacker.example/.well-known/oauth-authorization-server", "oauth", "https://attacker.example"
        )
    # No normalisation: a trailing slash is a different issuer.
    with pytest.raises(IssuerMismatch):
        parse_auth_server_metadata(resp(200, as_doc(issuer=ISSUER + "/")), "u", "oauth", ISSUER)


@pytest.mark.parametrize("methods", [None, [], ["plain"], "S256"])
def test_missing_s256_is_refused(methods):
    with pytest.raises((PKCEUnsupported, DiscoveryError)):
        as_metadata(code_challenge_methods_supported=methods)


@pytest.mark.parametrize(
    "field,value",
    [
        ("authorization_endpoint", "javascript:alert(document.cookie)"),
        ("authorization_endpoint", "file:///etc/passwd"),
        ("token_endpoint", "http://auth.example.com/token"),
        ("revocation_endpoint", "http://evil.example/revoke"),
        ("registration_endpoint", "data:,x"),
    ],
)
def test_hostile_endpoints_are_refused(field, value):
    with pytest.raises(UnsafeEndpoint):
        as_metadata(**{field: value})


def test_missing_required_endpoint():
    with pytest.raises(DiscoveryError):
        as_metadata(token_endpoint=None)


def test_scope_selection_order():
    server = as_metadata()
    challenge = ProbeResult(401, BearerChallenge(None, ("files:read", "files:write"), None))
    no_challenge = ProbeResult(401, None)
    from broker.oauth.discovery import ResourceMetadata

    prm_meta = ResourceMetadata(SERVER, (ISSUER,), ("files:read",), "u")
    assert choose_scopes(("mine",), challenge, prm_meta, server) == ("mine", "offline_access")
    assert choose_scopes((), challenge, prm_meta, server) == ("files:read", "files:write", "offline_access")
    assert choose_scopes((), no_challenge, prm_meta, server) == ("files:read", "offline_access")
    no_offline = as_metadata(scopes_supported=["files:read"])
    assert choose_scopes((), no_challenge, None, no_offline) == ()
