"""
A picture of a run: one self-contained HTML page built from its events. Pure: no I/O.

The page has no script and no outside reference (styles inline, the charts
are SVG), so it can be mailed, archived or opened offline. It shows a
timeline of every unit and candidate lane (generation, apply, proof,
adjudication, integration) coloured by outcome, the concurrency limit, budget
target and units in flight over time, and the prose Orchestration Ledger.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Final

import attrs

from ..contracts._enums import Lane
from ..contracts._events import LedgerEvent
from ..contracts._text import one_line
from ._resume import resume_point
from ._summary import MetricsCollector, render_ledger

__all__ = ["prose_ledger", "render_report"]

STAGES: Final = {
    Lane.CODER: "generation",
    Lane.REDUCER: "generation",
    Lane.APPLIER: "apply",
    Lane.PROVER: "proof",
    Lane.FIXER: "adjudication",
    Lane.INTEGRATOR: "integration",
}
"""The lanes drawn on the timeline, by the stage they stand for (leases are not drawn)."""

_GOOD: Final = frozenset(
    {"accept", "applied", "pass", "accepted", "integrated_patch", "integrated_commit"}
)
_REFUSED: Final = frozenset({"no_diff", "reject", "rework", "deny"})
_UNIT_STATES: Final = frozenset({"completed", "failed", "blocked"})
_COLOURS: Final = {
    "ok": "#2e9d5b",
    "refused": "#e0a526",
    "failed": "#d64545",
    "completed": "#2e9d5b",
    "blocked": "#9aa0a6",
    "in_flight": "#5b8def",
}
_STAGE_OUTLINES: Final = {
    "generation": "#6e7781",
    "apply": "#8250df",
    "proof": "#0969da",
    "adjudication": "#9a6700",
    "integration": "#1f2328",
}
"""Outcome is the fill; the stage is the outline."""
_LABEL_WIDTH: Final = 230
_PLOT_WIDTH: Final = 900
_WIDTH: Final = _LABEL_WIDTH + _PLOT_WIDTH + 30
_ROW: Final = 16
_BAR: Final = 11


@attrs.frozen(kw_only=True)
class _Segment:
    start: float
    end: float
    outcome: str
    title: str
    stage: str = ""


@attrs.frozen(kw_only=True)
class _Row:
    label: str
    is_unit: bool
    segments: tuple[_Segment, ...]


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


def _text(value: str) -> str:
    """
    Untrusted text as one line of HTML text.

    Escaping alone keeps markup out, but a label or tooltip must also stay one
    line, without bidi controls reordering it or characters HTML forbids.
    """
    return html.escape(one_line(value))


def _call_outcome(event: LedgerEvent) -> str:
    if event.data.get("outcome") != "ok":
        return "failed"
    decision = event.data.get("decision")
    if decision in _GOOD:
        return "ok"
    return "refused" if decision in _REFUSED else "failed"


def _segment_of_call(event: LedgerEvent, stage: str) -> _Segment:
    duration = event.duration_ms or 0.0
    outcome = _call_outcome(event)
    detail = event.data.get("decision") or event.data.get("outcome")
    evidence = event.data.get("evidence") or event.data.get("error") or ""
    title = f"{stage} {event.candidate_id}: {detail} in {duration:.0f} ms"
    return _Segment(
        start=event.at - duration / 1000,
        end=event.at,
        outcome=outcome,
        title=f"{title} ({evidence})" if evidence else title,
        stage=stage,
    )


def _rows(events: Sequence[LedgerEvent]) -> list[_Row]:
    order: list[str] = []
    started: dict[str, float] = {}
    ended: dict[str, tuple[float, str, str]] = {}
    lanes: dict[str, dict[str, list[_Segment]]] = {}
    for event in events:
        unit_id = event.unit_id
        if unit_id is None:
            continue
        if unit_id not in lanes:
            order.append(unit_id)
            lanes[unit_id] = {}
        if event.event == "unit_started":
            started.setdefault(unit_id, event.at)
        elif event.event == "unit_finished":
            state = str(event.data.get("state", "failed"))
            detail = str(event.data.get("failure_code") or state)
            # The state picks a colour and a CSS class: only a known one may.
            ended[unit_id] = (event.at, state if state in _UNIT_STATES else "failed", detail)
        elif event.event == "unit_blocked":
            ended[unit_id] = (event.at, "blocked", f"blocked by {event.data.get('blocked_by')}")
        elif event.event == "adapter_call" and event.lane in STAGES and event.candidate_id:
            segment = _segment_of_call(event, STAGES[event.lane])
            lanes[unit_id].setdefault(event.candidate_id, []).append(segment)
    rows: list[_Row] = []
    for unit_id in order:
        end, state, detail = ended.get(unit_id, (None, "in_flight", "in flight"))
        start = started.get(unit_id, end)
        unit_segments = (
            (_Segment(start=start, end=end, outcome=state, title=f"{unit_id}: {detail}"),)
            if start is not None and end is not None
            else ()
        )
        rows.append(_Row(label=f"{unit_id} ({detail})", is_unit=True, segments=unit_segments))
        rows.extend(
            _Row(label=candidate_id, is_unit=False, segments=tuple(segments))
            for candidate_id, segments in lanes[unit_id].items()
        )
    return rows


class _Scale:
    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.span = max(end - start, 1e-6)

    def x(self, moment: float) -> float:
        return _LABEL_WIDTH + (moment - self.start) / self.span * _PLOT_WIDTH

    def ticks(self, count: int = 6) -> list[tuple[float, str]]:
        return [
            (self.x(self.start + self.span * i / count), f"{self.span * i / count:.1f} s")
            for i in range(count + 1)
        ]


def _axis(scale: _Scale, y: float) -> str:
    parts = [
        f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{y:.1f}" class="grid"/>'
        f'<text x="{x:.1f}" y="{y + 12:.1f}" class="tick">{label}</text>'
        for x, label in scale.ticks()
    ]
    return "".join(parts)


def _timeline(rows: Sequence[_Row], scale: _Scale) -> str:
    height = len(rows) * _ROW + 20
    parts = [
        (
            f'<svg id="timeline" width="{_WIDTH}" height="{height}" '
            f'role="img" aria-label="timeline of every unit and candidate lane">'
        ),
        _axis(scale, len(rows) * _ROW),
    ]
    for index, row in enumerate(rows):
        y = index * _ROW
        style = "unit" if row.is_unit else "lane"
        parts.append(
            f'<text x="{_LABEL_WIDTH - 6}" y="{y + _BAR}" class="label {style}">'
            f"{_text(row.label)}</text>"
        )
        for segment in row.segments:
            x = scale.x(segment.start)
            width = max(scale.x(segment.end) - x, 1.5)
            outline = (
                f' stroke="{_STAGE_OUTLINES[segment.stage]}" stroke-width="1.5"'
                if segment.stage
                else ""
            )
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 2}" width="{width:.1f}" height="{_BAR}" '
                f'class="{" ".join(filter(None, (style, segment.outcome, segment.stage)))}" '
                f'fill="{_COLOURS[segment.outcome]}"{outline}>'
                f"<title>{_text(segment.title)}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _series(events: Sequence[LedgerEvent]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {"limit": [], "target": [], "in flight": []}
    in_flight = 0
    for event in events:
        target, limit = event.data.get("target"), event.data.get("limit")
        if event.event == "budget_read" and isinstance(target, int):
            series["target"].append((event.at, float(target)))
        elif event.event == "concurrency_changed" and isinstance(limit, int):
            series["limit"].append((event.at, float(limit)))
        elif event.event == "unit_started":
            in_flight += 1
            series["in flight"].append((event.at, float(in_flight)))
        elif event.event == "unit_finished":
            in_flight = max(in_flight - 1, 0)
            series["in flight"].append((event.at, float(in_flight)))
    return series


_SERIES_COLOURS: Final = {"limit": "#d64545", "target": "#5b8def", "in flight": "#2e9d5b"}


def _concurrency(events: Sequence[LedgerEvent], scale: _Scale, end: float) -> str:
    series = _series(events)
    top = max([value for points in series.values() for _, value in points] + [1.0])
    height = 160

    def y(value: float) -> float:
        return height - value / top * (height - 10)

    parts = [
        (
            f'<svg id="concurrency" width="{_WIDTH}" height="{height + 36}" '
            f'role="img" aria-label="concurrency over time">'
        ),
        _axis(scale, height),
        f'<text x="{_LABEL_WIDTH - 6}" y="12" class="label">{top:.0f}</text>',
        f'<text x="{_LABEL_WIDTH - 6}" y="{height}" class="label">0</text>',
    ]
    for offset, (name, points) in enumerate(series.items()):
        if not points:
            continue
        steps: list[str] = []
        for index, (moment, value) in enumerate(points):
            following = points[index + 1][0] if index + 1 < len(points) else end
            steps.append(f"{scale.x(moment):.1f},{y(value):.1f}")
            steps.append(f"{scale.x(following):.1f},{y(value):.1f}")
        colour = _SERIES_COLOURS[name]
        parts.append(
            f'<polyline points="{" ".join(steps)}" fill="none" stroke="{colour}" '
            f'stroke-width="2" class="series"><title>{name}</title></polyline>'
            f'<text x="{_LABEL_WIDTH + 8 + offset * 90}" y="{height + 30}" fill="{colour}" '
            f'class="legend">{name}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


_STYLE: Final = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1f2328; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
.meta { color: #59636e; }
.legend-row span { display: inline-block; margin-right: 14px; }
.legend-row i { display: inline-block; width: 12px; height: 12px; margin-right: 4px;
  vertical-align: -2px; border-radius: 2px; }
svg text { font: 11px system-ui, sans-serif; fill: #1f2328; }
svg .label { text-anchor: end; }
svg .label.unit { font-weight: 600; }
svg .tick { text-anchor: middle; fill: #59636e; }
svg .grid { stroke: #d0d7de; stroke-width: 1; }
svg rect.unit { opacity: 0.35; }
pre { background: #f6f8fa; padding: 12px; border-radius: 6px; white-space: pre-wrap; }
"""


