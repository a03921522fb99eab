"""`mesh report`: one self-contained HTML page per run, checked in a real headless browser."""

from __future__ import annotations

import html.parser
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import mesh
import mesh.commands
from bench import report_page
from mesh.contracts._text import one_line
from mesh.engine._report import DETAILED_UNITS, PAGE_UNITS
from mesh.testing import FakeAdapter, answer, fake_roles

from engine_helpers import unit

RunMesh = Callable[..., subprocess.CompletedProcess[str]]
CHROMIUM = report_page.chromium()
PLAN = [unit("good"), unit("bad"), unit("after", "bad")]
# CI installs Debian's chromium and requires this test; elsewhere it is skipped without one.
BROWSER_REQUIRED = os.environ.get("MESH_REQUIRE_BROWSER") == "1"


def events_of_a_run() -> list[mesh.LedgerEvent]:
    """A run with every outcome: a completed unit, a failed one and a unit it blocks."""
    store: list[mesh.LedgerEvent] = []

    def prove(request: mesh.ProofRequest) -> dict[str, object]:
        if request.unit.id == "bad":
            raise RuntimeError("proof <crashed> & burned")
        return answer(request)

    failing = FakeAdapter(prove)
    mesh.run(
        PLAN,
        roles=fake_roles(prover=failing),
        sinks=[mesh.MemorySink(store)],
        run_id="r1",
        strict=False,  # the failed unit's prover crashes on purpose
    )
    return store


def event(seq: int, name: str, unit_id: str | None = None, **data: Any) -> mesh.LedgerEvent:
    """An event at second ``seq``; an adapter call's candidate, lane and duration in ``data``."""
    call = {key: data.pop(key) for key in ("candidate_id", "lane", "duration_ms") if key in data}
    return mesh.LedgerEvent(
        event=name, run_id="r1", seq=seq, at=float(seq), unit_id=unit_id, data=data, **call
    )


def a_big_run(units: int) -> tuple[list[mesh.LedgerEvent], list[mesh.Unit]]:
    """``units`` chained units, a hundred at a time, two calls each; one in 97 fails its proof."""
    plan = [
        mesh.Unit(id=f"u{i:05d}", objective=f"objective {i}", deps=(f"u{i - 1:05d}",) * (i > 0))
        for i in range(units)
    ]
    timed: list[tuple[float, dict[str, Any]]] = [
        (0.0, {"event": "budget_read", "data": {"target": 64}})
    ]
    for i, planned in enumerate(plan):
        start, passed = i / 100, i % 97 != 0
        call = {"event": "adapter_call", "unit_id": planned.id, "duration_ms": 300.0}
        call["candidate_id"] = f"{planned.id}-coder-1"
        proof = {"outcome": "ok", "decision": "pass" if passed else "fail", "evidence": "1 passed"}
        ended = (
            {"state": "completed"}
            if passed
            else {"state": "failed", "failure_code": "proof_missing"}
        )
        timed += [
            (start, {"event": "unit_started", "unit_id": planned.id}),
            (
                start + 0.5,
                call | {"lane": mesh.Lane.CODER, "data": {"outcome": "ok", "decision": "accept"}},
            ),
            (start + 0.8, call | {"lane": mesh.Lane.PROVER, "data": proof}),
            (start + 1.0, {"event": "unit_finished", "unit_id": planned.id, "data": ended}),
        ]
    timed.sort(key=lambda entry: entry[0])
    events = [
        mesh.LedgerEvent(run_id="big", seq=seq, at=at, **fields)
        for seq, (at, fields) in enumerate(timed)
    ]
    return events, plan


