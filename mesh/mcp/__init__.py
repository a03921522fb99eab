"""
mesh as an MCP server: the ``mesh`` commands as tools for an agent host.

``mesh mcp`` serves them on standard input and output, for Codex, Claude
Code or any MCP host; `server` builds the server for a client in the same
process. Needs the MCP SDK: ``pip install 'mesh[mcp]'``.

.. versionadded:: 0.1.0
"""

from ._server import serve, serve_async, server

__all__ = ["serve", "serve_async", "server"]
