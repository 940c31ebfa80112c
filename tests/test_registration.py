import json

import pytest

from broker.errors import InvalidURL, RegistrationError
from broker.oauth.registration import (
    ClientRegistration,
    choose_method,
    metadata_document_client,
    parse_registration_response,
    preregistered,
    registration_request,
)
from broker.secret import Secret

from .sansio import ISSUER, as_metadata, resp

REDIRECT = "http://127.0.0.1:4444/callback"


def test_priority_order():
    server = as_metadata(client_id_metadata_document_supported=True)
    assert choose_method(server, client_id="x", client_metadata_url="https://a/b.json") == "preregistered"
    assert choose_method(server, client_id=None, client_metadata_url="https://a/b.json") == "metadata_document"
    assert choose_method(as_metadata(), client_id=None, client_metadata_url="https://a/b.json") == "dynamic"
    assert choose_method(as_metadata(), client_id=None, client_metadata_url=None) == "dynamic"
    with pytest.raises(RegistrationError, match="--client-id"):
        choose_method(as_metadata(registration_endpoint=None), client_id=None, client_metadata_url=None)


def test_registration_request_is_native_public():
    req = registration_request(as_metadata(), redirect_uri=REDIRECT, scope=("files:read", "offline_access"))
    body = json.loads(req.body)
    assert body["application_type"] == "native" and body["token_endpoint_auth_method"] == "none"
    assert body["grant_types"] == ["authorization_code", "refresh_token"]
    assert body["redirect_uris"] == [REDIRECT] and body["scope"] == "files:read offline_access"
    unknown_scope = json.loads(registration_request(as_metadata(), redirect_uri=REDIRECT, scope=("zzz",)).body)
    assert "scope" not in unknown_scope


def test_parse_registration():
    r = parse_registration_response(
        resp(
            201,
            {
                "client_id": "abc",
                "redirect_uris": [REDIRECT],
                "registration_access_token": "RAT-zq9",
                "registration_client_uri": f"{ISSUER}/reg/abc",
            },
        ),
        server=as_metadata(),
        redirect_uri=REDIRECT,
    )
    assert r.client_id == "abc" and r.issuer == ISSUER and r.method == "dynamic"
    assert r.registration_access_token.reveal() == "RAT-zq9" and "RAT-zq9" not in repr(r)
    assert ClientRegistration.from_json(r.to_json()) == r


@pytest.mark.parametrize(
    "status,body",
    [
        (400, {"error": "invalid_redirect_uri", "error_description": "nope"}),
        (500, b"oops"),
        (201, {"redirect_uris": [REDIRECT]}),
        (201, {"client_id": "a", "redirect_uris": ["http://127.0.0.1:9/other"]}),
        (201, {"client_id": "a", "token_endpoint_auth_method": "client_secret_basic"}),
        (201, {"client_id": "a", "token_endpoint_auth_method": "private_key_jwt"}),
    ],
)
def test_bad_registration_responses(status, body):
    with pytest.raises(RegistrationError):
        parse_registration_response(resp(status, body), server=as_metadata(), redirect_uri=REDIRECT)


def test_preregistered_auth_method_follows_metadata():
    assert (
        preregistered(
            as_metadata(), client_id="x", client_secret=None, redirect_uri=REDIRECT
        ).token_endpoint_auth_method
        == "none"
    )
    post_only = as_metadata(token_endpoint_auth_methods_supported=["client_secret_post"])
    assert (
        preregistered(
            post_only, client_id="x", client_secret=Secret("s"), redirect_uri=REDIRECT
        ).token_endpoint_auth_method
        == "client_secret_post"
    )
    assert (
        preregistered(
            as_metadata(), client_id="x", client_secret=Secret("s"), redirect_uri=REDIRECT
        ).token_endpoint_auth_method
        == "client_secret_basic"
    )


def test_metadata_document_url_rules():
    assert (
        metadata_document_client(as_metadata(), url="https://app.example/c.json", redirect_uri=REDIRECT).client_id
        == "https://app.example/c.json"
    )
    for bad in ["http://app.example/c.json", "https://app.example/"]:
        with pytest.raises(InvalidURL):
            metadata_document_client(as_metadata(), url=bad, redirect_uri=REDIRECT)
