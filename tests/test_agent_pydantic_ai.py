"""
The pydantic-ai adapters, driven by pydantic-ai's own FunctionModel: no network, no API key.

A scripted model calls the file tools mesh gives the agent; the tests see what
the model read back (the refusals among it), what changed on disk (nothing
outside the worktree or the write scope), the candidate mesh diffed, a real
commit delivered, and the fixer's typed verdicts.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

import mesh
from mesh.agents import AgentFailed, AgentUnavailable
from mesh.agents import _pydantic_ai as module
from mesh.agents._pydantic_ai import (
    PydanticAICoder,
    PydanticAIFixer,
    VerdictOutput,
    worktree_toolset,
)

pydantic_ai = pytest.importorskip("pydantic_ai")

from pydantic_ai import Agent  # noqa: E402 - only once pydantic-ai is known to be there
from pydantic_ai.messages import (  # noqa: E402
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import test as test_models  # noqa: E402
from pydantic_ai.models.function import AgentInfo, FunctionModel  # noqa: E402
from pydantic_ai.usage import UsageLimits  # noqa: E402
from test_agents import adjudication  # noqa: E402

from repo_helpers import git, make_repo  # noqa: E402

pytestmark = pytest.mark.anyio

# Nothing here may reach a provider: a real model name fails instead of calling out.
pydantic_ai.models.ALLOW_MODEL_REQUESTS = False

Call = tuple[str, dict[str, Any]]
Step = Sequence[Call] | str


class Script:
    """
    A model that plays ``steps`` in order (tool calls, or a final text), per run.

    Stateless between runs: the step is the number of responses already in the
    history, so concurrent candidates each play the whole script. Every tool
    result the model reads is kept in ``seen`` (tool name, text).
    """

    def __init__(self, *steps: Step) -> None:
        self.steps = steps
        self.seen: list[tuple[str, str]] = []
        self.tools: list[list[str]] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.tools.append([tool.name for tool in info.function_tools])
        for part in messages[-1].parts:
            if isinstance(part, ToolReturnPart):
                self.seen.append((part.tool_name, part.model_response_str()))
        step = self.steps[sum(isinstance(message, ModelResponse) for message in messages)]
        if isinstance(step, str):
            return ModelResponse(parts=[TextPart(step)])
        return ModelResponse(parts=[ToolCallPart(name, args) for name, args in step])

    def said(self, tool: str) -> list[str]:
        return [text for name, text in self.seen if name == tool]


def error_of(reply: str) -> str:
    """The message of a failed tool result, as the model reads it (``{"error": ...}``)."""
    document = json.loads(reply)
    assert isinstance(document, dict)
    return str(document["error"])


def coder_agent(script: Script) -> Agent[None, str]:
    return Agent(FunctionModel(script, model_name="scripted"))


def request_for(
    unit: mesh.Unit, lane: mesh.Lane = mesh.Lane.CODER, index: int = 1
) -> mesh.AuthorRequest:
    return mesh.AuthorRequest(
        unit=unit,
        lane=lane,
        candidate_id=f"{unit.id}-{lane.value}-{index}",
        triplet_index=index,
        attempt=1,
    )


def ledger(finished: mesh.RepositoryRun) -> list[dict[str, Any]]:
    return [json.loads(line) for line in finished.ledger_path.read_text().splitlines()]


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (not following links) with its content or link target."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = "-> " + str(path.readlink())
        elif path.is_file() and ".git" not in path.parts:
            found[str(path.relative_to(folder))] = path.read_text(errors="replace")
    return found


# ---------------------------------------------------------------------------------------------
# The coder, end to end


def pick_first(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """A fixer model: select the first candidate the prompt names, by the output tool."""
    prompt = next(
        part.content
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, UserPromptPart)
    )
    assert isinstance(prompt, str)
    first = re.search(r"The candidate must be one of: \"([^\"]+)\"", prompt)
    assert first is not None
    arguments = {"verdict": "select", "candidate": first.group(1), "reasons": ["sets VALUE"]}
    return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, arguments)])


async def test_a_real_agent_run_delivers_a_commit(repo: Path, tmp_path: Path) -> None:
    """The agent edits through the tools; mesh diffs, proves, asks the typed fixer, commits."""
    script = Script(
        [("list_files", {"path": "src"}), ("read_file", {"path": "src/util.py"})],
        [("write_file", {"path": "src/util.py", "content": "VALUE = 2\n"})],
        "Set VALUE to 2.",
    )
    plan = {
        "plan": [
            {
                "id": "value",
                "step": "set VALUE to 2",
                "write_scope": ["src/util.py"],
                "proof_command": "grep -q 'VALUE = 2' src/util.py",
            }
        ]
    }
    finished = await mesh.run_async(
        plan,
        repo=repo,
        out=tmp_path / "out",
        roles=mesh.Roles(
            coder=PydanticAICoder(repo, coder_agent(script)),
            fixer=PydanticAIFixer(Agent(FunctionModel(pick_first))),
        ),
        delivery_mode=mesh.DeliveryMode.COMMIT_FIRST,
    )
    finished.result.check()
    assert git(repo, "log", "--format=%s").splitlines() == ["set VALUE to 2", "initial"]
    assert (repo / "src" / "util.py").read_text() == "VALUE = 2\n"
    assert git(repo, "show", "--name-only", "--format=", "HEAD") == "src/util.py"
    assert "src/app.py\nsrc/util.py" in script.said("list_files")
    assert "VALUE = 1\n" in script.said("read_file")
    assert "wrote src/util.py (10 bytes)" in script.said("write_file")

    calls = [event["data"] for event in ledger(finished) if event["event"] == "adapter_call"]
    coded = [call["facts"] for call in calls if call.get("facts", {}).get("final_message")]
    assert coded, calls
    facts = coded[0]
    assert facts["agent"] == "pydantic-ai"
    assert facts["model"] == "scripted"
    assert facts["final_message"] == "Set VALUE to 2."
    assert facts["turns"] == 3
    assert facts["tool_calls"] == 3
    assert facts["refused_tool_calls"] == 0
    assert facts["input_tokens"] > 0
    assert facts["output_tokens"] > 0
    judged = [call["facts"] for call in calls if "VerdictOutput" in str(call.get("facts"))]
    assert judged
    assert "select" in judged[0]["final_message"]


# ---------------------------------------------------------------------------------------------
# Confinement: every attack refused at the tool, the model told, nothing outside changed


@pytest.fixture(name="outside")
def _outside(tmp_path: Path) -> Path:
    """A folder outside every worktree, with a secret in it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("secret\n")
    return folder