class _Page(html.parser.HTMLParser):
    """Tags, external references and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def classes(self, tag: str) -> list[list[str]]:
        return [str(a.get("class")).split() for t, a in self.tags if t == tag]

    def titles(self) -> list[str]:
        return [str(a["title"]) for _, a in self.tags if "title" in a]


def parsed(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


class TestRenderReport:
    def test_every_unit_lane_and_outcome_is_drawn(self) -> None:
        """A bar per unit, a row per candidate and fixer, coloured by outcome, with its stage."""
        page = parsed(mesh.render_report(events_of_a_run(), title="demo <run>", plan=PLAN))
        bars = [c for c in page.classes("i") if c[0] == "bar"]
        assert [c[1] for c in bars] == ["failed", "blocked", "completed"]  # failures first
        calls = [c for c in page.classes("i") if c[0] == "call"]
        assert {"generation", "apply", "proof", "adjudication", "integration"} == {
            c[2] for c in calls
        }
        assert {"ok", "failed"} <= {c[1] for c in calls}
        text = "".join(page.text)
        assert "demo <run>" in text  # escaped in the page, read back as text
        assert "proof <crashed> & burned" in text  # the evidence, in the list of calls
        assert any("proof <crashed> & burned" in title for title in page.titles())
        assert "bad (proof_missing)" in text or "bad (tooling_unavailable)" in text
        assert "after (blocked by bad) after bad" in text
        assert "do after" in text  # the objective, from the plan
        assert "needed by after" in text
        assert "Orchestration Ledger" in text

    def test_legend_names_every_colour(self) -> None:
        """Each unit state, call outcome and stage has a swatch and words."""
        page = parsed(mesh.render_report(events_of_a_run()))
        text = "".join(page.text)
        swatches = [c[1] for c in page.classes("i") if c[0] == "swatch"]
        for state in ("failed", "blocked", "in_flight", "pending", "completed", "ok", "refused"):
            assert state in swatches
        for stage in ("generation", "apply", "proof", "adjudication", "integration"):
            assert f"stage-{stage}" in swatches
            assert stage in text

    def test_self_contained(self) -> None:
        """No script, no stylesheet or image from anywhere: the page works offline."""
        page = mesh.render_report(events_of_a_run(), plan=PLAN)
        tags = parsed(page).tags
        assert not [tag for tag, _ in tags if tag in {"script", "link", "img", "iframe"}]
        assert not re.search(r"(src|href)=|url\(|@import", page)

    def test_concurrency_series(self) -> None:
        """The budget target, then units in flight on a chart of its own; the limit if it moved."""
        series = re.compile(r'<svg id="([a-z-]+)"|<polyline [^>]*><title>([^<]+)</title>')
        clean: list[mesh.LedgerEvent] = []
        mesh.run([unit("a")], roles=fake_roles(), sinks=[mesh.MemorySink(clean)])
        drawn = ["".join(found) for found in series.findall(mesh.render_report(clean))]
        assert drawn == ["concurrency", "target", "in-flight", "in flight"]
        # The failed proof is backpressure: the limit shrank.
        failing = mesh.render_report(events_of_a_run())
        drawn = ["".join(found) for found in series.findall(failing)]
        assert drawn == ["concurrency", "limit", "target", "in-flight", "in flight"]

    def test_refused_and_failed_decisions(self) -> None:
        """A rejected candidate is drawn as refused; a failed proof as failed; leases not at all."""

        def call(seq: int, lane: mesh.Lane, decision: str) -> mesh.LedgerEvent:
            return event(
                seq,
                "adapter_call",
                "u1",
                candidate_id="u1-coder-1",
                lane=lane,
                duration_ms=500.0,
                outcome="ok",
                decision=decision,
            )

        page = mesh.render_report(
            [
                call(1, mesh.Lane.CODER, "reject"),
                call(2, mesh.Lane.PROVER, "fail"),
                call(3, mesh.Lane.LOCKSMITH, "granted"),
            ]
        )
        assert 'class="call refused generation"' in page
        assert 'class="call failed proof"' in page
        assert page.count('class="call ') == 2
        assert "u1</b> (in flight)" in page  # it ran, and has not ended

    def test_untrusted_text_stays_one_escaped_line(self) -> None:
        """Labels, tooltips and the title are escaped and one line; a bad state picks no class."""
        forged = 'ok\nunit-009 completed\r\x1b[2K\u2028\u202e<b>"\ud800</script><script>x]]>'
        state = 'completed" onmouseover="alert(1)'
        candidate = f"c{forged}"
        events = [
            event(1, "unit_started", f"u{forged}"),
            event(
                2,
                "adapter_call",
                f"u{forged}",
                candidate_id=candidate,
                lane=mesh.Lane.PROVER,
                duration_ms=100.0,
                outcome="ok",
                decision="fail",
                evidence=forged,
            ),
            event(3, "unit_finished", f"u{forged}", state=state, failure_code="proof_missing"),
        ]
        plan = [mesh.Unit(id=f"u{forged}", objective=forged, deps=(f"d{forged}",))]
        page = mesh.render_report(events, title=f"run {forged}", plan=plan)
        page.encode("utf-8")  # a lone surrogate would make the page unwritable
        assert "<script" not in page
        parsed_page = parsed(page)
        texts = "".join(parsed_page.text)
        assert not any(char in texts for char in "\r\x1b\u2028\u202e\ud800")
        assert not any(char in t for t in parsed_page.titles() for char in "\r\x1b\u202e")
        assert "onmouseover" not in {
            name for _, attributes in parsed_page.tags for name in attributes
        }
        assert ["bar", "failed"] in parsed_page.classes("i")
        escaped = one_line(forged)
        assert f"run {escaped}" in texts
        assert f"u{escaped} (proof_missing) after d{escaped}" in texts  # the unit's label
        assert f"proof c{escaped}: fail in 100 ms — {escaped}" in texts  # the call, listed
        assert f"proof c{escaped}: fail in 100 ms ({escaped})" in parsed_page.titles()

    def test_huge_text_stays_bounded(self) -> None:
        """Megabytes of id, objective or evidence cost the page a bounded number of characters."""
        huge = "x" * 1_000_000
        events = [
            event(1, "unit_started", huge),
            event(
                2,
                "adapter_call",
                huge,
                candidate_id=huge,
                lane=mesh.Lane.PROVER,
                duration_ms=100.0,
                outcome="ok",
                decision="fail",
                evidence=huge,
            ),
            event(3, "unit_finished", huge, state="failed", failure_code="proof_missing"),
            event(4, "unit_blocked", "later", blocked_by=huge),
        ]
        many = tuple(f"d{i}" for i in range(1000))
        plan = [mesh.Unit(id=huge, objective=huge, deps=many)]
        page = mesh.render_report(events, title=huge, plan=plan)
        assert len(page) < 150_000  # the ledger names the unit too, cut at 20,000 characters
        assert "cut; `mesh ledger RUN` prints it whole" in page
        assert "d7 and 992 more" in page
        objective = [p for p in parsed(page).text if p.startswith("xxx")]
        assert max(map(len, objective)) <= 2000  # the whole objective, opened, is cut too

    def test_plan_without_events_and_the_checked_plan(self) -> None:
        """Units of the plan that never ran are listed as not started; a plan holds Units only."""
        page = mesh.render_report([], plan=[unit("a"), unit("b", "a")])
        text = "".join(parsed(page).text)
        assert "a (not started)" in text
        assert "b (not started) after a" in text
        assert 'class="bar' not in page  # nothing ran: no bar to draw
        assert "No calls recorded." in page
        with pytest.raises(mesh.InputError, match=r"mesh\.Unit"):
            mesh.render_report([], plan=[{"id": "a"}])  # type: ignore[list-item]

    def test_a_run_that_stopped_and_one_that_never_ran(self) -> None:
        """Units without an end are drawn as in flight; no events is a page that says so."""
        events = events_of_a_run()
        stopped = [e for e in events if not (e.event == "unit_finished" and e.unit_id == "good")]
        assert 'class="unit in_flight"' not in mesh.render_report(events)
        assert "good (in flight)" in "".join(parsed(mesh.render_report(stopped)).text)
        empty = mesh.render_report([])
        assert "0 units, 0 events" in empty
        assert "No units." in empty
        assert "Nothing ran." in empty

    def test_ten_thousand_units_stay_readable_and_bounded(self) -> None:
        """
        A big run is a summary, then closed pages of units, failures first.

        Only the first units listed keep their calls; the in-flight line is bounded per
        pixel column.
        """
        events, plan = a_big_run(10_000)
        page = mesh.render_report(events, plan=plan)
        assert len(page) < 6_000_000
        # Regular expressions, not the HTML parser: they read megabytes fast, and the
        # browser test builds this same page.
        # The summary: failed, blocked, in flight, not started, completed, all.
        counts = re.findall(r'<td class="n">(\d+)</td>', page)
        assert counts == ["104", "0", "0", "0", "9896", "10000"]
        pages = re.findall(r'<details class="page"( open)?>', page)
        assert len(pages) == 10_000 // PAGE_UNITS
        assert pages == [" open"] + [""] * (len(pages) - 1)
        assert "Units 1 to 100 of 10000: 100 failed" in page
        assert "Units 101 to 200 of 10000: 4 failed, 96 completed" in page
        bars = re.findall(r'<i class="bar (\w+)"', page)
        assert bars[:104] == ["failed"] * 104
        assert bars[104:] == ["completed"] * (10_000 - 104)
        assert page.count('<i class="call ') == 2 * DETAILED_UNITS
        assert "The page keeps the calls of the first 500 units listed" in page
        assert '<p class="meta">2 calls</p>' in page
        in_flight = re.search(r'id="in-flight".*?<polyline points="([^"]+)"', page)
        assert in_flight is not None
        corners = in_flight[1].split()
        assert len(corners) <= 4 * 900
        assert max(float(point.split(",")[1]) for point in corners) <= 120

    def test_many_calls_in_one_unit_stay_bounded(self) -> None:
        """
        One unit of twenty thousand calls over two thousand candidates is a bounded row.

        The row lists the unit's first and last calls, draws its first candidates, and
        says how many more there are; 5 KB of evidence per call cannot swell the page.
        """
        calls = 20_000
        events = [event(1, "unit_started", "u")] + [
            event(
                2 + i,
                "adapter_call",
                "u",
                candidate_id=f"c{i % 2000}",
                lane=mesh.Lane.PROVER,
                duration_ms=1.0,
                outcome="ok",
                decision="fail",
                evidence=f"E{i} " + "E" * 5000,
            )
            for i in range(calls)
        ]
        events.append(event(calls + 2, "unit_finished", "u", state="failed"))
        page = mesh.render_report(events)
        assert len(page) < 600_000
        assert "and 19900 more calls: the run store has every call" in page
        assert "and 80 more candidates" in page  # 100 calls shown, over 100 candidates
        listed = re.findall(r"— E(\d+) ", page)
        assert listed == [str(i) for i in (*range(50), *range(calls - 50, calls))]

    def test_calls_are_kept_while_the_page_has_room(self) -> None:
        """Units of many long calls are detailed until the page is full, then counted."""
        events = []
        for n in range(40):
            events += [
                event(
                    1 + n * 200 + i,
                    "adapter_call",
                    f"u{n:02d}",
                    candidate_id=f"c{i}",
                    lane=mesh.Lane.CODER,
                    duration_ms=1.0,
                    outcome="ok",
                    decision="accept",
                    evidence="E" * 5000,
                )
                for i in range(150)
            ]
        page = mesh.render_report(events)
        detailed = re.search(r"The page keeps the calls of the first (\d+) units listed", page)
        assert detailed is not None
        assert 0 < int(detailed[1]) < 40
        assert page.count('<p class="meta">150 calls</p>') == 40 - int(detailed[1])
        assert len(page) < 5_000_000

    def test_long_ids_and_objectives_of_many_units_stay_bounded(self) -> None:
        """Past the detailed units, a row's id, objective and names are cut short."""
        count, long_id = 1500, "x" * 200
        plan = [
            mesh.Unit(
                id=f"u{i:05d}{long_id}",
                objective=f"objective {i} " + "o" * 5000,
                deps=tuple(f"u{j:05d}{long_id}" for j in range(max(0, i - 50), i)),
            )
            for i in range(count)
        ]
        events = [
            event(1 + i, "unit_finished", planned.id, state="completed")
            for i, planned in enumerate(plan)
        ]
        page = mesh.render_report(events, plan=plan)
        rows = re.findall(r'<details class="unit .*?</details>', page)
        assert len(rows) == count
        assert max(map(len, rows[DETAILED_UNITS:])) < 800
        assert len(page) < 7_000 * DETAILED_UNITS + 800 * (count - DETAILED_UNITS)
        assert f"u00600{'x' * 25}…" in rows[600]
        assert "o" * 2000 not in "".join(rows[DETAILED_UNITS:])  # no whole objective

    def test_damaged_events_still_make_a_page(self) -> None:
        """
        Values no run writes (a damaged store) are drawn as they can be, never a crash.

        Times a float's width apart, counts too big for a float, and a candidate record
        the ledger cannot read: the page is written, with a note for the ledger.
        """
        events = [
            mesh.LedgerEvent(event="unit_started", run_id="r", seq=1, at=-1.7e308, unit_id="u"),
            event(2, "budget_read", target=10**400),
            event(3, "concurrency_changed", limit=float("nan")),
            event(4, "candidates_recorded", "u", candidates=5),
            mesh.LedgerEvent(
                event="adapter_call",
                run_id="r",
                seq=5,
                at=1.7e308,
                unit_id="u",
                candidate_id="c",
                lane=mesh.Lane.CODER,
                duration_ms=1e300,
                data={"outcome": "ok"},
            ),
        ]
        page = mesh.render_report(events)
        assert "The ledger cannot be built from these events: event 4: candidates_recorded" in page
        assert "inf s from first to last event" in page
        assert '<polyline points="' not in page.split('id="concurrency"')[1].split("</svg>")[0]


