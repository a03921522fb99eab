"""
A picture of a run: one self-contained HTML page built from its events. Pure: no I/O.

The page has no script and no outside reference (styles inline, the charts
are HTML and SVG), so it can be mailed, archived or opened offline. It shows:

- a summary of the units by state;
- a timeline with a row per unit, labelled with its id, how it ended, the
  units it waits for and its objective (from the plan, when given). Units are
  listed failures first, in collapsed pages of ``PAGE_UNITS``: a run of ten
  thousand units is two hundred closed pages, which a browser does not lay out
  until one is opened. A unit's row opens (``<details>``, no script) onto one
  row per candidate and fixer lane and the list of its calls with their
  evidence; the first ``DETAILED_UNITS`` units listed keep that detail (fewer
  when their calls fill the page's room first), a unit lists its first and
  last calls only, and later rows cut their text shorter, which bounds the page;
- the concurrency limit and budget target, then the units in flight, each on
  its own chart and scale;
- the prose Orchestration Ledger.

Dependencies are listed on each row ("after …") rather than drawn as edges: an
edge between rows pages apart, or across thousands of rows, cannot be read.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Final

import attrs

from ..contracts._enums import Lane
from ..contracts._errors import InputError, MeshError
from ..contracts._events import LedgerEvent
from ..contracts._records import Unit
from ..contracts._text import one_line
from ._resume import resume_point
from ._summary import MetricsCollector, render_ledger, stored_count

__all__ = ["DETAILED_UNITS", "PAGE_UNITS", "prose_ledger", "render_report"]

STAGES: Final = {
    Lane.CODER: "generation",
    Lane.REDUCER: "generation",
    Lane.APPLIER: "apply",
    Lane.PROVER: "proof",
    Lane.FIXER: "adjudication",
    Lane.INTEGRATOR: "integration",
}
"""The lanes drawn on the timeline, by the stage they stand for (leases are not drawn)."""

PAGE_UNITS: Final = 100
"""Units per collapsed page of the timeline."""
DETAILED_UNITS: Final = 500
"""Units (the first listed: failures first) whose lanes and evidence the page keeps."""

_GOOD: Final = frozenset(
    {"accept", "applied", "pass", "accepted", "integrated_patch", "integrated_commit"}
)
_REFUSED: Final = frozenset({"no_diff", "reject", "rework", "deny"})
_FINISHED: Final = frozenset({"completed", "failed", "blocked"})
_ORDER: Final = ("failed", "blocked", "in_flight", "pending", "completed")
"""Unit states in the order the timeline lists them: what needs a look first."""
_STATE_LABELS: Final = {
    "failed": "failed",
    "blocked": "blocked",
    "in_flight": "in flight",
    "pending": "not started",
    "completed": "completed",
}
_COLOURS: Final = {
    "ok": "#2e9d5b",
    "refused": "#e0a526",
    "failed": "#d64545",
    "completed": "#2e9d5b",
    "blocked": "#9aa0a6",
    "in_flight": "#5b8def",
    "pending": "#d0d7de",
}
_STAGE_STYLE: Final = {
    "generation": ("#6e7781", "G"),
    "apply": ("#8250df", "A"),
    "proof": ("#0969da", "P"),
    "adjudication": ("#9a6700", "Q"),
    "integration": ("#1f2328", "I"),
}
"""A stage's colour (the bar's top band) and the letter written on its bars."""
_STAGE_NOTES: Final = {"adjudication": "adjudication (fixer quorum)"}
_OPEN_UNITS: Final = 12
"""A run of at most this many units shows every unit's lanes without a click."""
_ID_CHARS: Final = 120
_OBJECTIVE_CHARS: Final = 140
_LONG_CHARS: Final = 2000
_TITLE_CHARS: Final = 300
_CALLS_SHOWN: Final = 100
"""Calls a unit's row lists, with their evidence: the first and last half of that."""
_LANES_SHOWN: Final = 20
"""Candidate and fixer rows a unit's row draws."""
_DETAIL_CHARS: Final = 4_000_000
"""Characters of calls and evidence past which the page details no more units."""
_LEDGER_CHARS: Final = 20_000
_LABEL_WIDTH: Final = 300
_PLOT_WIDTH: Final = 820
_WIDTH: Final = _LABEL_WIDTH + _PLOT_WIDTH + 20
_TICKS: Final = 6