@pytest.fixture(name="hostile_repo")
def _hostile_repo(tmp_path: Path, outside: Path) -> Path:
    """A repository whose tree plants symlinks leading out of the worktree."""
    repo = make_repo(tmp_path / "hostile")
    (repo / "src" / "out").symlink_to(outside)
    (repo / "src" / "up").symlink_to("../..")
    (repo / "src" / "secret-link.txt").symlink_to(outside / "secret.txt")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "links")
    return repo


ATTACKS: list[tuple[Call, str]] = [
    (("read_file", {"path": "../outside/secret.txt"}), "climbs out with '..'"),
    (("read_file", {"path": "/etc/passwd"}), "is an absolute path"),
    (("read_file", {"path": "src/out/secret.txt"}), "src/out is a symbolic link: not followed"),
    (("read_file", {"path": "src/secret-link.txt"}), "is a symbolic link: not followed"),
    (("read_file", {"path": "src/up/outside/secret.txt"}), "src/up is a symbolic link"),
    (("read_file", {"path": ".git/config"}), "writes into git's own files"),
    (("read_file", {"path": "src/app.py\x00.txt"}), "contains a control character"),
    (("list_files", {"path": ".."}), "climbs out with '..'"),
    (("list_files", {"path": "src/out"}), "src/out is a symbolic link"),
    (("write_file", {"path": "README.md", "content": "x"}), "outside the write scope (src)"),
    (("write_file", {"path": "src/../README.md", "content": "x"}), "climbs out"),
    (("write_file", {"path": "a/../../x", "content": "x"}), "climbs out"),
    (("write_file", {"path": "src/out/pwned.txt", "content": "x"}), "src/out is a symbolic link"),
    (("write_file", {"path": "src/up/pwned.txt", "content": "x"}), "src/up is a symbolic link"),
    (("write_file", {"path": "src/secret-link.txt", "content": "x"}), "is a symbolic link"),
    (("write_file", {"path": ".git/hooks/pre-commit", "content": "x"}), "git's own files"),
    (("write_file", {"path": "src/.GIT/hooks/x", "content": "x"}), "git's own files"),
    (("write_file", {"path": "src/git~1/x", "content": "x"}), "git's own files"),
    (("write_file", {"path": "SRC/app.py", "content": "x"}), "outside the write scope"),
    (("write_file", {"path": "src\\..\\README.md", "content": "x"}), "no backslash"),
    (("write_file", {"path": "/etc/mesh-pwned", "content": "x"}), "is an absolute path"),
    (("write_file", {"path": "src/.gitattributes", "content": "*"}), "a .gitattributes"),
    (("delete_file", {"path": "README.md"}), "outside the write scope"),
    (("delete_file", {"path": "src/out/secret.txt"}), "src/out is a symbolic link"),
]