class TestReportCommand:
    def test_an_output_that_is_no_regular_file_is_refused(self, tmp_path: Path) -> None:
        """`-o` naming a FIFO (or a device, a link to one) is refused, and left as it was."""
        with mesh.RunStore.create(tmp_path / "run" / mesh.STORE_FILE, run_id="r1", config={}):
            pass
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        (tmp_path / "link").symlink_to(fifo)
        for output in (fifo, tmp_path / "link"):
            with pytest.raises(mesh.FileAccessError, match="not a regular file"):
                mesh.commands.report(run=tmp_path / "run", output=output)
        assert fifo.is_fifo()
        assert (tmp_path / "link").is_symlink()

    def test_writes_the_page_of_a_stored_run(self, tmp_path: Path) -> None:
        """The page goes where -o says; the store is never written over."""
        store_path = tmp_path / "run" / mesh.STORE_FILE
        store_path.parent.mkdir()
        plan = {"units": [planned.to_document() for planned in PLAN]}
        with mesh.RunStore.create(store_path, run_id="r1", config={"plan": plan}) as store:
            for event in events_of_a_run():
                store.emit(event)
        result = mesh.commands.report(run=tmp_path / "run", output=tmp_path / "run.html")
        assert result == {
            "command": "report",
            "run_id": "r1",
            "output": str(tmp_path / "run.html"),
            "events": len(events_of_a_run()),
            "units": 3,
        }
        page = (tmp_path / "run.html").read_text()
        assert page.startswith("<!doctype html>")
        assert "do after" in page  # the stored plan's objective labels the row
        ledger = mesh.commands.ledger(run=tmp_path / "run")
        assert isinstance(ledger, str)
        assert ledger.startswith("Orchestration Ledger")
        before = store_path.read_bytes()
        with pytest.raises(mesh.PathCollisionError, match="same file as RUN"):
            mesh.commands.report(run=tmp_path / "run", output=store_path)
        assert store_path.read_bytes() == before
        # A store without its plan (damaged) costs the rows their objectives, not the page.
        (tmp_path / "damaged").mkdir()
        damaged = tmp_path / "damaged" / mesh.STORE_FILE
        with mesh.RunStore.create(damaged, run_id="r2", config={}) as store:
            for event in events_of_a_run():
                store.emit(event)
        mesh.commands.report(run=damaged, output=tmp_path / "damaged.html")
        page = (tmp_path / "damaged.html").read_text()
        assert "after (blocked by bad)" in "".join(parsed(page).text)
        assert "do after" not in page
        with pytest.raises(mesh.InputError, match="no run nope"):
            mesh.commands.report(run="nope", output=tmp_path / "x.html")
        assert not (tmp_path / "x.html").exists()

    def test_cli(self, tmp_path: Path, run_mesh: RunMesh) -> None:
        """`mesh report RUN -o FILE` prints a JSON summary; a missing -o is a usage error."""
        store_path = tmp_path / "run" / mesh.STORE_FILE
        store_path.parent.mkdir()
        with mesh.RunStore.create(store_path, run_id="r1", config={"plan": {"plan": []}}) as store:
            for event in events_of_a_run():
                store.emit(event)
        done = run_mesh("report", str(tmp_path / "run"), "-o", str(tmp_path / "a.html"))
        assert json.loads(done.stdout)["output"] == str(tmp_path / "a.html")
        # A plan with no units: the page is drawn without objectives.
        page = (tmp_path / "a.html").read_text()
        assert "after (blocked by bad)" in "".join(parsed(page).text)
        assert "do after" not in page
        missing = run_mesh("report", str(tmp_path / "run"))
        assert missing.returncode != 0
        assert missing.stderr == "error: MissingRequiredOption: --output is required\n"


