import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import InvalidURL, UnsafeEndpoint
from broker.oauth.urls import (
    canonical_server_url,
    check_endpoint_url,
    is_loopback_host,
    path_inserted,
    suggest_name,
    typed_server_url,
)


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


# -- issue 10, item 6: what a person types in the Add dialog ------------------------------


@pytest.mark.parametrize(
    ("typed", "url"),
    [
        ("mcp.example.com/mcp", "https://mcp.example.com/mcp"),
        ("  mcp.example.com  ", "https://mcp.example.com"),
        ("mcp.example.com:8443/mcp", "https://mcp.example.com:8443/mcp"),
        ("127.0.0.1:8123/mcp", "http://127.0.0.1:8123/mcp"),
        ("localhost:3000/mcp", "http://localhost:3000/mcp"),
        ("LOCALHOST/mcp", "http://LOCALHOST/mcp"),
        ("[::1]:8123/mcp", "http://[::1]:8123/mcp"),
        ("127.0.0.1.example.com/mcp", "https://127.0.0.1.example.com/mcp"),
        ("10.0.0.5/mcp", "https://10.0.0.5/mcp"),
        ("https://mcp.example.com/mcp", "https://mcp.example.com/mcp"),
        ("http://127.0.0.1:8123/mcp", "http://127.0.0.1:8123/mcp"),
        ("ftp://example.com/mcp", "ftp://example.com/mcp"),  # a scheme the user typed stays, to be refused
        ("", ""),
    ],
)
def test_typed_url_gets_a_scheme(typed, url):
    assert typed_server_url(typed) == url


def test_a_typed_url_then_passes_the_canonical_check():
    assert canonical_server_url(typed_server_url("mcp.example.com/mcp/")) == "https://mcp.example.com/mcp/"
    assert canonical_server_url(typed_server_url("127.0.0.1:8123/mcp")) == "http://127.0.0.1:8123/mcp"
    with pytest.raises(InvalidURL, match="only https"):
        canonical_server_url(typed_server_url("ftp://example.com/mcp"))


@pytest.mark.parametrize(
    ("url", "name"),
    [
        # Host names: as before, the distinctive label.
        ("https://mcp.example.com/mcp", "example"),
        ("https://api.githubcopilot.com/mcp/", "githubcopilot"),
        ("https://www.notion.so/mcp", "notion"),
        ("https://mcp.linear.app/sse", "linear"),
        # IP addresses and localhost: the path, else the port, never "127".
        ("http://127.0.0.1:8123/mcp", "mcp"),
        ("http://127.0.0.1:8123/tools/github/v1", "github"),
        ("http://127.0.0.1:8123/", "localhost-8123"),
        ("http://127.0.0.1:8123/sse", "localhost-8123"),
        ("http://localhost:3000/api/v2", "localhost-3000"),
        ("http://[::1]:9000/notes", "notes"),
        ("http://127.0.0.1/", "localhost"),
        ("https://10.0.0.5:8443/", "10-0-0-5-8443"),
        ("https://10.0.0.5/", "10-0-0-5"),
        ("", ""),
        ("not a url", ""),
    ],
)
def test_suggested_names(url, name):
    assert suggest_name(url) == name


@given(st.text(max_size=100))
def test_suggested_names_are_valid_or_empty(text):
    from broker.model import check_name

    name = suggest_name(text)
    if name:
        check_name(name)
