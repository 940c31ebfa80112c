import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import InvalidURL, UnsafeEndpoint
from broker.oauth.urls import canonical_server_url, check_endpoint_url, is_loopback_host, path_inserted


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "data:text/html,hi",
        "http://example.com/token",
        "http://10.0.0.1/token",
        "https://user:pw@example.com/token",
        "https://example.com/token#frag",
        "ftp://example.com/x",
        "https:///nohost",
        "https://exa mple.com/",
        "https://example.com:99999/",
        "",
        None,
        42,
    ],
)
def test_unsafe_endpoints_refused(url):
    with pytest.raises(UnsafeEndpoint):
        check_endpoint_url(url, "x")


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/token",
        "http://127.0.0.1:8080/t",
        "http://localhost/t",
        "http://[::1]:3/t",
        "http://127.9.9.9/",
    ],
)
def test_safe_endpoints(url):
    assert check_endpoint_url(url, "x") == url


def test_loopback_hosts():
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("LOCALHOST")
    assert not is_loopback_host("127.0.0.1.example.com") and not is_loopback_host("10.0.0.1")


def test_canonical_server_url():
    assert canonical_server_url("HTTPS://MCP.Example.COM/") == "https://mcp.example.com"
    assert canonical_server_url("https://mcp.example.com/Server/MCP") == "https://mcp.example.com/Server/MCP"
    assert canonical_server_url(" https://mcp.example.com:8443/mcp ") == "https://mcp.example.com:8443/mcp"
    for bad in ["mcp.example.com", "https://mcp.example.com/#frag", "http://mcp.example.com/mcp", "file:///x"]:
        with pytest.raises(InvalidURL):
            canonical_server_url(bad)


def test_path_inserted():
    assert (
        path_inserted("https://h/tenant1", "oauth-authorization-server")
        == "https://h/.well-known/oauth-authorization-server/tenant1"
    )
    assert path_inserted("https://h", "openid-configuration") == "https://h/.well-known/openid-configuration"
    assert path_inserted("https://h/", "openid-configuration") == "https://h/.well-known/openid-configuration"


@given(st.text(max_size=200))
def test_check_endpoint_total(text):
    try:
        out = check_endpoint_url(text, "x")
    except UnsafeEndpoint:
        return
    assert out.lower().startswith(("https://", "http://"))