async def test_every_attack_is_refused_at_the_tool(
    hostile_repo: Path, outside: Path, tmp_path: Path
) -> None:
    """The model reads each refusal; the run goes on; only the in-scope write is the candidate."""
    before_outside = tree(outside)
    before_repo = tree(hostile_repo)
    script = Script(
        [call for call, _ in ATTACKS],
        [("write_file", {"path": "src/ok.txt", "content": "fine\n"})],
        "Tried everything.",
    )
    coder = PydanticAICoder(hostile_repo, coder_agent(script))
    unit = mesh.Unit(id="u", objective="escape", write_scope=("src",))
    answer = mesh.parse_worker_result(await coder(request_for(unit)))

    assert answer.decision is mesh.Decision.ACCEPT
    assert answer.notes == "Tried everything."
    changed = re.findall(r"^diff --git a/(\S+)", answer.patch or "", re.MULTILINE)
    assert changed == ["src/ok.txt"]
    replies = [text for _, text in script.seen]
    assert len(replies) == len(ATTACKS) + 1
    for (call, expected), reply in zip(ATTACKS, replies, strict=False):
        assert "refused" in reply, (call, reply)
        assert expected in reply, (call, reply)
    assert replies[-1] == "wrote src/ok.txt (5 bytes)"
    assert tree(outside) == before_outside
    assert tree(hostile_repo) == before_repo
    assert not Path("/etc/mesh-pwned").exists()
    assert not (tmp_path / "x").exists()


async def test_the_model_sees_os_errors_too(repo: Path) -> None:
    """A missing file or a file used as a folder is a failed tool result, not a crash."""
    script = Script(
        [
            ("read_file", {"path": "src/missing.py"}),
            ("read_file", {"path": "src/app.py/inner"}),
            ("delete_file", {"path": "src/missing.py"}),
            ("read_file", {"path": "src/missing/x.py"}),
        ],
        # A later turn: the calls of one turn run concurrently.
        [("delete_file", {"path": "src/app.py"})],
        " ",
    )
    coder = PydanticAICoder(repo, coder_agent(script))
    unit = mesh.Unit(id="u", objective="o", write_scope=("src",))
    answer = mesh.parse_worker_result(await coder(request_for(unit)))
    assert error_of(script.seen[0][1]) == "src/missing.py: No such file or directory"
    assert error_of(script.seen[1][1]) == "src/app.py/inner: Not a directory"
    assert error_of(script.seen[2][1]) == "src/missing.py: No such file or directory"
    assert error_of(script.seen[3][1]) == "src/missing/x.py: No such file or directory"
    assert script.seen[4][1] == "deleted src/app.py"
    # An empty final message gives no notes; the diff deletes the file.
    assert answer.notes is None
    assert "deleted file mode" in (answer.patch or "")


# ---------------------------------------------------------------------------------------------
# The tools on their own, on a folder the test plants things in


@pytest.fixture(name="folder")
def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    for name, text in {"src/a.py": "A = 1\n", "docs/g.md": "# g\n", ".git/config": "x"}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def run_once(agent: Agent[None, str], toolset: Any) -> None:
    """One run of ``agent`` with ``toolset``, on a loop of its own (closed afterwards)."""
    anyio.run(functools.partial(agent.run, "go", toolsets=[toolset]), backend="asyncio")


def run_tools(toolset: Any, *calls: Call) -> list[str]:
    """Run one agent turn calling ``calls`` with the toolset; what the model read back."""
    script = Script(calls, "done")
    run_once(Agent(FunctionModel(script)), toolset)
    return [text for _, text in script.seen]