@attrs.frozen(kw_only=True)
class _Call:
    candidate: str
    stage: str
    start: float
    end: float
    outcome: str
    summary: str
    evidence: str


@attrs.frozen(kw_only=True)
class _UnitView:
    id: str
    objective: str
    deps: tuple[str, ...]
    needed_by: tuple[str, ...]
    state: str
    detail: str
    start: float | None
    end: float | None
    calls: tuple[_Call, ...]


def prose_ledger(events: Iterable[LedgerEvent]) -> str:
    """
    The prose Orchestration Ledger of recorded events (empty when nothing ran).

    .. versionadded:: 0.1.0
    """
    history = list(events)
    collector = MetricsCollector()
    for event in history:
        collector.emit(event)
    outcomes = [
        checkpoint.outcome
        for checkpoint in resume_point(history).checkpoints.values()
        if checkpoint.outcome is not None
    ]
    return render_ledger(collector.metrics(), outcomes).rstrip("\n")


def _text(value: str, limit: int = _LONG_CHARS) -> str:
    """
    Untrusted text as one bounded line of HTML text (or attribute value).

    Escaping alone keeps markup out, but a label or tooltip must also stay one
    line, without bidi controls reordering it or characters HTML forbids, and
    short enough that one huge value cannot swell the page.
    """
    return html.escape(one_line(value, limit))


def _call_outcome(event: LedgerEvent) -> str:
    if event.data.get("outcome") != "ok":
        return "failed"
    decision = event.data.get("decision")
    if decision in _GOOD:
        return "ok"
    return "refused" if decision in _REFUSED else "failed"


def _call(event: LedgerEvent, stage: str, candidate: str) -> _Call:
    duration = event.duration_ms or 0.0
    detail = event.data.get("decision") or event.data.get("outcome")
    evidence = event.data.get("evidence") or event.data.get("error") or ""
    return _Call(
        candidate=candidate,
        stage=stage,
        start=event.at - duration / 1000,
        end=event.at,
        outcome=_call_outcome(event),
        summary=f"{stage} {candidate}: {detail} in {duration:.0f} ms",
        evidence=str(evidence),
    )


@attrs.frozen(kw_only=True)
class _Facts:
    """What the events say about each unit, in the order units first appear."""

    order: list[str]
    started: dict[str, float]
    ended: dict[str, tuple[float, str, str]]
    calls: dict[str, list[_Call]]


def _facts(events: Sequence[LedgerEvent]) -> _Facts:
    facts = _Facts(order=[], started={}, ended={}, calls={})
    seen: set[str] = set()
    for event in events:
        unit_id = event.unit_id
        if unit_id is None:
            continue
        if unit_id not in seen:
            seen.add(unit_id)
            facts.order.append(unit_id)
        if event.event == "unit_started":
            facts.started.setdefault(unit_id, event.at)
        elif event.event == "unit_finished":
            state = str(event.data.get("state", "failed"))
            detail = str(event.data.get("failure_code") or state)
            # The state picks a colour and a CSS class: only a known one may.
            state = state if state in _FINISHED else "failed"
            facts.ended[unit_id] = (event.at, state, detail)
        elif event.event == "unit_blocked":
            blocked_by = f"blocked by {event.data.get('blocked_by')}"
            facts.ended[unit_id] = (event.at, "blocked", blocked_by)
        elif event.event == "adapter_call" and event.lane in STAGES and event.candidate_id:
            call = _call(event, STAGES[event.lane], event.candidate_id)
            facts.calls.setdefault(unit_id, []).append(call)
    return facts


