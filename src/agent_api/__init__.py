"""agent-api: a self-hosted, multi-user server that runs Claude agents over HTTP and WebSocket."""

__version__ = "0.1.0"