def test_special_files_need_the_units_permission(folder: Path) -> None:
    refused = worktree_toolset(folder, write_scope=["**"])
    allowed = worktree_toolset(
        folder, write_scope=["**"], allow_special=[mesh.SpecialPath.GITATTRIBUTES]
    )
    call = ("write_file", {"path": ".gitattributes", "content": "* text\n"})
    assert "this unit may not write a .gitattributes" in run_tools(refused, call)[0]
    assert run_tools(allowed, call) == ["wrote .gitattributes (7 bytes)"]
    modules = ("write_file", {"path": ".GitModules", "content": ""})
    assert "may not write a .gitmodules" in run_tools(allowed, modules)[0]


def test_odd_files_are_refused(folder: Path, tmp_path: Path) -> None:
    os.mkfifo(folder / "src" / "fifo")
    (folder / "src" / "big.txt").write_bytes(b"x" * (module.READ_LIMIT + 1))
    (folder / "src" / "binary.bin").write_bytes(b"\xff\xfe\x00")
    outside = tmp_path / "linked.txt"
    outside.write_text("outside\n")
    os.link(outside, folder / "src" / "hard.txt")
    toolset = worktree_toolset(folder, write_scope=["src"])
    replies = run_tools(
        toolset,
        ("read_file", {"path": "src/fifo"}),
        ("read_file", {"path": "src"}),
        ("read_file", {"path": "src/big.txt"}),
        ("read_file", {"path": "src/binary.bin"}),
        ("write_file", {"path": "src/fifo", "content": "x"}),
        ("write_file", {"path": "src/hard.txt", "content": "x"}),
        ("write_file", {"path": "src", "content": "x"}),
        ("delete_file", {"path": "src"}),
        ("read_file", {"path": "src/hard.txt"}),
    )
    assert error_of(replies[0]) == "refused: src/fifo is not a regular file"
    assert error_of(replies[1]) == "refused: src is a folder: use list_files"
    assert (
        error_of(replies[2])
        == f"refused: src/big.txt is larger than {module.READ_LIMIT} bytes: not read"
    )
    assert error_of(replies[3]) == "refused: src/binary.bin is not UTF-8 text: not read"
    assert error_of(replies[4]) == "refused: src/fifo is not a regular file"
    assert error_of(replies[5]) == "refused: src/hard.txt has other hard links: not written"
    assert error_of(replies[6]) == "refused: src is a folder"
    assert error_of(replies[7]) == "refused: src is a folder: delete its files one by one"
    assert replies[8] == "outside\n"  # reading is harmless: it is the worktree's own file
    assert outside.read_text() == "outside\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_device_is_never_read_or_written(folder: Path) -> None:
    os.mknod(folder / "src" / "zero", 0o666 | 0o020000, os.makedev(1, 5))
    toolset = worktree_toolset(folder, write_scope=["src"])
    replies = run_tools(
        toolset,
        ("read_file", {"path": "src/zero"}),
        ("write_file", {"path": "src/zero", "content": "x"}),
    )
    assert error_of(replies[0]) == "refused: src/zero is not a regular file"
    assert error_of(replies[1]) == "refused: src/zero is not a regular file"


def test_writes_make_folders_and_are_bounded(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "WRITE_LIMIT", 4)
    toolset = worktree_toolset(folder, write_scope=["src/new/**"])
    replies = run_tools(
        toolset,
        ("write_file", {"path": "src/new/deep/x.txt", "content": "1234"}),
        ("write_file", {"path": "src/new/y.txt", "content": "12345"}),
    )
    assert replies[0] == "wrote src/new/deep/x.txt (4 bytes)"
    assert error_of(replies[1]) == (
        "refused: src/new/y.txt: content is larger than 4 bytes: not written"
    )
    # A lone surrogate (JSON can spell one) never reaches a file; called directly, as
    # pydantic-ai's own messages cannot carry one to the tool.
    write: Any = toolset.tools["write_file"].function
    with pytest.raises(pydantic_ai.ToolFailed, match="content is not valid Unicode text"):
        write("src/new/z.txt", "\ud800")
    assert (folder / "src" / "new" / "deep" / "x.txt").read_text() == "1234"
    assert not (folder / "src" / "new" / "y.txt").exists()