def _units(events: Sequence[LedgerEvent], plan: Sequence[Unit]) -> list[_UnitView]:
    """Every unit of the plan and the events, failures first, then in order of appearance."""
    facts = _facts(events)
    planned = {unit.id: unit for unit in plan}
    order = list(planned) + [unit_id for unit_id in facts.order if unit_id not in planned]
    needed_by: dict[str, list[str]] = {}
    for unit in plan:
        for dep in unit.deps:
            needed_by.setdefault(dep, []).append(unit.id)
    views: list[_UnitView] = []
    for unit_id in order:
        ran = unit_id in facts.started or unit_id in facts.calls
        end, state, detail = facts.ended.get(
            unit_id, (None, "in_flight", "in flight") if ran else (None, "pending", "not started")
        )
        known = planned.get(unit_id)
        views.append(
            _UnitView(
                id=unit_id,
                objective="" if known is None else known.objective,
                deps=() if known is None else known.deps,
                needed_by=tuple(needed_by.get(unit_id, ())),
                state=state,
                detail=detail,
                start=facts.started.get(unit_id, end),
                end=end,
                calls=tuple(facts.calls.get(unit_id, ())),
            )
        )
    # sorted() is stable: within a state, units keep the order they appeared in.
    return sorted(views, key=lambda view: _ORDER.index(view.state))


class _Scale:
    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.span = max(end - start, 1e-6)

    def fraction(self, moment: float) -> float:
        # Between 0 and 1 for any recorded time; clamped (NaN to 0) so that times
        # apart by more than a float holds still draw, at the edges.
        fraction = (moment - self.start) / self.span
        return 0.0 if math.isnan(fraction) else min(max(fraction, 0.0), 1.0)

    def x(self, moment: float) -> float:
        return _LABEL_WIDTH + self.fraction(moment) * _PLOT_WIDTH

    def ticks(self) -> list[tuple[float, str]]:
        return [(i / _TICKS, f"{self.span * i / _TICKS:.1f} s") for i in range(_TICKS + 1)]


def _bar(scale: _Scale, start: float, end: float) -> str:
    """The position of a bar on a track, in percent of the track."""
    left = scale.fraction(start) * 100
    width = max(scale.fraction(end) * 100 - left, 0.2)
    return f"left:{left:.2f}%;width:{width:.2f}%"


@attrs.frozen
class _Bounds:
    """How much of a row's text the page shows: a detailed row's, or a brief row's."""

    id: int
    objective: int
    title: int
    names: int


_DETAILED: Final = _Bounds(id=_ID_CHARS, objective=_OBJECTIVE_CHARS, title=_TITLE_CHARS, names=8)
# Rows past the detailed ones are most of a huge run's page: their text is kept short,
# so that ten thousand units of long ids and objectives stay a few megabytes.
_BRIEF: Final = _Bounds(id=32, objective=80, title=80, names=2)


def _names(ids: Sequence[str], bounds: _Bounds = _DETAILED) -> str:
    shown = ", ".join(_text(unit_id, bounds.id) for unit_id in ids[: bounds.names])
    more = len(ids) - bounds.names
    return f"{shown} and {more} more" if more > 0 else shown


def _unit_bar(view: _UnitView, scale: _Scale, bounds: _Bounds) -> str:
    if view.start is None or view.end is None:
        return ""
    title = f"{view.id}: {view.detail} in {view.end - view.start:.1f} s"
    return (
        f'<i class="bar {view.state}" style="{_bar(scale, view.start, view.end)}" '
        f'title="{_text(title, bounds.title)}"></i>'
    )


def _call_line(call: _Call) -> str:
    return f"{call.summary} ({call.evidence})" if call.evidence else call.summary


def _shown_calls(calls: Sequence[_Call]) -> tuple[Sequence[_Call], Sequence[_Call]]:
    """The first and the last calls a unit's row lists: its start, and how it ended."""
    if len(calls) <= _CALLS_SHOWN:
        return calls, ()
    half = _CALLS_SHOWN // 2
    return calls[:half], calls[-half:]


def _call_item(call: _Call) -> str:
    return (
        f'<li><i class="swatch {call.outcome}"></i><b>{_text(call.summary)}</b>'
        + (f" — {_text(call.evidence)}" if call.evidence else "")
        + "</li>"
    )


