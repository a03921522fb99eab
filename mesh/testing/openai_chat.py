r"""
A scripted model speaking the OpenAI Chat Completions API, as Aider (through LiteLLM) uses it.

An OpenAI-compatible client pointed at ``{server.url}/v1`` sends
``POST /v1/chat/completions`` with the whole conversation in ``messages`` and reads
the answer either as one JSON body or, with ``"stream": true``, as server-sent
``chat.completion.chunk`` events ending in ``data: [DONE]``. `OpenAIChat` answers
each such request with the next step of a script::

    model = OpenAIChat([Say("src/x.py\n```\nX = 1\n```\nAdded src/x.py.")])
    with ScriptedModelServer(model) as server:
        ...  # point the agent at f"{server.url}/v1"

A step is the model's whole reply: `Say` (assistant text; for Aider, text holding
edit blocks in its edit format, which Aider applies), `Malformed` (a reply the
client cannot use) or `Hang` (an answer that never finishes, for timeout tests).

The step is chosen by the conversation, not by a counter: a request whose
``messages`` already hold ``n`` of this script's replies gets step ``n`` (other
assistant messages, such as the worked examples in Aider's system prompt, do
not count). A retried request gets the same answer, and several agents on one
server each walk the script from its start.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final, Literal

import attrs

from ._model_server import ModelRequest, Reply, sse

__all__ = ["Hang", "Malformed", "OpenAIChat", "Say"]

# A hanging stream sends a comment this often: only a write to a closed connection
# tells the server that the agent hung up (or was killed).
_KEEPALIVE_SECONDS: Final = 0.25
# Streamed text is cut into pieces this long, as a real model streams tokens.
_PIECE: Final = 64
_MODELS: Final = ("scripted",)


@attrs.frozen
class Say:
    """
    A step: the model answers with ``text`` (or the text a function makes from the request).

    .. versionadded:: 0.1.0
    """

    text: str | Callable[[ModelRequest], str]


@attrs.frozen(kw_only=True)
class Malformed:
    """
    A step: a reply the client cannot use.

    ``garbage``: a stream (or, unstreamed, a body) whose data is not JSON;
    ``truncated``: a stream that stops mid-event, before any ``finish_reason``
    or ``[DONE]``; ``status``: HTTP 400 ``invalid_request_error``, which
    clients do not retry.

    .. versionadded:: 0.1.0
    """

    kind: Literal["garbage", "truncated", "status"] = "garbage"


@attrs.frozen(kw_only=True)
class Hang:
    """
    A step: the model starts answering and never finishes (for timeout tests).

    The stream (or, unstreamed, the response) stays open, sending only
    keep-alive comments, until the client hangs up, `OpenAIChat.release` is
    called, or ``seconds`` pass, so that no test server waits forever.

    .. versionadded:: 0.1.0
    """

    seconds: float = 300.0


Step = Say | Malformed | Hang
"""One scripted model reply."""


class OpenAIChat:
    """
    A `ScriptedModelServer` responder for the OpenAI Chat Completions API.

    Args:
        steps: The script (`Say`, `Malformed`, `Hang`), or a function choosing
            it from the request (for agents that follow different scripts on
            one server, such as a coder and a fixer).
        prompt_tokens: Reported as every answer's prompt token usage.
        completion_tokens: Reported as every answer's completion token usage.

    A conversation past the end of the script gets ``Say("(end of script)")``.
    ``GET .../models`` lists one model, ``scripted``; any other request is a
    404. ``turns`` counts the chat completions answered.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        steps: Sequence[Step] | Callable[[ModelRequest], Sequence[Step]],
        *,
        prompt_tokens: int = 100,
        completion_tokens: int = 20,
    ) -> None:
        self.steps = steps
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.turns = 0
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._quiet = threading.Condition(self._lock)
        self._hanging = 0
        self._said: set[str] = set()

    def __call__(self, request: ModelRequest) -> Reply:
        """Answer one request with the step its conversation has reached."""
        path = request.path.split("?", 1)[0].rstrip("/")
        if request.method == "GET" and path.endswith("/models"):
            data = [{"id": name, "object": "model", "owned_by": "mesh"} for name in _MODELS]
            return Reply(body={"object": "list", "data": data})
        if request.method != "POST" or not path.endswith("/chat/completions"):
            return _error(404, f"{request.method} {path} is not scripted")
        body = request.body if isinstance(request.body, dict) else {}
        steps = self.steps(request) if callable(self.steps) else self.steps
        with self._lock:
            index = _replies(body, self._said)
            self.turns += 1
        step = steps[index] if index < len(steps) else Say("(end of script)")
        streaming = body.get("stream") is True
        model = str(body.get("model") or "scripted")
        if isinstance(step, Malformed):
            return _malformed(step, streaming=streaming)
        if isinstance(step, Hang):
            return Reply(chunks=self._hang(step.seconds, streaming=streaming))
        text = step.text(request) if callable(step.text) else step.text
        with self._lock:
            self._said.add(text.strip())
        if not streaming:
            return Reply(body=self._completion(index, model, text))
        return Reply(chunks=self._stream(index, model, text, usage=_include_usage(body)))

    def release(self) -> None:
        """End every `Hang`, now and later (call it when the test is done)."""
        self._released.set()

    def wait_quiet(self, timeout: float) -> bool:
        """Wait until no `Hang` is still answering; False if one is after ``timeout`` s."""
        with self._quiet:
            return self._quiet.wait_for(lambda: self._hanging == 0, timeout)

    def _usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def _completion(self, index: int, model: str, text: str) -> dict[str, object]:
        return {
            "id": f"chatcmpl-scripted-{index}",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(),
        }

    def _stream(self, index: int, model: str, text: str, *, usage: bool) -> tuple[bytes, ...]:
        head = {
            "id": f"chatcmpl-scripted-{index}",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
        }

        def chunk(delta: Mapping[str, object], finish: str | None) -> dict[str, object]:
            choice = {"index": 0, "delta": dict(delta), "finish_reason": finish}
            return {**head, "choices": [choice]}

        events: list[tuple[str | None, object]] = [(None, chunk({"role": "assistant"}, None))]
        events.extend(
            (None, chunk({"content": text[start : start + _PIECE]}, None))
            for start in range(0, len(text), _PIECE)
        )
        events.append((None, chunk({}, "stop")))
        if usage:
            events.append((None, {**head, "choices": [], "usage": self._usage()}))
        events.append((None, "[DONE]"))
        return sse(events)

    def _hang(self, seconds: float, *, streaming: bool) -> Iterator[bytes]:
        with self._lock:
            self._hanging += 1
        try:
            # A stream has begun (headers and a first event); a plain answer never starts.
            if streaming:
                yield b'data: {"object": "chat.completion.chunk", "choices": []}\n\n'
            deadline = time.monotonic() + seconds
            while not self._released.wait(_KEEPALIVE_SECONDS) and time.monotonic() < deadline:
                yield b": still thinking\n\n"
        finally:
            # Runs when the stream ends, or when the server drops it (the client hung up).
            with self._quiet:
                self._hanging -= 1
                self._quiet.notify_all()


def _replies(body: Mapping[str, object], said: set[str]) -> int:
    """How many of the script's replies the conversation in a request body holds."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    return sum(
        1
        for message in messages
        if isinstance(message, dict)
        and message.get("role") == "assistant"
        and isinstance(message.get("content"), str)
        and message["content"].strip() in said
    )


def _include_usage(body: Mapping[str, object]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _error(status: int, message: str) -> Reply:
    return Reply(
        status=status,
        body={"error": {"message": message, "type": "invalid_request_error", "code": None}},
    )


def _malformed(step: Malformed, *, streaming: bool) -> Reply:
    if step.kind == "status":
        return _error(400, "scripted malformed request")
    if step.kind == "truncated" and streaming:
        started = {
            "id": "chatcmpl-cut",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me"}}],
        }
        # The first event whole, then the second cut off mid-object: no finish, no [DONE].
        return Reply(chunks=(*sse([(None, started)]), b'data: {"id": "chatcmpl-cut", "obj'))
    if streaming:
        return Reply(chunks=(b"data: {this is not json\n\n", b"data: [garbage\n\n"))
    return Reply(body={"scripted": "not a chat completion"})
