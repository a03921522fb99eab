"""`server` and `serve`: mesh as an MCP server, the SDK loaded only when asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..contracts._errors import MeshError
from ._paths import Root

if TYPE_CHECKING:
    from mcp.server import Server

    from ..contracts._files import StrPath

__all__ = ["serve", "server"]


def _require_sdk() -> None:
    try:
        import mcp  # noqa: F401, PLC0415 - only to say, in mesh's words, that it is missing
    except ImportError:
        raise MeshError(
            "mesh mcp needs the MCP Python SDK (the `mcp` package), which is not installed",
            hint="pip install 'mesh[mcp]'",
        ) from None


def server(*, root: StrPath | None = None) -> Server[Any]:
    """
    The mesh MCP server (the SDK's low-level `mcp.server.Server`), not yet serving.

    Its tools are the commands of the ``mesh`` command line: ``budget``,
    ``replay``, ``plan_sync``, ``slice``, ``wave``, ``run_csv``, ``ledger``,
    ``run``, ``status``, ``resume`` and ``report``. Every path a tool is given
    must resolve inside ``root`` (default: the working directory), relative
    paths against it. Serve it with `serve`, or connect a client in-process
    (``mcp.Client(mesh.mcp.server())``).

    Raises:
        MeshError: The MCP SDK is not installed (``pip install 'mesh[mcp]'``).

    .. versionadded:: 0.1.0
    """
    _require_sdk()
    from ._app import build  # noqa: PLC0415 - loads the SDK and pydantic, only now

    return build(Root(root if root is not None else "."))


async def serve_async(*, root: StrPath | None = None) -> None:
    """
    Serve `server` on standard input and output until the client closes them.

    .. versionadded:: 0.1.0
    """
    app = server(root=root)
    from mcp.server.stdio import stdio_server  # noqa: PLC0415 - the SDK is there: server() checked

    async with stdio_server() as (read, write):
        await app.run(read, write, app.create_initialization_options())


def serve(*, root: StrPath | None = None) -> None:
    """
    ``mesh mcp``: serve mesh's tools over MCP on standard input and output.

    Returns when the client closes the connection. Standard output carries
    the protocol, so nothing else may print there while it serves.

    .. versionadded:: 0.1.0
    """
    import anyio  # noqa: PLC0415 - the command line loads what a command needs when it runs

    anyio.run(_serve, root)


async def _serve(root: StrPath | None) -> None:
    await serve_async(root=root)
