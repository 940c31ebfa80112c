"""MCP Token Broker: one process that holds, refreshes and hands out OAuth
tokens for remote MCP servers. This package is the Qt-free core."""

__version__ = "0.1.0"