def test_listing_hides_git_and_stops_at_the_limit(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder / "src" / "link").symlink_to("/etc")
    (folder / "odd\nname").write_text("")
    (folder / "empty").mkdir()
    (folder / "docs" / "h.md").write_text("")
    toolset = worktree_toolset(folder)
    listed = run_tools(
        toolset,
        ("list_files", {"path": "."}),
        ("list_files", {"path": "./src/"}),
        ("list_files", {"path": "empty"}),
    )
    assert listed[0] == "docs/g.md\ndocs/h.md\nsrc/a.py\nsrc/link (symbolic link, not followed)"
    assert listed[1] == "src/a.py\nsrc/link (symbolic link, not followed)"
    assert listed[2] == "(empty)"
    monkeypatch.setattr(module, "LIST_LIMIT", 1)
    cut = run_tools(toolset, ("list_files", {"path": ""}), ("list_files", {"path": "src"}))
    assert cut[0] == "docs/g.md\n[... more entries: only the first 1 are listed]"
    assert cut[1] == "src/a.py\n[... more entries: only the first 1 are listed]"


def test_a_read_only_toolset_offers_no_writes(folder: Path) -> None:
    script = Script("done")
    run_once(Agent(FunctionModel(script)), worktree_toolset(folder))
    assert script.tools == [["read_file", "list_files"]]


# ---------------------------------------------------------------------------------------------
# Failures of the run: each is that candidate's reject


def failing_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    message = "the provider said no"
    raise RuntimeError(message)


async def hanging_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    await anyio.sleep_forever()
    raise AssertionError  # pragma: no cover - never woken


@pytest.mark.parametrize(
    ("make", "options", "reason"),
    [
        (lambda: Agent(FunctionModel(failing_model)), {}, "RuntimeError: the provider said no"),
        (
            lambda: Agent(FunctionModel(Script([("list_files", {})], [("list_files", {})], "x"))),
            {"usage_limits": UsageLimits(request_limit=1)},
            "UsageLimitExceeded",
        ),
        (lambda: Agent(FunctionModel(hanging_model)), {"timeout": 0.05}, "RunTimedOut"),
        (Agent, {}, "UserError"),
    ],
    ids=["model-error", "usage-limit", "timeout", "no-model"],
)
async def test_a_failed_run_is_a_reject(
    repo: Path, make: Callable[[], Agent[None, str]], options: dict[str, Any], reason: str
) -> None:
    coder = PydanticAICoder(repo, make(), **options)
    unit = mesh.Unit(id="u", objective="o", write_scope=("src",))
    answer = mesh.parse_worker_result(await coder(request_for(unit)))
    assert answer.decision is mesh.Decision.REJECT
    assert reason in (answer.notes or "")
    assert (answer.notes or "").startswith("pydantic-ai run failed: ")


async def test_failure_facts_reach_the_ledger(repo: Path, tmp_path: Path) -> None:
    """A failed run's call carries the error, a finished one its refused tool calls."""
    script = Script([("read_file", {"path": "/etc/passwd"})], "y" * 5000)
    plan = [mesh.Unit(id="u", objective="o", write_scope=("src",), proof_command="true")]
    finished = await mesh.run_async(
        plan,
        repo=repo,
        out=tmp_path / "out",
        roles=mesh.Roles(
            coder=PydanticAICoder(repo, coder_agent(script)),
            reducer=PydanticAICoder(repo, Agent(FunctionModel(failing_model))),
        ),
    )
    calls = [event["data"] for event in ledger(finished) if event["event"] == "adapter_call"]
    facts = [call["facts"] for call in calls if "facts" in call]
    errors = [fact for fact in facts if "error" in fact]
    assert errors
    assert "the provider said no" in errors[0]["error"]
    refused = [fact for fact in facts if fact.get("refused_tool_calls") == 1]
    assert refused


async def test_long_final_messages_are_cut_in_the_notes(repo: Path) -> None:
    script = Script([("write_file", {"path": "src/x.txt", "content": "x"})], "y" * 5000)
    coder = PydanticAICoder(repo, coder_agent(script))
    unit = mesh.Unit(id="u", objective="o", write_scope=("src",))
    answer = mesh.parse_worker_result(await coder(request_for(unit)))
    assert answer.notes == "y" * 3999 + "…"


