"""
Test doubles for mesh and for role adapters written against it.

- `FakeAdapter`: a scripted role adapter (sync or async handler, scripted
  answers, failures, hangs and delays).
- `fake_roles`: a full happy-path set of fake adapters, any of them replaceable.
- `answer`: builds a valid output-contract-v2 answer for any request.
- `capture_ledger`: collect every ledger event of the runs started inside it.
- `ManualClock`: time that moves only when told to (or when all tasks wait).
- `ScriptedModelServer`: a model provider's API on loopback, answering from a
  script, to drive real agent programs offline: `OpenAIResponses` (Codex CLI),
  `OpenAIChat` (Aider and other OpenAI-compatible clients) and
  `AnthropicMessages` (Claude Code). Their script steps are in the modules
  ``mesh.testing.openai_responses``, ``mesh.testing.openai_chat`` and
  ``mesh.testing.anthropic_messages``.

A pytest plugin (loaded automatically) offers the fixtures ``mesh_roles``,
``mesh_ledger`` and ``mesh_clock``, and makes runs in tests strict: a run built
without ``strict=`` stops at an adapter's first mistake with
`mesh.AdapterMistake`. Opt out with ``@pytest.mark.mesh_strict(strict=False)``
(a test, class or module) or ``mesh_strict = false`` (a whole suite).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from . import anthropic_messages as anthropic_messages
from . import openai_chat as openai_chat
from . import openai_responses as openai_responses
from ._clock import ManualClock as ManualClock
from ._fakes import FakeAdapter as FakeAdapter
from ._fakes import Hang as Hang
from ._fakes import Raise as Raise
from ._fakes import Sleep as Sleep
from ._fakes import answer as answer
from ._fakes import capture_ledger as capture_ledger
from ._fakes import fake_roles as fake_roles
from ._model_server import ModelRequest as ModelRequest
from ._model_server import Reply as Reply
from ._model_server import ScriptedModelServer as ScriptedModelServer
from ._model_server import sse as sse
from .anthropic_messages import AnthropicMessages as AnthropicMessages
from .openai_chat import OpenAIChat as OpenAIChat
from .openai_responses import OpenAIResponses as OpenAIResponses

__all__ = [
    "AnthropicMessages",
    "FakeAdapter",
    "Hang",
    "ManualClock",
    "ModelRequest",
    "OpenAIChat",
    "OpenAIResponses",
    "Raise",
    "Reply",
    "ScriptedModelServer",
    "Sleep",
    "answer",
    "anthropic_messages",
    "capture_ledger",
    "fake_roles",
    "openai_chat",
    "openai_responses",
    "sse",
]
