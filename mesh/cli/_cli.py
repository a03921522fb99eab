"""
The ``mesh`` console script: a thin layer over `mesh.commands`.

Commands and flags are declared as data (`Command`, `Flag`) so the argparse
parser, the help texts and the completion scripts come from one table. Every
error is one line, ``error: <Kind>: <message>``, exit 1; an unknown command
prints usage and exits 2.

Start-up matters for a command run thousands of times by scripts: this module
loads the standard library and attrs only, and each command's function loads
what it needs when it runs (``mesh --help`` never imports the engine).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO

from .._version import __version__
from ..contracts._enums import Lane
from ..contracts._errors import MeshError
from ._completion import HELP_FLAGS, SHELLS, completion_script
from ._options import Command, Flag, boolean, choice, finite, seconds, whole
from ._parser import build_parser, did_you_mean, parse_options

# The agents `mesh.agents.agent_cli` knows (kept here: the command line starts without them).
AGENT_NAMES: Final = ("codex", "claude", "aider")

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ._options import CommandResult
    from ._run_command import RunReport

__all__ = ["main"]

EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
_HELP_WORDS: Final = (*HELP_FLAGS, "help")
_VERSION_WORDS: Final = ("--version", "-V")


def _lazy(name: str) -> Callable[..., CommandResult]:
    """``mesh.commands.<name>``, imported when the command runs rather than at start-up."""

    def call(**options: object) -> CommandResult:
        from .. import commands  # noqa: PLC0415 - its imports cost more than `mesh --help` may

        function: Callable[..., CommandResult] = getattr(commands, name)
        return function(**options)

    return call


def _budget(*, output_format: str = "json", **options: Any) -> dict[str, object] | str:  # noqa: ANN401
    from ..planning._budget import budget_policy  # noqa: PLC0415 - loaded when the command runs

    decision = budget_policy(**options)
    return decision.to_text() if output_format == "text" else decision.to_document()


_PCT = "PERCENT"
_BUDGET_INPUTS: Final = (
    Flag(
        name="--remaining-five-hour",
        parse=finite,
        required=True,
        metavar=_PCT,
        help="percent of the 5-hour budget left (clamped to 0..100)",
    ),
    Flag(
        name="--remaining-weekly",
        parse=finite,
        required=True,
        metavar=_PCT,
        help="percent of the weekly budget left (clamped to 0..100)",
    ),
    Flag(
        name="--max-threads",
        parse=whole(0),
        metavar="N",
        help="most units active at once (default 12; 0 counts as 1)",
    ),
)
_WAVE_HISTORY: Final = (
    Flag(
        name="--previous-triplet-width",
        parse=whole(),
        metavar="W",
        help="candidate width of the previous wave (default 3, clamped to 1..3)",
    ),
    Flag(
        name="--prior-wave-instability",
        parse=boolean,
        metavar="BOOL",
        help="whether the previous wave was unstable: true/false/1/0 (default false)",
    ),
    Flag(
        name="--consecutive-unstable-waves",
        parse=whole(0),
        metavar="N",
        help="unstable waves in a row (default 0)",
    ),
    Flag(
        name="--consecutive-clean-waves",
        parse=whole(0),
        metavar="N",
        help="clean waves in a row (default 0)",
    ),
)

_HELPER_COMMANDS: Final[Mapping[str, Command]] = {
    command.name: command
    for command in (
        Command(
            name="budget",
            summary="compute the active-unit clamp from 5-hour and weekly remaining budget",
            flags=(
                *_BUDGET_INPUTS,
                Flag(
                    name="--linear-start-threshold",
                    parse=finite,
                    metavar=_PCT,
                    help="percent at and below which the linear clamp starts (default 33)",
                ),
                Flag(
                    name="--single-agent-threshold",
                    parse=finite,
                    metavar=_PCT,
                    help="percent at and below which one unit runs at a time (default 10)",
                ),
                Flag(
                    name="--scaleout-threshold",
                    parse=finite,
                    metavar=_PCT,
                    help="percent above which scale-out is allowed (default 25)",
                ),
                *_WAVE_HISTORY,
                Flag(
                    name="--format",
                    parse=choice("json", "text"),
                    metavar="json|text",
                    dest="output_format",
                    help="output format (default json)",
                ),
            ),
            run=_budget,
            example="mesh budget --remaining-five-hour 40 --remaining-weekly 28 --max-threads 12",
        ),
        Command(
            name="replay",
            summary="preflight simulation of budget and batch behaviour",
            flags=(
                *_BUDGET_INPUTS,
                *_WAVE_HISTORY,
                Flag(
                    name="--ready-units",
                    parse=whole(0),
                    required=True,
                    metavar="N",
                    help="units ready to run",
                ),
            ),
            run=_lazy("replay"),
            example=(
                "mesh replay --remaining-five-hour 72 --remaining-weekly 55 "
                "--max-threads 12 --ready-units 24"
            ),
        ),
        Command(
            name="plan_sync",
            summary="normalize a plan JSON payload and count its steps by status",
            flags=(
                Flag(
                    name="--input-json",
                    required=True,
                    metavar="PATH",
                    help="update_plan JSON: an array of steps, or {plan: [...]}",
                ),
            ),
            run=_lazy("plan_sync"),
            example="mesh plan_sync --input-json plan.json",
        ),
        Command(
            name="slice",
            summary="produce atomic units from a plan's pending and in-progress steps",
            flags=(
                Flag(name="--input-json", required=True, metavar="PATH", help="plan JSON"),
                Flag(
                    name="--max-slices",
                    parse=whole(0),
                    metavar="N",
                    help="keep only the first N units (default: no limit)",
                ),
                Flag(
                    name="--output-json",
                    metavar="PATH",
                    help="also write the document there (folders are created)",
                ),
            ),
            run=_lazy("slice"),
            example="mesh slice --input-json plan.json --output-json units.json",
        ),
        Command(
            name="wave",
            summary="emit a CSV batch for the currently ready units",
            flags=(
                Flag(
                    name="--units-json",
                    required=True,
                    metavar="PATH",
                    help="units JSON as slice writes it",
                ),
                Flag(
                    name="--csv-path",
                    required=True,
                    metavar="PATH",
                    help="where to write the batch CSV",
                ),
                Flag(
                    name="--max-active",
                    parse=whole(1),
                    metavar="N",
                    help="most units in the wave (default 1)",
                ),
                Flag(
                    name="--lane",
                    parse=choice(*Lane),
                    metavar="LANE",
                    help=f"lane of the rows: {', '.join(Lane)} (default coder)",
                ),
                Flag(
                    name="--triplet-width",
                    parse=whole(1, 3),
                    metavar="W",
                    help="rows per unit, 1..3 (default 3)",
                ),
            ),
            run=_lazy("wave"),
            example="mesh wave --units-json units.json --csv-path batch.csv --max-active 4",
        ),
        Command(
            name="run_csv",
            summary="validate a batch CSV and write its output CSV, keeping paths separate",
            flags=(
                Flag(name="--csv-path", required=True, metavar="IN", help="batch CSV to validate"),
                Flag(
                    name="--output-csv-path",
                    required=True,
                    metavar="OUT",
                    help="output CSV to write (must differ from IN)",
                ),
                Flag(
                    name="--max-concurrency",
                    parse=whole(1),
                    metavar="N",
                    help="workers available (default: the row count)",
                ),
                Flag(
                    name="--max-workers",
                    parse=whole(1),
                    metavar="N",
                    dest="max_concurrency",
                    help="alias of --max-concurrency",
                ),
                Flag(
                    name="--runnable-units",
                    parse=whole(0),
                    metavar="N",
                    help="units runnable now (default: the row count)",
                ),
                Flag(
                    name="--floor-threshold",
                    parse=whole(1),
                    metavar="N",
                    help="concurrency floor (default 3)",
                ),
                Flag(
                    name="--fail-on-floor",
                    is_switch=True,
                    help="fail, writing nothing, when the floor gate fails",
                ),
                Flag(
                    name="--deps-csv",
                    metavar="PATH",
                    help="deps CSV (id,depends_on,interactive_lead) to validate",
                ),
            ),
            run=_lazy("run_csv"),
            example="mesh run_csv --csv-path batch.csv --output-csv-path batch.out.csv",
            conflicts=(("--max-concurrency", "--max-workers"),),
        ),
        Command(
            name="ledger",
            summary="filter a ledger payload to the events that occurred, or show a run's ledger",
            positional=Flag(
                name="run", metavar="RUN", help="a stored run: its folder, store or id"
            ),
            flags=(
                Flag(
                    name="--input-json",
                    metavar="PATH",
                    help="a JSON object of ledger fields (instead of RUN)",
                ),
                Flag(
                    name="--runs",
                    metavar="DIR",
                    help="where run ids are looked up (default mesh-runs)",
                ),
            ),
            run=_lazy("ledger"),
            example="mesh ledger --input-json ledger.json",
        ),
    )
}
_REPOSITORY_RUN: Final = (
    Flag(
        name="--remaining-five-hour",
        parse=finite,
        metavar=_PCT,
        help="percent of the 5-hour budget left (default 100)",
    ),
    Flag(
        name="--remaining-weekly",
        parse=finite,
        metavar=_PCT,
        help="percent of the weekly budget left (default 100)",
    ),
    Flag(name="--max-threads", parse=whole(0), metavar="N", help="most units at once (default 12)"),
)
_RUN: Final = Flag(
    name="run", metavar="RUN", required=True, help="a stored run: its folder, store or id"
)
_RUNS: Final = Flag(
    name="--runs", metavar="DIR", help="where run ids are looked up (default mesh-runs)"
)
_RAY: Final = Flag(
    name="--ray",
    metavar="ADDRESS",
    help="run coders, applier, prover and fixer as Ray tasks: local (a Ray started here), "
    "auto (this machine's cluster) or ray://HEAD:10001; needs mesh[ray]",
)
# The names `mesh.cli._live_view.VIEWS` has (kept here: the command line starts without rich).
VIEW_NAMES: Final = ("auto", "live", "lines", "quiet")
_VIEW: Final = Flag(
    name="--view",
    parse=choice(*VIEW_NAMES),
    metavar="MODE",
    help="how the run is shown on stderr: live (units in flight, stages, failures), "
    "lines (one per event), quiet; default auto: live on a terminal, else lines",
)
_RUN_COMMANDS: Final = (
    Command(
        name="run",
        summary="run a plan on a git repository: worktrees, proofs, quorum, delivery",
        positional=Flag(name="plan", metavar="PLAN", required=True, help="update_plan JSON file"),
        flags=(
            Flag(name="--repo", metavar="PATH", help="the git repository (default .)"),
            Flag(
                name="--coder-command",
                metavar="TEMPLATE",
                help="agent command run in a scratch worktree per candidate; "
                "{objective}, {unit_id}, {write_scope}, ... are filled in, shell-quoted "
                "(this or --agent)",
            ),
            Flag(
                name="--agent",
                parse=choice(*AGENT_NAMES),
                metavar="AGENT",
                help="a real agent CLI as the coders: codex, claude or aider (installed; "
                "this or --coder-command)",
            ),
            Flag(
                name="--fixer-agent",
                parse=choice(*AGENT_NAMES),
                metavar="AGENT",
                help="an agent CLI, read-only, judges the proven candidates (default: mechanical)",
            ),
            Flag(
                name="--agent-model",
                metavar="MODEL",
                help="the model --agent and --fixer-agent use (default: the agent's own)",
            ),
            Flag(
                name="--budget-from-agent",
                is_switch=True,
                help="read the 5-hour and weekly budget from the agent's own rate-limit "
                "account during the run (--agent codex)",
            ),
            Flag(
                name="--reducer-command",
                metavar="TEMPLATE",
                help="command for the third candidate (default: the coder command)",
            ),
            Flag(
                name="--proof-command",
                metavar="COMMAND",
                help="proof for steps without a proof_command",
            ),
            Flag(
                name="--delivery",
                parse=choice("patch_first", "commit_first"),
                metavar="MODE",
                help="patch_first (patches in the output folder) or commit_first (git am)",
            ),
            Flag(
                name="--branch",
                metavar="NAME",
                help="commit_first target (default: the checked-out branch)",
            ),
            Flag(
                name="--out",
                metavar="DIR",
                help="ledger, plan state and patches (default mesh-runs/RUN_ID)",
            ),
            *_REPOSITORY_RUN,
            Flag(
                name="--proof-timeout",
                parse=seconds,
                metavar="SECONDS",
                help="per proof run (default 600)",
            ),
            Flag(
                name="--call-timeout",
                parse=seconds,
                metavar="SECONDS",
                help="per adapter call, coders included (default 3600)",
            ),
            _RAY,
            Flag(
                name="--sandbox",
                is_switch=True,
                help="run coder commands and proofs in bubblewrap: the system read-only, "
                "only their workspace writable (needs bwrap)",
            ),
            Flag(
                name="--no-network",
                is_switch=True,
                help="with --sandbox: no network in the sandbox, loopback only",
            ),
            Flag(
                name="--estimates-from",
                metavar="RUN",
                help="a past run (folder, store or id): its units' durations, matched by step "
                "text, order which ready units start first",
            ),
            _VIEW,
            Flag(
                name="--watch-plan",
                is_switch=True,
                help="read PLAN again whenever it is saved: steps added, edited before they "
                "start, or left out (cancelled) change the run",
            ),
        ),
        run=_lazy("run"),
        example="mesh run plan.json --repo . --agent codex",
    ),
    Command(
        name="demo",
        summary="create a small repository and run a plan on it for real",
        flags=(
            Flag(
                name="--folder",
                metavar="DIR",
                help="where to create it, kept afterwards (default: a temporary folder)",
            ),
            _VIEW,
        ),
        run=_lazy("demo"),
        example="mesh demo",
    ),
    Command(
        name="resume",
        summary="continue a stopped `mesh run` from its run store",
        positional=_RUN,
        flags=(_RUNS, _RAY, _VIEW),
        run=_lazy("resume"),
        example="mesh resume mesh-runs/4f2a9c1e0b7d",
    ),
    Command(
        name="status",
        summary="a stored run's units by state",
        positional=_RUN,
        flags=(_RUNS,),
        run=_lazy("status"),
        example="mesh status 4f2a9c1e0b7d",
    ),
    Command(
        name="report",
        summary="a stored run as one self-contained HTML page: timeline, concurrency, ledger",
        positional=_RUN,
        flags=(
            Flag(
                name="--output",
                short="-o",
                required=True,
                metavar="HTML",
                help="where to write the page",
            ),
            _RUNS,
        ),
        run=_lazy("report"),
        example="mesh report mesh-runs/4f2a9c1e0b7d -o run.html",
    ),
)


def _completion(*, shell: str) -> str:
    return completion_script(shell, COMMANDS, ALIASES, _TOP_LEVEL)


_COMPLETION: Final = Command(
    name="completion",
    summary="print a shell completion script for bash or zsh",
    positional=Flag(
        name="shell",
        metavar="SHELL",
        required=True,
        parse=choice(*SHELLS),
        help="the shell: bash or zsh",
    ),
    flags=(),
    run=_completion,
    example="mesh completion bash > ~/.local/share/bash-completion/completions/mesh",
)


def _mcp(**options: Any) -> None:  # noqa: ANN401 - the flags' parsed values
    from ..mcp import serve  # noqa: PLC0415 - loads the MCP SDK only when a server starts

    serve(**options)


_MCP: Final = Command(
    name="mcp",
    summary="serve the commands as MCP tools on stdin/stdout, for Codex, Claude Code, ...",
    flags=(
        Flag(
            name="--root",
            metavar="DIR",
            help="every path a tool is given must be inside DIR (default: the working "
            "directory); relative paths start there",
        ),
    ),
    run=_mcp,
    example="mesh mcp",
)
COMMANDS: Final[Mapping[str, Command]] = {
    **_HELPER_COMMANDS,
    **{command.name: command for command in (*_RUN_COMMANDS, _COMPLETION, _MCP)},
}
ALIASES: Final = {"plan-sync": "plan_sync", "run-csv": "run_csv"}
_TOP_LEVEL: Final = {
    **dict.fromkeys(_HELP_WORDS, "show the commands"),
    **dict.fromkeys(_VERSION_WORDS, "print the version"),
}


def usage() -> str:
    """The top-level help text."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        f"mesh {__version__}: plan-driven streaming orchestration",
        "",
        "usage: mesh COMMAND [OPTIONS]    (mesh COMMAND --help for its options)",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {command.summary}" for name, command in COMMANDS.items()),
        "",
        f"aliases: {', '.join(ALIASES)}",
        "options: -h/--help, --version",
    ]
    return "\n".join(lines) + "\n"