async def test_cancelling_the_call_ends_the_run(repo: Path) -> None:
    """A cancelled coder call cancels the agent's run and waits for it (on either backend)."""
    started = threading.Event()
    ended = threading.Event()

    async def waiting(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            ended.set()
        raise AssertionError  # pragma: no cover - never woken

    coder = PydanticAICoder(repo, Agent(FunctionModel(waiting)))
    unit = mesh.Unit(id="u", objective="o", write_scope=("src",))
    async with anyio.create_task_group() as group:
        group.start_soon(coder, request_for(unit))
        # Bounded only so that a run that never starts fails instead of hanging.
        assert await anyio.to_thread.run_sync(started.wait, 60)
        group.cancel_scope.cancel()
    assert ended.is_set()


# ---------------------------------------------------------------------------------------------
# The fixer's typed verdict


def verdict_model(
    *answers: dict[str, object], told: list[str] | None = None
) -> Callable[..., ModelResponse]:
    """A fixer model answering ``answers`` in turn; the corrections it reads go to ``told``."""

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        for part in messages[-1].parts:
            # pydantic-ai returns a rejected output to the model as a "retried" tool result.
            if isinstance(part, ToolReturnPart) and told is not None:
                told.append(part.model_response_str())
        turn = sum(isinstance(message, ModelResponse) for message in messages)
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, answers[turn])])

    return answer


UNIT = mesh.Unit(id="a", objective="define A", write_scope=("src",))
PATCH = "--- a/src/a.py\n+++ b/src/a.py\n@@ -0,0 +1 @@\n+A = 1\n"


async def test_the_fixer_selects_a_proven_candidate() -> None:
    fixer = PydanticAIFixer(
        Agent(
            FunctionModel(
                verdict_model({"verdict": "select", "candidate": "a-coder-2", "reasons": ["ok"]})
            )
        )
    )
    answer = await fixer(adjudication(UNIT, PATCH, PATCH))
    assert answer.decision is mesh.Decision.ACCEPTED
    assert answer.selected_candidate == "a-coder-2"
    assert answer.notes == "ok"


async def test_the_agents_own_spans_nest_under_the_callers(anyio_backend: str) -> None:
    """On trio too, where the agent runs on mesh's own asyncio loop: the trace goes with it."""
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415 - a tracing test
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )
    from pydantic_ai.models.instrumented import (  # noqa: PLC0415
        InstrumentationSettings,
        InstrumentedModel,
    )

    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    model = FunctionModel(verdict_model({"verdict": "select", "candidate": "a-coder-1"}))
    settings = InstrumentationSettings(tracer_provider=provider)
    fixer = PydanticAIFixer(Agent(InstrumentedModel(model, settings)))
    with provider.get_tracer("test").start_as_current_span("mesh.call") as call:
        await fixer(adjudication(UNIT, PATCH))
    agents = [s for s in exporter.get_finished_spans() if s.name != "mesh.call"]
    assert agents
    roots = [
        s
        for s in agents
        if s.parent is None
        or s.parent.span_id not in {a.context.span_id for a in agents if a.context}
    ]
    assert [call.get_span_context().span_id] * len(roots) == [
        s.parent.span_id for s in roots if s.parent
    ]


async def test_the_fixer_asks_for_rework_or_blocks() -> None:
    rework = PydanticAIFixer(
        Agent(FunctionModel(verdict_model({"verdict": "rework", "reasons": ["too big"]})))
    )
    blocked = PydanticAIFixer(
        Agent(FunctionModel(verdict_model({"verdict": "blocked_safety", "reasons": ["unsafe"]})))
    )
    request = adjudication(UNIT, PATCH)
    reworked = await rework(request)
    stopped = await blocked(request)
    assert reworked.decision is mesh.Decision.REWORK_REQUIRED
    assert "too big" in (reworked.notes or "")
    assert stopped.decision is mesh.Decision.BLOCKED_SAFETY


async def test_an_unproven_selection_is_invalid_output() -> None:
    fixer = PydanticAIFixer(
        Agent(FunctionModel(verdict_model({"verdict": "select", "candidate": "a-reducer-3"})))
    )
    with pytest.raises(mesh.InvalidOutputSchema, match="'a-reducer-3' is not a proven candidate"):
        await fixer(adjudication(UNIT, PATCH))


async def test_a_broken_verdict_goes_back_to_the_model_then_is_invalid() -> None:
    """The typed output's rules are checked by pydantic-ai: the model is told, then gives up."""
    told: list[str] = []
    answers: list[dict[str, object]] = [
        {"verdict": "select"},
        {"verdict": "select", "candidate": "a-coder-1"},
    ]
    corrected = PydanticAIFixer(Agent(FunctionModel(verdict_model(*answers, told=told))))
    answer = await corrected(adjudication(UNIT, PATCH))
    assert answer.selected_candidate == "a-coder-1"
    assert len(told) == 1
    assert "a select verdict names the candidate" in told[0]
    wrong: list[dict[str, object]] = [{"verdict": "rework", "candidate": "x"}] * 5
    stubborn = PydanticAIFixer(Agent(FunctionModel(verdict_model(*wrong))))
    with pytest.raises(mesh.InvalidOutputSchema, match="pydantic-ai verdict"):
        await stubborn(adjudication(UNIT, PATCH))