def _lanes(view: _UnitView, scale: _Scale) -> str:
    if not view.calls:
        return '<p class="meta">No calls recorded.</p>'
    first, last = _shown_calls(view.calls)
    left_out = len(view.calls) - len(first) - len(last)
    lanes: dict[str, list[_Call]] = {}
    for call in (*first, *last):
        lanes.setdefault(call.candidate, []).append(call)
    rows = []
    for candidate, calls in list(lanes.items())[:_LANES_SHOWN]:
        bars = "".join(
            f'<i class="call {call.outcome} {call.stage}" '
            f'style="{_bar(scale, call.start, call.end)}" '
            f'title="{_text(_call_line(call), _TITLE_CHARS)}">'
            f"{_STAGE_STYLE[call.stage][1]}</i>"
            for call in calls
        )
        rows.append(
            f'<div class="row lane"><span class="name">{_text(candidate, _ID_CHARS)}</span>'
            f'<span class="track">{bars}</span></div>'
        )
    if len(lanes) > _LANES_SHOWN:
        rows.append(f'<p class="meta">and {len(lanes) - _LANES_SHOWN} more candidates</p>')
    # One unit may have made thousands of calls (retries, many candidates): the page
    # keeps its first and last ones; the run store keeps every call.
    gap = (
        f'<li class="meta">and {left_out} more calls: the run store has every call</li>'
        if left_out
        else ""
    )
    items = "".join(map(_call_item, first)) + gap + "".join(map(_call_item, last))
    return (
        f'{"".join(rows)}<details class="calls"><summary>{len(view.calls)} calls, with their '
        f'evidence</summary><ol class="calls">{items}</ol></details>'
    )


def _unit(view: _UnitView, scale: _Scale, *, detailed: bool, opened: bool) -> str:
    bounds = _DETAILED if detailed else _BRIEF
    after = f' <span class="deps">after {_names(view.deps, bounds)}</span>' if view.deps else ""
    objective = _text(view.objective, bounds.objective)
    detail = _text(view.detail, bounds.id)
    name = (
        f'<span class="name"><b>{_text(view.id, bounds.id)}</b> ({detail}){after}'
        f'<span class="objective">{objective}</span></span>'
    )
    facts = []
    if detailed and view.objective and objective != _text(view.objective):
        facts.append(f"<p>{_text(view.objective)}</p>")
    if view.needed_by:
        facts.append(f'<p class="deps">needed by {_names(view.needed_by, bounds)}</p>')
    body = "".join(facts)
    if detailed:
        body += _lanes(view, scale)
    else:
        body += f'<p class="meta">{len(view.calls)} calls</p>'
    return (
        f'<details class="unit {view.state}"{" open" if opened else ""}>'
        f'<summary>{name}<span class="track">{_unit_bar(view, scale, bounds)}</span></summary>'
        f'<div class="body">{body}</div></details>'
    )


def _axis(scale: _Scale) -> str:
    ticks = "".join(
        f'<span class="tick" style="left:{fraction * 100:.2f}%">{label}</span>'
        for fraction, label in scale.ticks()
    )
    return (
        f'<div class="row axis"><span class="name"></span><span class="track">{ticks}</span></div>'
    )


def _state_counts(views: Sequence[_UnitView]) -> dict[str, int]:
    counts = dict.fromkeys(_ORDER, 0)
    for view in views:
        counts[view.state] += 1
    return counts


def _counts(views: Sequence[_UnitView]) -> str:
    counts = _state_counts(views)
    return ", ".join(f"{n} {_STATE_LABELS[state]}" for state, n in counts.items() if n)


def _timeline(views: Sequence[_UnitView], scale: _Scale) -> str:
    opened = len(views) <= _OPEN_UNITS
    pages = []
    detailed = spent = 0
    for first in range(0, len(views), PAGE_UNITS):
        page = views[first : first + PAGE_UNITS]
        rows = []
        for view in page:
            # Lanes and evidence for every unit of a huge run would swell the page past
            # use; the units listed first (failures first) are the ones read. Detailed
            # units are a prefix of the list: once one is not, none after it is.
            detail = detailed < DETAILED_UNITS and spent < _DETAIL_CHARS
            row = _unit(view, scale, detailed=detail, opened=opened)
            if detail:
                detailed, spent = detailed + 1, spent + len(row)
            rows.append(row)
        note = (
            f'<p class="meta">The page keeps the calls of the first {detailed} units '
            "listed: the run store has every call.</p>"
            if first + len(page) > detailed
            else ""
        )
        pages.append(
            f'<details class="page"{" open" if first == 0 else ""}><summary>'
            f"Units {first + 1} to {first + len(page)} of {len(views)}: {_counts(page)}</summary>"
            f'<div class="timeline">{_axis(scale)}{"".join(rows)}</div>{note}</details>'
        )
    return "".join(pages) or '<p class="meta">No units.</p>'