def command_help(command: Command) -> str:
    """The help text of one command."""
    specs = [
        (
            (f"{flag.short}, " if flag.short else "")
            + (flag.name if flag.is_switch else f"{flag.name} {flag.metavar}"),
            flag,
        )
        for flag in command.flags
    ]
    help_spec = ", ".join(HELP_FLAGS)
    width = max(len(spec) for spec in [help_spec, *(spec for spec, _ in specs)])
    argument = f" {command.positional.metavar}" if command.positional else ""
    lines = [f"usage: mesh {command.name}{argument} [OPTIONS]", "", command.summary, "", "options:"]
    for spec, flag in specs:
        marker = " (required)" if flag.required else ""
        lines.append(f"  {spec.ljust(width)}  {flag.help}{marker}")
    lines += [
        f"  {help_spec.ljust(width)}  show this help",
        "",
        f"example: {command.example}",
    ]
    return "\n".join(lines) + "\n"


def _one_line(message: str) -> str:
    return " ".join(message.split("\n")).replace("\r", " ")


def _write(stream: TextIO, content: str) -> None:
    # Encode ourselves: the console's encoding must not decide whether output is valid.
    stream.flush()
    stream.buffer.write(content.encode("utf-8", "backslashreplace"))
    stream.buffer.flush()