async def test_a_failed_fixer_run_is_the_fixers_error() -> None:
    fixer = PydanticAIFixer(Agent(FunctionModel(failing_model)))
    with pytest.raises(AgentFailed, match="RuntimeError: the provider said no"):
        await fixer(adjudication(UNIT, PATCH))


async def test_the_fixer_may_read_the_code_around(repo: Path) -> None:
    """With workspaces, the fixer reads the base; it is offered no tool that writes."""
    script = Script([("read_file", {"path": "src/app.py"})], "unused")
    select = verdict_model({}, {"verdict": "select", "candidate": "a-coder-1"})

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        # First the scripted read, then (having seen its result) the verdict.
        reply = script(messages, info)
        return reply if len(messages) == 1 else select(messages, info)

    fixer = PydanticAIFixer(Agent(FunctionModel(model)), workspaces=repo)
    assert fixer.preflight() == []
    answer = await fixer(adjudication(UNIT, PATCH))
    assert answer.selected_candidate == "a-coder-1"
    assert script.said("read_file") == ["def main():\n    return 1\n"]
    assert script.tools[0] == ["read_file", "list_files"]


def test_the_verdict_output_checks_itself() -> None:
    assert VerdictOutput(verdict="rework", reasons=("x",)).to_verdict() == mesh.agents.Verdict(
        verdict="rework", reasons=("x",)
    )
    with pytest.raises(ValueError, match="a select verdict names the candidate"):
        VerdictOutput(verdict="select")


async def test_testmodel_answers_the_typed_output() -> None:
    """pydantic-ai's TestModel fills the output schema with its own (valid) values."""
    model = test_models.TestModel(
        custom_output_args={"verdict": "rework", "reasons": ["from TestModel"]}
    )
    answer = await PydanticAIFixer(Agent(model))(adjudication(UNIT, PATCH))
    assert answer.decision is mesh.Decision.REWORK_REQUIRED


# ---------------------------------------------------------------------------------------------
# Installation and checks before a run


def test_missing_pydantic_ai_names_the_extra(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydantic_ai", None)
    for make in (lambda: PydanticAICoder(repo, None), lambda: PydanticAIFixer(None)):  # type: ignore[arg-type]
        with pytest.raises(AgentUnavailable) as caught:
            make()
        assert caught.value.hint == "install it: pip install 'mesh[pydantic-ai]'"
        assert caught.value.code is mesh.FailureCode.TOOLING_UNAVAILABLE


def test_preflight(repo: Path) -> None:
    agent = Agent(FunctionModel(failing_model))
    assert PydanticAICoder(repo, agent).preflight() == []
    assert PydanticAIFixer(agent).preflight() == []
    closed = mesh.WorkspaceManager(repo)
    assert PydanticAICoder(closed, agent).preflight()


def test_folders_no_deeper_than_the_limit(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tree past the recursion limit is never the agent's to make, nor walked to the end."""
    monkeypatch.setattr(module, "DEPTH_LIMIT", 3)
    (folder / "src" / "b" / "c" / "d").mkdir(parents=True)
    (folder / "src" / "b" / "c" / "d" / "e.py").write_text("")
    toolset = worktree_toolset(folder, write_scope=("src/",))
    # Calls of one turn run at once: the listing gets a turn of its own, after the writes.
    results = run_tools(
        toolset,
        ("write_file", {"path": "src/b/x.py", "content": "X = 1\n"}),
        ("write_file", {"path": "src/b/c/y.py", "content": "Y = 1\n"}),
    )
    results += run_tools(toolset, ("list_files", {"path": "src"}))
    assert "deeper" not in results[0]
    assert (folder / "src" / "b" / "x.py").read_text() == "X = 1\n"
    assert "src/b/c/y.py is deeper than 3 folders: not changed" in results[1]
    assert not (folder / "src" / "b" / "c" / "y.py").exists()
    assert results[2] == "src/a.py\nsrc/b/c/d/ (deeper than 3 folders, not listed)\nsrc/b/x.py"
