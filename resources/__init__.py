"""Icons and desktop files, installed as the `mcp_token_broker_resources` package."""
