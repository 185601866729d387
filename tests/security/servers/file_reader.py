"""A real MCP stdio server for the escape tests, written with the `mcp` SDK: it reads and lists whatever path its
tool is given, with no check of its own. Whether that path is reachable is the server's business.

python file_reader.py                    # stdio
"""

from __future__ import annotations

import os

from mcp.server.fastmcp import FastMCP

server = FastMCP("file-reader-test-server")


@server.tool()
def read_file(path: str) -> str:
    """Answer with the text of the file at `path`, or the error opening it."""
    try:
        with open(path, "rb") as f:
            return f.read(65536).decode("utf-8", "replace")
    except OSError as exc:
        return f"error: {exc.__class__.__name__}: {exc.strerror}"


@server.tool()
def list_dir(path: str) -> str:
    """Answer with the names in the directory at `path`, or the error listing it."""
    try:
        return "\n".join(sorted(os.listdir(path))) or "(empty)"
    except OSError as exc:
        return f"error: {exc.__class__.__name__}: {exc.strerror}"


if __name__ == "__main__":
    server.run("stdio")
