"""`mesh report`: one self-contained HTML page per run, checked in a real headless browser."""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import mesh
import mesh.commands
from mesh.contracts._text import one_line
from mesh.testing import FakeAdapter, answer, fake_roles

from engine_helpers import unit

RunMesh = Callable[..., subprocess.CompletedProcess[str]]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
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
        [unit("good"), unit("bad"), unit("after", "bad")],
        roles=fake_roles(prover=failing),
        sinks=[mesh.MemorySink(store)],
        run_id="r1",
        strict=False,  # the failed unit's prover crashes on purpose
    )
    return store


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


def parsed(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


class TestRenderReport:
    def test_every_unit_lane_and_outcome_is_drawn(self) -> None:
        """A bar per unit, a row per candidate and fixer, coloured by outcome."""
        page = parsed(mesh.render_report(events_of_a_run(), title="demo <run>"))
        rects = [attributes for tag, attributes in page.tags if tag == "rect"]
        classes = [str(attributes["class"]).split() for attributes in rects]
        units = [c for c in classes if "unit" in c]
        assert sorted(c[1] for c in units) == ["blocked", "completed", "failed"]
        stages = {c[2] for c in classes if "lane" in c}
        assert stages == {"generation", "apply", "proof", "adjudication", "integration"}
        outcomes = {c[1] for c in classes if "lane" in c}
        assert {"ok", "failed"} <= outcomes
        text = "".join(page.text)
        assert "demo <run>" in text  # escaped in the page, read back as text
        assert "proof <crashed> & burned" in text
        assert "bad (proof_missing)" in text or "bad (tooling_unavailable)" in text
        assert "after (blocked by bad)" in text
        assert "Orchestration Ledger" in text

    def test_self_contained(self) -> None:
        """No script, no stylesheet or image from anywhere: the page works offline."""
        page = mesh.render_report(events_of_a_run())
        tags = parsed(page).tags
        assert not [tag for tag, _ in tags if tag in {"script", "link", "img", "iframe"}]
        assert not re.search(r"(src|href)=|url\(|@import", page)

    def test_concurrency_series(self) -> None:
        """The budget target and units in flight are drawn; the limit once it changed."""
        series = re.compile(r"<polyline [^>]*><title>([^<]+)</title>")
        clean: list[mesh.LedgerEvent] = []
        mesh.run([unit("a")], roles=fake_roles(), sinks=[mesh.MemorySink(clean)])
        assert series.findall(mesh.render_report(clean)) == ["target", "in flight"]
        # The failed proof is backpressure: the limit shrank.
        failing = mesh.render_report(events_of_a_run())
        assert series.findall(failing) == ["limit", "target", "in flight"]

    def test_refused_and_failed_decisions(self) -> None:
        """A rejected candidate is drawn as refused; a failed proof as failed."""

        def call(seq: int, lane: mesh.Lane, decision: str) -> mesh.LedgerEvent:
            return mesh.LedgerEvent(
                event="adapter_call",
                run_id="r1",
                seq=seq,
                at=float(seq),
                unit_id="u1",
                candidate_id="u1-coder-1",
                lane=lane,
                duration_ms=500.0,
                data={"outcome": "ok", "decision": decision},
            )

        page = mesh.render_report(
            [call(1, mesh.Lane.CODER, "reject"), call(2, mesh.Lane.PROVER, "fail")]
        )
        assert 'class="lane refused generation"' in page
        assert 'class="lane failed proof"' in page

    def test_untrusted_text_stays_one_escaped_line(self) -> None:
        """Labels, tooltips and the title are escaped and one line; a bad state picks no class."""
        forged = 'ok\nunit-009 completed\r\x1b[2K\u2028\u202e<b>"\ud800'
        state = 'completed" onmouseover="alert(1)'

        def event(seq: int, name: str, **data: object) -> mesh.LedgerEvent:
            return mesh.LedgerEvent(
                event=name,
                run_id="r1",
                seq=seq,
                at=float(seq),
                unit_id=f"u{forged}",
                candidate_id=f"c{forged}" if name == "adapter_call" else None,
                lane=mesh.Lane.PROVER if name == "adapter_call" else None,
                duration_ms=100.0 if name == "adapter_call" else None,
                data=data,
            )

        events = [
            event(1, "unit_started"),
            event(2, "adapter_call", outcome="ok", decision="fail", evidence=forged),
            event(3, "unit_finished", state=state, failure_code="proof_missing"),
        ]
        page = mesh.render_report(events, title=f"run {forged}")
        page.encode("utf-8")  # a lone surrogate would make the page unwritable
        parsed_page = parsed(page)
        texts = "".join(parsed_page.text)
        assert not any(char in texts for char in "\r\x1b\u2028\u202e\ud800")
        assert "onmouseover" not in {
            name for _, attributes in parsed_page.tags for name in attributes
        }
        classes = [str(a["class"]).split() for tag, a in parsed_page.tags if tag == "rect"]
        assert ["unit", "failed"] in classes
        escaped = one_line(forged)
        assert f"run {escaped}" in texts
        assert f"u{escaped} (proof_missing)" in texts  # the unit's label
        assert f"proof c{escaped}: fail in 100 ms ({escaped})" in texts  # the call's tooltip

    def test_a_run_that_stopped_and_one_that_never_ran(self) -> None:
        """Units without an end are drawn as in flight; no events is a page that says so."""
        events = events_of_a_run()
        stopped = [e for e in events if not (e.event == "unit_finished" and e.unit_id == "good")]
        assert 'class="unit in_flight"' not in mesh.render_report(events)
        assert "good (in flight)" in mesh.render_report(stopped)
        empty = mesh.render_report([])
        assert "0 units, 0 events" in empty
        assert "Nothing ran." in empty


class TestReportCommand:
    def test_writes_the_page_of_a_stored_run(self, tmp_path: Path) -> None:
        """The page goes where -o says; the store is never written over."""
        store_path = tmp_path / "run" / mesh.STORE_FILE
        store_path.parent.mkdir()
        with mesh.RunStore.create(store_path, run_id="r1", config={"plan": {"plan": []}}) as store:
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
        assert (tmp_path / "run.html").read_text().startswith("<!doctype html>")
        ledger = mesh.commands.ledger(run=tmp_path / "run")
        assert isinstance(ledger, str)
        assert ledger.startswith("Orchestration Ledger")
        before = store_path.read_bytes()
        with pytest.raises(mesh.PathCollisionError, match="same file as RUN"):
            mesh.commands.report(run=tmp_path / "run", output=store_path)
        assert store_path.read_bytes() == before
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
        missing = run_mesh("report", str(tmp_path / "run"))
        assert missing.returncode != 0
        assert missing.stderr == "error: MissingRequiredOption: --output is required\n"


@pytest.mark.timeout(120)
def test_the_page_renders_in_a_real_browser(tmp_path: Path) -> None:
    """Headless Chromium loads the page offline, lays out every bar, and logs no error."""
    if CHROMIUM is None:
        if BROWSER_REQUIRED:
            pytest.fail("MESH_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("no chromium on PATH (CI installs Debian's)")
    page = tmp_path / "run.html"
    page.write_text(mesh.render_report(events_of_a_run(), title="browser check"))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    dumped = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    # The DOM the browser built: the SVG charts are there with their bars.
    assert "<title>browser check</title>" in dumped.stdout
    assert dumped.stdout.count("<rect") == mesh.render_report(events_of_a_run()).count("<rect")
    assert 'id="concurrency"' in dumped.stdout
    console = [
        line for line in dumped.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line
    ]
    assert console == []
    assert "Failed to load resource" not in dumped.stderr
    shot = tmp_path / "run.png"
    subprocess.run(
        [
            CHROMIUM,
            *flags,
            "--hide-scrollbars",
            "--window-size=1200,900",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=90,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
