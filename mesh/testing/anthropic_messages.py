"""
The Anthropic Messages API, answered from a script: Claude Code offline.

`AnthropicMessages` is a responder for `ScriptedModelServer`: point an agent that
speaks the Messages API (Claude Code, with ``ANTHROPIC_BASE_URL``) at the server
and each of its turns is answered by the next step of the script: call a tool
(`ToolUse`), end with a text answer (`Say`), send a reply the agent cannot use
(`Malformed`), or never finish answering (`Hang`).

The step is chosen from the conversation itself, not from a counter: a request
whose ``messages`` already hold ``n`` assistant turns gets step ``n``. A retried
request is answered the same way, and several agents sharing one server each
follow the script from the start. Only requests that offer the agent's tools
are turns; anything else an agent asks on the side (a title, a token count, a
quota probe) gets a short, valid answer and leaves the script where it was.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final, Literal

import attrs

from ._model_server import ModelRequest, Reply, sse

__all__ = ["AnthropicMessages", "Hang", "Malformed", "Say", "Step", "ToolUse"]

_SIDE_TEXT: Final = "OK"
_PING_SECONDS: Final = 0.5


@attrs.frozen(kw_only=True)
class ToolUse:
    """
    The model calls one tool (``Write``, ``Edit``, ``Read``, ``Bash``, ...) with ``input``.

    ``text`` is said before the call, as a model often does.

    .. versionadded:: 0.1.0
    """

    name: str
    input: Mapping[str, object]
    text: str | None = None


@attrs.frozen(kw_only=True)
class Say:
    """
    The model ends its turn with ``text`` (or the text a function makes from the request).

    .. versionadded:: 0.1.0
    """

    text: str | Callable[[ModelRequest], str]


@attrs.frozen(kw_only=True)
class Malformed:
    """
    A reply the agent cannot use.

    ``events``: a 200 event stream whose data is not JSON; ``body``: a 200
    JSON body that is not a message; ``status``: a 400
    ``invalid_request_error`` (which clients do not retry).

    .. versionadded:: 0.1.0
    """

    kind: Literal["events", "body", "status"] = "events"


@attrs.frozen(kw_only=True)
class Hang:
    """
    The model starts answering and never finishes (for timeout tests).

    The stream stays open, sending only ``ping`` events, until the agent
    hangs up, `AnthropicMessages.close` is called, or ``limit`` seconds pass (so
    no test server streams forever).

    .. versionadded:: 0.1.0
    """

    limit: float = 600.0


Step = ToolUse | Say | Malformed | Hang
"""One scripted model turn."""


def _assistant_turns(body: Mapping[str, object]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    return sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")


def _error(status: int, kind: str, message: str) -> Reply:
    return Reply(status=status, body={"type": "error", "error": {"type": kind, "message": message}})


class AnthropicMessages:
    """
    Answer ``POST /v1/messages`` from ``steps``, streaming or not, as the request asks.

    ``steps`` is a list, or a function choosing the list from the request
    (for agents that must follow different scripts on one server, such as
    a coder and a fixer). A conversation past the last step gets a 400
    error saying so. Every reply reports ``usage`` of
    ``input_tokens`` and ``output_tokens``, so an agent's token and cost
    account is predictable. ``turns`` counts the scripted turns answered.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        steps: Sequence[Step] | Callable[[ModelRequest], Sequence[Step]],
        *,
        input_tokens: int = 100,
        output_tokens: int = 20,
    ) -> None:
        self.steps = steps
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.turns = 0
        self._closed = threading.Event()
        self._quiet = threading.Condition()
        self._hanging = 0
        self._ids = itertools.count(1)

    def close(self) -> None:
        """End every hanging stream now (call it before the server stops)."""
        self._closed.set()

    def wait_quiet(self, timeout: float) -> bool:
        """Wait until no hanging stream is open; False if one still is after ``timeout`` s."""
        with self._quiet:
            return self._quiet.wait_for(lambda: self._hanging == 0, timeout)

    def __call__(self, request: ModelRequest) -> Reply:
        """The reply to one request."""
        path = request.path.split("?", 1)[0].rstrip("/")
        body = request.body if isinstance(request.body, dict) else {}
        if request.method == "POST" and path.endswith("/messages/count_tokens"):
            return Reply(body={"input_tokens": self.input_tokens})
        if request.method != "POST" or not path.endswith("/messages"):
            return _error(404, "not_found_error", f"{request.method} {path} is not scripted")
        streaming = body.get("stream") is True
        if not body.get("tools"):
            side: list[dict[str, object]] = [{"type": "text", "text": _SIDE_TEXT}]
            return self._message(body, side, "end_turn", streaming=streaming)
        steps = self.steps(request) if callable(self.steps) else self.steps
        index = _assistant_turns(body)
        self.turns += 1
        if index >= len(steps):
            message = f"scripted model: the script has {len(steps)} steps, and all were used"
            return _error(400, "invalid_request_error", message)
        return self._turn(steps[index], request, body, index, streaming=streaming)

    def _turn(
        self,
        step: Step,
        request: ModelRequest,
        body: Mapping[str, object],
        index: int,
        *,
        streaming: bool,
    ) -> Reply:
        if isinstance(step, Hang):
            # A stream even when a whole message was asked for: its body never ends either.
            return Reply(chunks=self._hang(body, step.limit))
        if isinstance(step, Malformed):
            return self._malformed(step, streaming=streaming)
        if isinstance(step, Say):
            text = step.text(request) if callable(step.text) else step.text
            return self._message(
                body, [{"type": "text", "text": text}], "end_turn", streaming=streaming
            )
        blocks: list[dict[str, object]] = []
        if step.text:
            blocks.append({"type": "text", "text": step.text})
        use_id = f"toolu_scripted_{index}_{next(self._ids)}"
        blocks.append({"type": "tool_use", "id": use_id, "name": step.name, "input": step.input})
        return self._message(body, blocks, "tool_use", streaming=streaming)

    def _message(
        self,
        body: Mapping[str, object],
        blocks: list[dict[str, object]],
        stop_reason: str,
        *,
        streaming: bool,
    ) -> Reply:
        start = self._start(body)
        if not streaming:
            usage = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
            return Reply(
                body={**start, "content": blocks, "stop_reason": stop_reason, "usage": usage}
            )
        events: list[tuple[str | None, object]] = [
            ("message_start", {"type": "message_start", "message": start})
        ]
        for index, block in enumerate(blocks):
            events.extend(_block_events(index, block))
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": self.output_tokens},
        }
        events += [("message_delta", delta), ("message_stop", {"type": "message_stop"})]
        return Reply(chunks=sse(events))

    def _start(self, body: Mapping[str, object]) -> dict[str, object]:
        """The message as ``message_start`` announces it: no content yet."""
        return {
            "id": f"msg_scripted_{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model") or "scripted",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 1},
        }

    def _hang(self, body: Mapping[str, object], limit: float) -> Iterator[bytes]:
        with self._quiet:
            self._hanging += 1
        try:
            message = self._start(body)
            yield from sse([("message_start", {"type": "message_start", "message": message})])
            deadline = time.monotonic() + limit
            # Pings keep the connection busy: the write after the agent hangs up fails,
            # which is how the stream learns it is alone.
            while not self._closed.wait(_PING_SECONDS) and time.monotonic() < deadline:
                yield from sse([("ping", {"type": "ping"})])
        finally:
            with self._quiet:
                self._hanging -= 1
                self._quiet.notify_all()

    def _malformed(self, step: Malformed, *, streaming: bool) -> Reply:
        if step.kind == "status":
            return _error(400, "invalid_request_error", "scripted malformed request")
        if step.kind == "body" or not streaming:
            return Reply(body={"scripted": "not a message"})
        return Reply(
            chunks=(b"event: message_start\ndata: {this is not json\n\n", b"data: [garbage\n\n")
        )


def _block_start(index: int, block: dict[str, object]) -> tuple[str | None, object]:
    return (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def _block_delta(index: int, delta: dict[str, object]) -> tuple[str | None, object]:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def _block_events(index: int, block: dict[str, object]) -> list[tuple[str | None, object]]:
    """One content block as a stream sends it: start, deltas, stop."""
    if block["type"] == "text":
        opened: dict[str, object] = {"type": "text", "text": ""}
        deltas: list[dict[str, object]] = [{"type": "text_delta", "text": block["text"]}]
    else:
        opened = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        # The input arrives as JSON text, in pieces, as a real stream sends it.
        raw = json.dumps(block["input"])
        middle = len(raw) // 2
        deltas = [
            {"type": "input_json_delta", "partial_json": piece}
            for piece in (raw[:middle], raw[middle:])
        ]
    return [
        _block_start(index, opened),
        *(_block_delta(index, delta) for delta in deltas),
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]
