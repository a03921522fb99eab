"""
The MCP server itself, on the SDK's low-level `Server`: tools listed and called.

The low-level server (rather than the SDK's decorator-based `MCPServer`) lets
mesh own the two things a model reads: each tool's input schema (strict:
``additionalProperties: false``, so a misspelt option is an error rather than
silently dropped) and each error's text (mesh's one line, ``error: Kind:
message``, never a traceback; a bug's traceback goes to the server's log on
stderr, not to the model).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import pydantic
from mcp import types
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError

from .._version import __version__
from ..cli._parser import did_you_mean
from ..contracts._convert import dumps_json
from ..contracts._errors import MeshError, ValidationError
from ..contracts._text import one_line
from ._paths import Root
from ._tools import TOOLS, Call, Result, ToolSpec

__all__ = ["build"]

_LOG: Final = logging.getLogger("mesh.mcp")
_INSTRUCTIONS: Final = (
    "mesh runs plans on git repositories: each step becomes a unit; candidate patches from "
    "coders (a command or an agent CLI) are applied in worktrees, proved, adjudicated and "
    "delivered. Paths are relative to the server's root. `run` and `resume` return when the "
    "run ends and report units finished as progress; `status`, `ledger` and `report` read a "
    "stored run; the other tools are the planning helpers of the mesh command line."
)


def _problem(error: Mapping[str, Any], names: list[str]) -> str:
    """One pydantic complaint in mesh's words: the argument, then what is wrong with it."""
    name = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{name}: unknown argument{did_you_mean(name, names)}"
    if error["type"] == "missing":
        return f"{name}: required"
    return f"{name}: {error['msg']}"


def _error(kind: str, message: str, hint: str | None = None) -> types.CallToolResult:
    """A failed call as the command line says it, on one line: ``error: Kind: message``."""
    text = f"error: {kind}: {one_line(message)}"
    if hint:
        text += f" (hint: {one_line(hint)})"
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def _result(result: Result) -> types.CallToolResult:
    if isinstance(result, str):
        return types.CallToolResult(content=[types.TextContent(text=result)])
    return types.CallToolResult(
        content=[types.TextContent(text=dumps_json(result))], structured_content=result
    )


def _tool(spec: ToolSpec) -> types.Tool:
    return types.Tool(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        input_schema=spec.arguments.model_json_schema(),
        annotations=types.ToolAnnotations(
            title=spec.title,
            read_only_hint=spec.read_only,
            destructive_hint=spec.destructive,
            idempotent_hint=spec.idempotent,
            # Local files and local programs only; nothing reaches beyond this machine.
            open_world_hint=False,
        ),
    )


async def _call(spec: ToolSpec, arguments: Mapping[str, Any], call: Call) -> types.CallToolResult:
    try:
        try:
            parsed = spec.arguments.model_validate(dict(arguments))
        except pydantic.ValidationError as invalid:
            names = list(spec.arguments.model_fields)
            problems = [_problem(error, names) for error in invalid.errors()]
            raise ValidationError(f"arguments of {spec.name}", problems) from None
        return _result(await parsed.execute(call))
    except MeshError as error:
        return _error(error.kind, error.message, error.hint)
    except Exception as error:  # noqa: BLE001 - any bug: one line, never a traceback
        # A bug in mesh: one line for the model; the traceback goes to the server's log.
        _LOG.exception("tool %s failed", spec.name)
        return _error("InternalError", f"{type(error).__name__}: {error}")


def build(root: Root) -> Server[Any]:
    """The server: every tool of `TOOLS`, its paths confined to ``root``."""
    by_name = {spec.name: spec for spec in TOOLS}
    listing = types.ListToolsResult(tools=[_tool(spec) for spec in TOOLS])

    async def list_tools(
        ctx: ServerRequestContext[Any],  # noqa: ARG001 - the SDK's handler signature
        params: types.PaginatedRequestParams | None,  # noqa: ARG001 - one page holds them all
    ) -> types.ListToolsResult:
        return listing

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        spec = by_name.get(params.name)
        if spec is None:
            # Not the tool's failure but the request's: a protocol error, as the spec says.
            message = f"no tool {params.name!r}{did_you_mean(params.name, by_name)}"
            raise MCPError(types.INVALID_PARAMS, message)
        call = Call(root=root, progress=ctx.session.report_progress)
        return await _call(spec, params.arguments or {}, call)

    return Server(
        "mesh",
        version=__version__,
        instructions=_INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
