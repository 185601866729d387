"""A real MCP server for the tests, written with the `mcp` SDK: two tools, over stdio or streamable HTTP.

python echo_server.py                    # stdio
python echo_server.py --http PORT        # streamable HTTP on 127.0.0.1:PORT, path /mcp
"""

from __future__ import annotations

import argparse

from mcp.server.fastmcp import FastMCP

server = FastMCP("echo-test-server")


@server.tool()
def echo(text: str) -> str:
    """Answer with the text it was given."""
    return f"echo: {text}"


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=None)
    args = parser.parse_args()
    if args.http is None:
        server.run("stdio")
    else:
        server.settings.host, server.settings.port = "127.0.0.1", args.http
        server.run("streamable-http")