def proof_blue(png: Path) -> int:
    """Pixels of the proof stage's colour (the top band of proof calls, and its legend swatch)."""
    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None
    return sum(count for count, colour in colours if colour == (0x09, 0x69, 0xDA))


@pytest.mark.timeout(180)
def test_the_page_renders_in_a_real_browser(tmp_path: Path) -> None:
    """
    Headless Chromium loads the page offline, builds every bar and logs no error.

    A unit's row, opened, shows the lanes that a closed one hides.
    """
    if CHROMIUM is None:
        if BROWSER_REQUIRED:
            pytest.fail("MESH_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("no chromium on PATH (CI installs Debian's)")
    rendered = mesh.render_report(events_of_a_run(), title="browser check", plan=PLAN)
    page = tmp_path / "run.html"
    page.write_text(rendered)
    dumped = report_page.browse(CHROMIUM, page, tmp_path / "profile")
    # The DOM the browser built: the units, their calls and both charts are there.
    assert "<title>browser check</title>" in dumped.stdout
    for element in ("<details", "<i class=", "<polyline"):
        assert rendered.count(element) == dumped.stdout.count(element)
    assert 'id="concurrency"' in dumped.stdout
    assert 'id="in-flight"' in dumped.stdout
    console = [
        line for line in dumped.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line
    ]
    assert console == []
    assert "Failed to load resource" not in dumped.stderr
    # A run this small opens every unit's row; the same page with them closed shows less.
    closed = tmp_path / "closed.html"
    closed.write_text(re.sub(r'(<details class="unit [a-z_]+") open>', r"\1>", rendered))
    shots = []
    for name, source in (("open", page), ("closed", closed)):
        shot = tmp_path / f"{name}.png"
        report_page.screenshot(CHROMIUM, source, shot, tmp_path / "profile", height=1400)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        shots.append(proof_blue(shot))
    opened, shut = shots
    assert shut > 0  # the legend's swatch
    assert opened > shut  # and the proof calls of the opened rows
    # Ten thousand units: the browser builds every page of rows, and logs nothing.
    big = tmp_path / "big.html"
    events, plan = a_big_run(10_000)
    big.write_text(mesh.render_report(events, plan=plan))
    dumped = report_page.browse(CHROMIUM, big, tmp_path / "profile")
    assert dumped.stdout.count('<details class="page"') == 10_000 // PAGE_UNITS
    assert dumped.stdout.count('<details class="unit ') == 10_000
    assert "CONSOLE" not in dumped.stderr