def render_report(events: Iterable[LedgerEvent], *, title: str = "mesh run") -> str:
    """
    A self-contained HTML page of a run: timeline, concurrency over time, prose ledger.

    Args:
        events: The run's ledger events (from a run store, a JSON-lines
            ledger or a memory sink), in order.
        title: The page's heading.

    .. versionadded:: 0.1.0
    """
    history = list(events)
    moments = [event.at for event in history]
    # A call's bar starts before its event: the call's duration earlier.
    starts = [e.at - (e.duration_ms or 0.0) / 1000 for e in history]
    start, end = (min(starts), max(moments)) if history else (0.0, 1.0)
    scale = _Scale(start, end)
    rows = _rows(history)
    legend = "".join(
        f'<span><i style="background:{_COLOURS[name]}"></i>{label}</span>'
        for name, label in [
            ("ok", "passed / accepted / delivered"),
            ("refused", "refused, no diff, rework"),
            ("failed", "failed, timed out, invalid"),
            ("blocked", "blocked unit"),
            ("in_flight", "unit still in flight"),
        ]
    )
    stages = "".join(
        f'<span><i style="border:2px solid {colour}"></i>{stage}</span>'
        for stage, colour in _STAGE_OUTLINES.items()
    )
    units = sum(row.is_unit for row in rows)
    ledger = prose_ledger(history) or "Nothing ran."
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_text(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_text(title)}</h1>"
        f'<p class="meta">{units} units, {len(history)} events, '
        f"{end - start:.1f} s from first to last event</p>"
        f'<h2>Timeline</h2><p class="legend-row">{legend}</p>'
        f'<p class="legend-row">Outline by stage: {stages}</p>'
        '<p class="meta">Each unit\'s bar spans its start to its end; below it, one row per '
        "candidate and fixer: generation, apply, proof, adjudication and integration calls "
        "(hover for the decision and evidence).</p>"
        f"{_timeline(rows, scale)}"
        "<h2>Concurrency</h2>"
        f"{_concurrency(history, scale, end)}"
        f"<h2>Orchestration Ledger</h2><pre>{html.escape(ledger)}</pre>"
        "</body></html>\n"
    )
