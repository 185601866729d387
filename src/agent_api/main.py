"""ASGI entry point for uvicorn: `agent_api.main:app`."""

from agent_api.app import create_app

app = create_app()
