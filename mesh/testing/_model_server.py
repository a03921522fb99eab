"""
A loopback HTTP server that answers model API requests from a script.

Agent programs (Codex CLI, Claude Code, Aider) talk to a model provider over HTTP.
Pointed at this server (each accepts a custom base URL), they run offline and
deterministically: every request is recorded, and each is answered by the
protocol's ``respond`` function, which takes the next step of the script. A
protocol module (OpenAI Responses, OpenAI Chat Completions, Anthropic Messages)
supplies ``respond``; this module only serves HTTP, plain JSON or server-sent
events.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final, Self

import attrs

__all__ = ["ModelRequest", "Reply", "ScriptedModelServer", "sse"]

_BODY_LIMIT: Final = 64 * 1024 * 1024


@attrs.frozen(kw_only=True)
class ModelRequest:
    """One request an agent made: method, path, headers (lower-case names) and JSON body."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: object


@attrs.frozen(kw_only=True)
class Reply:
    """
    An answer: a status, headers, and either a JSON body or a stream of raw chunks.

    ``chunks`` are written and flushed one by one (server-sent events); a
    stream may end early, as a dropped connection does. They may be produced
    lazily (a generator), for a stream that stalls; a client that hangs up
    ends the reply.
    """

    status: int = 200
    headers: Mapping[str, str] = attrs.Factory(dict)
    body: object = None
    chunks: Iterable[bytes] | None = None


def sse(events: Iterable[tuple[str | None, object]]) -> tuple[bytes, ...]:
    """Server-sent events: each ``(event name or None, JSON data or raw text)`` as one chunk."""
    chunks = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        head = f"event: {name}\n" if name else ""
        chunks.append(f"{head}data: {text}\n\n".encode())
    return tuple(chunks)


Responder = Callable[[ModelRequest], Reply]


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: ScriptedModelServer


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Quiet: the test reads ``requests``, not the server's log."""

    def do_GET(self) -> None:
        self._answer(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(min(length, _BODY_LIMIT))
        try:
            body: object = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self._answer(body)

    def _answer(self, body: object) -> None:
        request = ModelRequest(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
        )
        self._send(self.server.owner.answer(request))

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.chunks is None:
            data = json.dumps(reply.body).encode()
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        try:
            for chunk in reply.chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent hung up (or was stopped): nobody is left to answer
        self.close_connection = True


class ScriptedModelServer:
    """
    Serve ``respond`` on ``127.0.0.1`` (a free port) while the ``with`` block runs.

    ``requests`` lists every request received, in order; ``url`` is the base
    address (``http://127.0.0.1:PORT``). Requests are answered one at a time,
    in arrival order. A ``respond`` that raises answers 500 with the error, so
    a test sees it rather than a hung agent.
    """

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.requests: list[ModelRequest] = []
        self._lock = threading.Lock()
        self._server = _HTTPServer(("127.0.0.1", 0), _Handler, bind_and_activate=False)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The server's base address (valid inside the ``with`` block)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def answer(self, request: ModelRequest) -> Reply:
        """Record ``request`` and answer it from the script."""
        with self._lock:
            self.requests.append(request)
            try:
                return self.respond(request)
            except Exception as exc:  # noqa: BLE001 - shown to the test as a 500
                return Reply(status=500, body={"error": {"message": repr(exc)}})

    def __enter__(self) -> Self:
        self._server.server_bind()
        self._server.server_activate()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def bodies(self, path_suffix: str = "") -> Iterator[object]:
        """The JSON bodies of the requests whose path ends with ``path_suffix``."""
        return (r.body for r in list(self.requests) if r.path.split("?")[0].endswith(path_suffix))
