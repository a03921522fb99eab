"""The scripted model server's HTTP layer: JSON, server-sent events, errors, the record."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from mesh.testing._model_server import ModelRequest, Reply, ScriptedModelServer, sse


def post(url: str, data: bytes) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, data=data, method="POST")  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, response.read(), response.headers["content-type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["content-type"]


def test_json_answers_and_the_record() -> None:
    def respond(request: ModelRequest) -> Reply:
        return Reply(headers={"x-seen": request.path}, body={"echo": request.body})

    with ScriptedModelServer(respond) as server:
        status, body, kind = post(server.url + "/v1/chat?x=1", b'{"model": "m"}')
        assert (status, json.loads(body), kind) == (
            200,
            {"echo": {"model": "m"}},
            "application/json",
        )
        post(server.url + "/v1/other", b"not json")
        with urllib.request.urlopen(server.url + "/v1/models", timeout=10) as response:  # noqa: S310
            assert json.loads(response.read()) == {"echo": None}
    assert [r.method for r in server.requests] == ["POST", "POST", "GET"]
    assert server.requests[1].body == "not json"
    assert list(server.bodies("/v1/chat")) == [{"model": "m"}]
    assert server.requests[0].headers["content-type"] == "application/x-www-form-urlencoded"


def test_server_sent_events() -> None:
    chunks = sse([("message_start", {"a": 1}), (None, "[DONE]")])
    assert chunks == (b'event: message_start\ndata: {"a": 1}\n\n', b"data: [DONE]\n\n")
    with ScriptedModelServer(lambda _: Reply(chunks=chunks)) as server:
        status, body, kind = post(server.url + "/v1/responses", b"{}")
    assert (status, body, kind) == (200, b"".join(chunks), "text/event-stream")


def test_a_script_that_raises_answers_500() -> None:
    def respond(request: ModelRequest) -> Reply:
        raise LookupError("the script has no step left")

    with ScriptedModelServer(respond) as server:
        status, body, _ = post(server.url + "/v1/messages", b"{}")
    assert status == 500
    assert "the script has no step left" in json.loads(body)["error"]["message"]


@pytest.mark.parametrize("status", [429, 400])
def test_error_statuses(status: int) -> None:
    with ScriptedModelServer(lambda _: Reply(status=status, body={"error": "x"})) as server:
        assert post(server.url, b"{}")[0] == status