def _printed(result: CommandResult) -> tuple[int, str, str]:
    """What a command's result prints: text as is, a document as JSON, a run as its report."""
    if result is None:
        # The command spoke on stdout itself (`mesh mcp`: the protocol); nothing more to add.
        return 0, "", ""
    if isinstance(result, str):
        return 0, result + "\n", ""
    if isinstance(result, dict):
        # Only commands returning documents need the converter's JSON (and attrs, cattrs).
        from ..contracts._convert import dumps_json  # noqa: PLC0415

        return 0, dumps_json(result) + "\n", ""
    return _run_report(result)


def _run_report(report: RunReport) -> tuple[int, str, str]:
    outcomes = report.run.result.outcomes
    incomplete = sum(outcome.state != "completed" for outcome in outcomes)
    failure = (
        f"error: RunIncomplete: {incomplete} of {len(outcomes)} units did not complete\n"
        if report.exit_code
        else ""
    )
    return report.exit_code, report.text + "\n", failure


def run(argv: Sequence[str]) -> tuple[int, str, str]:  # noqa: PLR0911 - one return per outcome of the contract
    """Run the command line on ``argv``: ``(exit code, stdout text, stderr text)``."""
    if not argv or argv[0] in _HELP_WORDS:
        return 0, usage(), ""
    if argv[0] in _VERSION_WORDS:
        return 0, f"mesh {__version__}\n", ""
    name = ALIASES.get(argv[0], argv[0])
    command = COMMANDS.get(name)
    if command is None:
        suggestion = did_you_mean(argv[0], [*COMMANDS, *ALIASES, *_TOP_LEVEL])
        return EXIT_USAGE, "", f"error: unknown command {argv[0]!r}{suggestion}\n\n{usage()}"
    arguments = argv[1:]
    if any(word in arguments for word in HELP_FLAGS):
        return 0, command_help(command), ""
    try:
        options = parse_options(build_parser(COMMANDS, ALIASES), command, arguments)
        return _printed(command.run(**options))
    except MeshError as exc:
        hint = f"hint: {_one_line(exc.hint)}\n" if exc.hint else ""
        return EXIT_ERROR, "", f"error: {exc.kind}: {_one_line(exc.message)}\n{hint}"
    except Exception as exc:
        # A bug in mesh: still one line and no traceback, unless asked for.
        if os.environ.get("MESH_DEBUG"):
            raise
        detail = _one_line(f"{type(exc).__name__}: {exc}")
        return EXIT_ERROR, "", f"error: InternalError: {detail} (set MESH_DEBUG=1 for details)\n"


