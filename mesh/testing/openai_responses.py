"""
A scripted model speaking the OpenAI Responses API, as Codex CLI uses it.

Codex CLI talks to a custom provider (``wire_api = "responses"``, the only wire API it
supports) with ``POST {base_url}/responses`` and reads the answer as server-sent
events: ``response.created``, one ``response.output_item.done`` per output item (an
assistant message, or a function call it then runs), and ``response.completed`` with
the token usage. Rate-limit headers on the answer (``x-codex-primary-used-percent``
and the rest) become the ``rate_limits`` of the ``token_count`` events Codex writes
to its session files.

`OpenAIResponses` answers each request with the next step of a script::

    model = OpenAIResponses([Shell("echo 'X = 1' > src/x.py"), Message("added src/x.py")])
    with ScriptedModelServer(model) as server:
        ...  # point the agent at f"{server.url}/v1"

Every conversation walks the same script from its start: the step is chosen by how
many tool calls the request's input already holds (Codex sends the whole
conversation each time), so concurrent agents and retried requests each see the
script in order, without shared state.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from http import HTTPStatus
from typing import Final

import attrs

from ._model_server import ModelRequest, Reply, sse

__all__ = [
    "Hang",
    "Malformed",
    "Message",
    "OpenAIResponses",
    "RateLimits",
    "Shell",
    "Step",
    "ToolCall",
    "Window",
]

# A hanging stream sends a comment this often, so that it notices soon when the agent
# hangs up (only a write to a closed connection tells).
_KEEPALIVE_SECONDS: Final = 0.25
_TOOL_CALL_TYPES: Final = frozenset({"function_call", "custom_tool_call", "local_shell_call"})


@attrs.frozen
class Message:
    """
    A step: the model's final answer, an assistant message (ends the agent's turn).

    .. versionadded:: 0.1.0
    """

    text: str


@attrs.frozen(kw_only=True)
class ToolCall:
    """
    A step: the model calls one of the agent's tools with JSON ``arguments``.

    The agent runs the tool and asks again with its output; the next step answers.

    .. versionadded:: 0.1.0
    """

    name: str
    arguments: Mapping[str, object] = attrs.Factory(dict)


def Shell(command: str, *, workdir: str | None = None) -> ToolCall:  # noqa: N802 - reads as a step
    """
    A step: the model runs ``command`` with Codex's shell tool (``exec_command``).

    The command runs in Codex's sandbox, in the agent's working folder unless
    ``workdir`` says otherwise. Codex handles an ``apply_patch`` command itself
    (no shell): a ``Shell`` of ``apply_patch <<'EOF'`` and a patch in Codex's own
    format (``*** Begin Patch`` ...) edits files the way the model's patches do.

    .. versionadded:: 0.1.0
    """
    arguments: dict[str, object] = {"cmd": command}
    if workdir is not None:
        arguments["workdir"] = workdir
    return ToolCall(name="exec_command", arguments=arguments)


@attrs.frozen(kw_only=True)
class Malformed:
    """
    A step: a reply the agent cannot use.

    By default a stream of junk that ends before ``response.completed`` (a
    truncated reply). ``chunks`` replaces what is sent; ``status`` other than
    200 sends ``body`` as a JSON error instead of a stream.

    .. versionadded:: 0.1.0
    """

    chunks: tuple[bytes, ...] = (
        b'data: {"type": "response.created", "response": {"id": "resp-junk"}}\n\n',
        b"data: {this is not json\n\n",
        b'data: {"type": "response.output_item.done", "item": {"type": "mes',
    )
    status: int = 200
    body: object = None


@attrs.frozen(kw_only=True)
class Hang:
    """
    A step: the model starts answering and never finishes (for timeout tests).

    The stream stays open, sending only keep-alive comments, until the agent
    hangs up, `OpenAIResponses.close` is called, or ``limit`` seconds pass (so
    no test server streams forever).

    .. versionadded:: 0.1.0
    """

    limit: float = 600.0


Step = Message | ToolCall | Malformed | Hang
"""One step of a script: what the model answers to one request."""


@attrs.frozen(kw_only=True)
class Window:
    """
    One rate-limit window as Codex reads it from the ``x-codex-*`` headers.

    ``used_percent`` of the window is spent; ``window_minutes`` long (300 for
    the 5-hour window, 10080 for the weekly one); ``resets_at`` in Unix seconds.

    .. versionadded:: 0.1.0
    """

    used_percent: float
    window_minutes: int | None = None
    resets_at: int | None = None


@attrs.frozen(kw_only=True)
class RateLimits:
    """
    The rate-limit headers of every answer: Codex's primary and secondary windows.

    .. versionadded:: 0.1.0
    """

    primary: Window | None = None
    secondary: Window | None = None

    def headers(self) -> dict[str, str]:
        """The ``x-codex-{primary,secondary}-*`` response headers."""
        headers: dict[str, str] = {}
        for name, window in (("primary", self.primary), ("secondary", self.secondary)):
            if window is None:
                continue
            headers[f"x-codex-{name}-used-percent"] = repr(float(window.used_percent))
            if window.window_minutes is not None:
                headers[f"x-codex-{name}-window-minutes"] = str(window.window_minutes)
            if window.resets_at is not None:
                headers[f"x-codex-{name}-reset-at"] = str(window.resets_at)
        return headers


class OpenAIResponses:
    """
    A `ScriptedModelServer` responder for the OpenAI Responses API.

    Args:
        steps: The script, in order (`Message`, `ToolCall` or `Shell`, `Malformed`, `Hang`).
        rate_limits: Sent as headers with every streamed answer.
        input_tokens: Reported as each answer's input token usage.
        output_tokens: Reported as each answer's output token usage.

    A request past the end of the script gets an HTTP 400 error saying so (an
    agent does not retry it), and any request other than ``POST .../responses``
    a 404.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        steps: Iterable[Step],
        *,
        rate_limits: RateLimits | None = None,
        input_tokens: int = 100,
        output_tokens: int = 20,
    ) -> None:
        self.steps: Sequence[Step] = tuple(steps)
        self.rate_limits = rate_limits
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._hanging = 0
        self._quiet = threading.Condition(self._lock)

    def __call__(self, request: ModelRequest) -> Reply:
        """Answer one request with the step its conversation has reached."""
        if request.method != "POST" or not request.path.split("?")[0].endswith("/responses"):
            return Reply(
                status=404, body={"error": {"message": f"no such endpoint: {request.path}"}}
            )
        index = _tool_calls(request.body)
        if index >= len(self.steps):
            message = f"scripted model: the script has {len(self.steps)} steps, and all were used"
            return Reply(
                status=400, body={"error": {"message": message, "type": "invalid_request_error"}}
            )
        step = self.steps[index]
        if isinstance(step, Malformed):
            if step.status != HTTPStatus.OK:
                return Reply(status=step.status, body=step.body)
            return Reply(headers=self._headers(), chunks=step.chunks)
        if isinstance(step, Hang):
            return Reply(headers=self._headers(), chunks=self._hang(index, step.limit))
        return Reply(headers=self._headers(), chunks=self._answer(index, step))

    def close(self) -> None:
        """End every hanging stream now (call it before the server stops)."""
        self._closed.set()

    def wait_quiet(self, timeout: float) -> bool:
        """Wait until no hanging stream is open; False if one still is after ``timeout`` s."""
        with self._quiet:
            return self._quiet.wait_for(lambda: self._hanging == 0, timeout)

    def _headers(self) -> dict[str, str]:
        return {} if self.rate_limits is None else self.rate_limits.headers()

    def _answer(self, index: int, step: Message | ToolCall) -> tuple[bytes, ...]:
        response_id = f"resp-{index}"
        if isinstance(step, Message):
            item: dict[str, object] = {
                "type": "message",
                "role": "assistant",
                "id": f"msg-{index}",
                "content": [{"type": "output_text", "text": step.text, "annotations": []}],
            }
        else:
            item = {
                "type": "function_call",
                "id": f"fc-{index}",
                "call_id": f"call-{index}",
                "name": step.name,
                "arguments": json.dumps(dict(step.arguments)),
            }
        usage = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }
        return sse(
            [
                ("response.created", {"type": "response.created", "response": {"id": response_id}}),
                ("response.output_item.done", {"type": "response.output_item.done", "item": item}),
                (
                    "response.completed",
                    {"type": "response.completed", "response": {"id": response_id, "usage": usage}},
                ),
            ]
        )

    def _hang(self, index: int, limit: float) -> Iterator[bytes]:
        with self._lock:
            self._hanging += 1
        try:
            created = {"type": "response.created", "response": {"id": f"resp-{index}"}}
            yield from sse([("response.created", created)])
            deadline = time.monotonic() + limit
            while not self._closed.wait(_KEEPALIVE_SECONDS) and time.monotonic() < deadline:
                yield b": still thinking\n\n"
        finally:
            # Runs when the stream ends, or when the server drops it (the agent hung up).
            with self._quiet:
                self._hanging -= 1
                self._quiet.notify_all()


def _tool_calls(body: object) -> int:
    """How many tool calls the conversation in a request body already holds."""
    if not isinstance(body, dict):
        return 0
    items = body.get("input")
    if not isinstance(items, list):
        return 0
    return sum(
        1 for item in items if isinstance(item, dict) and item.get("type") in _TOOL_CALL_TYPES
    )
