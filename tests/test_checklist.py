from broker.oauth.checklist import security_check

from .sansio import as_metadata


def verdicts(items):
    return {i.key: i.verdict for i in items}


def test_good_server():
    v = verdicts(security_check(as_metadata(), resource_sent=True, rotation_seen=True))
    assert v == {
        "pkce": "pass",
        "https": "pass",
        "iss": "pass",
        "rotation": "pass",
        "revocation": "pass",
        "resource": "pass",
    }


def test_weak_server():
    server = as_metadata(
        authorization_response_iss_parameter_supported=None,
        revocation_endpoint=None,
        issuer="https://auth.example.com",
    )
    v = verdicts(security_check(server, resource_sent=False, rotation_seen=False))
    assert v["iss"] == "warn" and v["revocation"] == "warn" and v["resource"] == "warn" and v["rotation"] == "warn"
    assert verdicts(security_check(server))["rotation"] == "unknown"


def test_loopback_http_is_a_warning():
    from broker.oauth.discovery import parse_auth_server_metadata

    from .sansio import as_doc, resp

    issuer = "http://127.0.0.1:9000"
    doc = as_doc(
        issuer=issuer,
        authorization_endpoint=f"{issuer}/auth",
        token_endpoint=f"{issuer}/token",
        registration_endpoint=None,
        revocation_endpoint=None,
    )
    server = parse_auth_server_metadata(resp(200, doc), "u", "openid", issuer)
    assert verdicts(security_check(server))["https"] == "warn"