def main(argv: Sequence[str] | None = None) -> int:
    """
    Entry point of the ``mesh`` console script.

    Returns:
        0 on success, 1 on any error (one line on stderr), 2 for an unknown command.
    """
    if sys.stdout is None:
        # Started with stdout closed (`>&-`): a file the command opens would take its
        # descriptor, and whatever it or a child printed would land in that file.
        if sys.stderr is not None:
            _write(sys.stderr, "error: OutputError: stdout is closed: nothing can be printed\n")
        return EXIT_ERROR
    try:
        code, out, err = run(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt as interrupt:
        # Ctrl-C, or SIGTERM or SIGHUP during a run (`mesh.cli._stopping.Stopped`): 128 + signal.
        code = getattr(interrupt, "exit_code", 130)
        by = getattr(interrupt, "signal", None)
        out, err = "", f"error: Interrupted: stopped by {by.name if by else 'the user'}\n"
        # A run keeps its state: say how to continue it.
        if command := getattr(interrupt, "resume_command", None):
            err += f"hint: continue the run with: {_one_line(command)}\n"
    return _shown(code, out, err)


def _shown(code: int, out: str, err: str) -> int:
    """Print a command's output and errors: its exit status, or an error's when stdout fails."""
    try:
        if out:
            _write(sys.stdout, out)
    except BrokenPipeError:
        # The reader went away (`mesh ... | head`); nothing left to tell it.
        _drop_stdout()
        return EXIT_ERROR
    except OSError as exc:
        # stdout cannot take the output (`> /dev/full`: no space left): say so on stderr,
        # once, rather than a traceback when Python flushes stdout on exit.
        _drop_stdout()
        with contextlib.suppress(OSError):
            _write(sys.stderr, f"error: OutputError: cannot write to stdout: {exc.strerror}\n")
        return EXIT_ERROR
    try:
        if err:
            _write(sys.stderr, err)
    except OSError:
        # The terminal went away (closed: SIGHUP); the exit status still says what happened.
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            os.dup2(devnull, stream.fileno())
    return code


def _drop_stdout() -> None:
    """Send what stdout still holds to the null device, so exiting does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