def _series(events: Sequence[LedgerEvent]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {"limit": [], "target": [], "in flight": []}
    running: set[str] = set()
    for event in events:
        target, limit = (
            stored_count(event.data.get("target")),
            stored_count(event.data.get("limit")),
        )
        if event.event == "budget_read" and target is not None:
            series["target"].append((event.at, float(target)))
        elif event.event == "concurrency_changed" and limit is not None:
            series["limit"].append((event.at, float(limit)))
        elif event.event in {"unit_started", "unit_finished"}:
            # A set, not a counter: a unit started again on a resume is in flight once.
            if event.event == "unit_started":
                running.add(str(event.unit_id))
            else:
                running.discard(str(event.unit_id))
            series["in flight"].append((event.at, float(len(running))))
    return series


def _steps(
    points: Sequence[tuple[float, float]], scale: _Scale, end: float
) -> list[tuple[float, float]]:
    """
    A step line through the points (at least one), at most four corners per pixel column.

    Ten thousand units are twenty thousand changes in flight; the chart
    keeps, per column, the value entering it, its highest and lowest, and the
    value leaving it: the same picture at a bounded size.
    """
    corners: list[tuple[float, float]] = []
    column: list[float] = []
    column_x = round(scale.x(points[0][0]))
    entering: float | None = None
    for moment, value in points:
        x = round(scale.x(moment))
        if x != column_x:
            corners.extend(_column(column_x, column, entering))
            column_x, column, entering = x, [], corners[-1][1]
        column.append(value)
    corners.extend(_column(column_x, column, entering))
    corners.append((scale.x(end), corners[-1][1]))
    return corners


def _column(x: float, values: Sequence[float], entering: float | None) -> list[tuple[float, float]]:
    chosen = [entering] if entering is not None else []
    chosen += [max(values), min(values), values[-1]]
    corners: list[tuple[float, float]] = []
    for value in chosen:
        if not corners or corners[-1][1] != value:
            corners.append((x, value))
    return corners


_SERIES_COLOURS: Final = {"limit": "#d64545", "target": "#5b8def", "in flight": "#2e9d5b"}


def _chart(
    series: dict[str, list[tuple[float, float]]], scale: _Scale, end: float, *, name: str, unit: str
) -> str:
    top = max([value for points in series.values() for _, value in points] + [1.0])
    height = 100

    def y(value: float) -> float:
        return height - value / top * (height - 10)

    grid = "".join(
        f'<line x1="{_LABEL_WIDTH + fraction * _PLOT_WIDTH:.1f}" y1="0" '
        f'x2="{_LABEL_WIDTH + fraction * _PLOT_WIDTH:.1f}" y2="{height}" class="grid"/>'
        f'<text x="{_LABEL_WIDTH + fraction * _PLOT_WIDTH:.1f}" y="{height + 14}" class="tick">'
        f"{label}</text>"
        for fraction, label in scale.ticks()
    )
    parts = [
        (
            f'<svg id="{name}" width="{_WIDTH}" height="{height + 40}" role="img" '
            f'aria-label="{unit} over time">'
        ),
        grid,
        f'<line x1="{_LABEL_WIDTH}" y1="0" x2="{_LABEL_WIDTH}" y2="{height}" class="axis"/>',
        f'<text x="{_LABEL_WIDTH - 6}" y="{y(top) + 4:.1f}" class="label">{top:.0f}</text>',
        f'<text x="{_LABEL_WIDTH - 6}" y="{height}" class="label">0</text>',
        f'<text x="{_LABEL_WIDTH - 40}" y="{height / 2:.0f}" class="label unit">{unit}</text>',
    ]
    legend = []
    for label, points in series.items():
        if not points:
            continue
        colour = _SERIES_COLOURS[label]
        corners = " ".join(f"{x:.1f},{y(value):.1f}" for x, value in _steps(points, scale, end))
        parts.append(
            f'<polyline points="{corners}" fill="none" stroke="{colour}" '
            f'stroke-width="2" class="series"><title>{label}</title></polyline>'
        )
        legend.append(f'<span><i style="background:{colour}"></i>{label}</span>')
    parts.append("</svg>")
    return f'<p class="legend-row">{"".join(legend)}</p>{"".join(parts)}'


_STAGE_CSS: Final = "".join(
    f".call.{stage} {{ border-top-color: {colour}; }} i.stage-{stage} {{ background: {colour}; }}"
    for stage, (colour, _) in _STAGE_STYLE.items()
)
_STYLE: Final = f"""
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1f2328; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
h2 {{ font-size: 16px; margin: 24px 0 8px; }}
.meta {{ color: #59636e; }}
.legend-row span {{ display: inline-block; margin-right: 14px; }}
.legend-row i, i.swatch {{ display: inline-block; width: 12px; height: 12px; margin-right: 4px;
  vertical-align: -2px; border-radius: 2px; font: 600 9px/12px system-ui, sans-serif;
  color: #fff; text-align: center; font-style: normal; }}
table.summary {{ border-collapse: collapse; }}
table.summary td, table.summary th {{ padding: 2px 10px; text-align: center; }}
table.summary td.n {{ font-variant-numeric: tabular-nums; }}
details.calls {{ margin: 2px 0 4px 28px; font-size: 12px; }}
details.calls > summary {{ cursor: pointer; color: #59636e; }}
details.page {{ margin: 6px 0; }}
details.page > summary {{ cursor: pointer; font-weight: 600; }}
.timeline {{ width: {_WIDTH}px; }}
.row, details.unit > summary {{ display: flex; align-items: stretch; min-height: 18px; }}
.row .name, summary .name {{ width: {_LABEL_WIDTH - 12}px; padding-right: 12px; flex: none;
  overflow: hidden;
  white-space: nowrap; text-overflow: ellipsis; font-size: 12px; }}
.row .track, summary .track {{ position: relative; width: {_PLOT_WIDTH}px; flex: none;
  background-image: linear-gradient(to right, #d0d7de 1px, transparent 1px);
  background-size: {_PLOT_WIDTH / _TICKS:.2f}px 100%; }}
details.unit > summary {{ cursor: pointer; border-top: 1px solid #eaeef2; padding: 1px 0; }}
details.unit > summary::before {{ content: "\\25b8"; width: 12px; flex: none; color: #59636e; }}
details.unit[open] > summary::before {{ content: "\\25be"; }}
details.unit > summary .name {{ width: {_LABEL_WIDTH - 24}px; }}
details.unit[open] > summary {{ background: #f6f8fa; }}
.unit .name .objective {{ display: block; color: #59636e; white-space: normal;
  overflow-wrap: anywhere; padding-left: 16px; }}
.deps {{ color: #8250df; font-size: 12px; }}
.axis .track {{ height: 18px; }}
.axis .tick {{ position: absolute; white-space: nowrap; transform: translateX(-50%);
  font-size: 11px; color: #59636e; }}
i.bar, i.call {{ position: absolute; box-sizing: border-box; border-radius: 2px;
  font: 600 9px/11px system-ui, sans-serif; color: #fff; text-align: center;
  overflow: hidden; font-style: normal; }}
i.bar {{ top: 4px; bottom: 4px; opacity: 0.75; min-width: 2px; }}
i.call {{ top: 2px; height: 14px; border-top: 3px solid; min-width: 2px; }}
.body {{ padding: 0 0 8px; }}
.body p {{ margin: 2px 0 2px 28px; }}
.lane .name {{ color: #59636e; text-align: right; }}
ol.calls {{ margin: 4px 0 0; padding-left: 28px; font-size: 12px; max-width: {_WIDTH - 40}px;
  overflow-wrap: anywhere; }}
{"".join(f"i.{state} {{ background: {colour}; }}" for state, colour in _COLOURS.items())}
{_STAGE_CSS}
svg text {{ font: 11px system-ui, sans-serif; fill: #1f2328; }}
svg .label {{ text-anchor: end; }}
svg .tick {{ text-anchor: middle; fill: #59636e; }}
svg .grid {{ stroke: #d0d7de; stroke-width: 1; }}
svg .axis {{ stroke: #59636e; stroke-width: 1; }}
pre {{ background: #f6f8fa; padding: 12px; border-radius: 6px; white-space: pre-wrap; }}
"""


def _legend() -> str:
    units = "".join(
        f'<span><i class="swatch {state}"></i>{label}</span>'
        for state, label in _STATE_LABELS.items()
    )
    outcomes = "".join(
        f'<span><i class="swatch {outcome}"></i>{label}</span>'
        for outcome, label in [
            ("ok", "passed / accepted / delivered"),
            ("refused", "refused, no diff, rework"),
            ("failed", "failed, timed out, invalid"),
        ]
    )
    stages = "".join(
        f'<span><i class="swatch stage-{stage}">{letter}</i>{_STAGE_NOTES.get(stage, stage)}</span>'
        for stage, (_, letter) in _STAGE_STYLE.items()
    )
    return (
        f'<p class="legend-row">Unit bar, by how the unit ended: {units}</p>'
        f'<p class="legend-row">Call bar fill, by outcome: {outcomes}</p>'
        f'<p class="legend-row">Call bar top band and letter, by stage: {stages}</p>'
    )


def _summary(views: Sequence[_UnitView]) -> str:
    counts = _state_counts(views)
    heads = "".join(
        f'<th><i class="swatch {state}"></i>{_STATE_LABELS[state]}</th>' for state in _ORDER
    )
    cells = "".join(f'<td class="n">{counts[state]}</td>' for state in _ORDER)
    return (
        f'<table class="summary"><tr><th>Units</th>{heads}<th>all</th></tr>'
        f'<tr><td></td>{cells}<td class="n">{len(views)}</td></tr></table>'
    )


def render_report(
    events: Iterable[LedgerEvent], *, title: str = "mesh run", plan: Iterable[Unit] = ()
) -> str:
    """
    A self-contained HTML page of a run: units by state, timeline, concurrency, prose ledger.

    Args:
        events: The run's ledger events (from a run store, a JSON-lines
            ledger or a memory sink), in order.
        title: The page's heading.
        plan: The run's units, when known: each row then shows the unit's
            objective and the units it waits for, and units that never
            started are listed too.

    Raises:
        InputError: ``plan`` holds something other than `mesh.Unit`.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.1.0
       ``plan``; units in collapsed pages, failures first; the evidence of
       each call in a unit's row; limit and target, and units in flight, on
       charts of their own.
    """
    history = list(events)
    units = list(plan)
    if not all(isinstance(unit, Unit) for unit in units):
        raise InputError("render_report: plan must be mesh.Unit records")
    moments = [event.at for event in history]
    # A call's bar starts before its event: the call's duration earlier.
    starts = [e.at - (e.duration_ms or 0.0) / 1000 for e in history]
    start, end = (min(starts), max(moments)) if history else (0.0, 1.0)
    scale = _Scale(start, end)
    views = _units(history, units)
    series = _series(history)
    try:
        ledger = prose_ledger(history) or "Nothing ran."
    except MeshError as exc:
        # A damaged record costs the page its ledger, not the page.
        ledger = f"The ledger cannot be built from these events: {exc.message}"
    if len(ledger) > _LEDGER_CHARS:
        ledger = f"{ledger[:_LEDGER_CHARS]}… (cut; `mesh ledger RUN` prints it whole)"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_text(title, _TITLE_CHARS)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_text(title, _TITLE_CHARS)}</h1>"
        f'<p class="meta">{len(views)} units, {len(history)} events, '
        f"{end - start:.1f} s from first to last event</p>"
        f"{_summary(views)}"
        f"<h2>Timeline</h2>{_legend()}"
        '<p class="meta">One row per unit, failures first, in pages of '
        f"{PAGE_UNITS}: its id, how it ended, the units it runs after, its objective, and a "
        "bar from its start to its end. Open a row for one row per candidate and fixer with "
        "its calls, and the list of calls with their evidence; hover a bar for the same "
        "line.</p>"
        f"{_timeline(views, scale)}"
        "<h2>Concurrency</h2>"
        '<p class="meta">The limit (when backpressure changed it) and the budget\'s target, '
        "then the units in flight, each on its own scale; the time axis is the timeline's.</p>"
        + _chart(
            {"limit": series["limit"], "target": series["target"]},
            scale,
            end,
            name="concurrency",
            unit="units allowed",
        )
        + _chart({"in flight": series["in flight"]}, scale, end, name="in-flight", unit="in flight")
        + f"<h2>Orchestration Ledger</h2><pre>{html.escape(ledger)}</pre>"
        "</body></html>\n"
    )
