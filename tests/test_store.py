"""The run store (SQLite, batched, checked on open) and rebuilding a run's state from it."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

import mesh
from mesh.engine._resume import stored_point
from mesh.testing import FakeAdapter, answer, fake_roles

from repo_helpers import unit


def event(
    seq: int,
    name: str = "adapter_call",
    *,
    unit_id: str | None = None,
    lane: mesh.Lane | None = None,
    attempt: int | None = None,
    **data: object,
) -> mesh.LedgerEvent:
    return mesh.LedgerEvent(
        event=name,
        run_id="r1",
        seq=seq,
        at=float(seq),
        unit_id=unit_id,
        lane=lane,
        attempt=attempt,
        data=data,
    )


def committed(path: Path) -> int:
    with sqlite3.connect(path) as other:
        return int(other.execute("SELECT COUNT(*) FROM events").fetchone()[0])


class TestRunStore:
    def test_round_trip_and_batching(self, tmp_path: Path) -> None:
        """Events are committed in batches, at once for barrier events, and read back whole."""
        path = tmp_path / "run.sqlite"
        with mesh.RunStore.create(
            path, run_id="r1", config={"plan": [1, 2]}, batch_size=3
        ) as store:
            store.emit(event(1, unit_id="u1", lane=mesh.Lane.CODER, attempt=1, outcome="ok"))
            store.emit(event(2))
            assert committed(path) == 0  # still batched
            store.emit(event(3))
            assert committed(path) == 3  # a full batch
            store.emit(event(4, "delivery_started", unit_id="u1"))
            assert committed(path) == 4  # before a side effect: at once
            store.emit(event(5))
        with mesh.RunStore.open(path) as again:
            assert (again.run_id, again.config, again.last_seq) == ("r1", {"plan": [1, 2]}, 5)
            events = list(again.events())
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert events[0] == event(1, unit_id="u1", lane=mesh.Lane.CODER, attempt=1, outcome="ok")

    def test_refuses_to_overwrite(self, tmp_path: Path) -> None:
        """A store is never created over an existing file."""
        path = tmp_path / "run.sqlite"
        mesh.RunStore.create(path, run_id="r1", config={}).close()
        with pytest.raises(mesh.StoreError, match="already there"):
            mesh.RunStore.create(path, run_id="r2", config={})

    def test_a_store_made_meanwhile_is_never_replaced(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Another process made the store between the check and the link: refused, kept."""
        path = tmp_path / "run.sqlite"
        mesh.RunStore.create(path, run_id="r1", config={"first": True}).close()
        monkeypatch.setattr(Path, "exists", lambda self: False)
        with pytest.raises(mesh.StoreError, match="already there"):
            mesh.RunStore.create(path, run_id="r2", config={})
        monkeypatch.undo()
        with mesh.RunStore.open(path) as kept:
            assert kept.config == {"first": True}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run.sqlite"]

    def test_create_where_it_cannot(self, tmp_path: Path) -> None:
        """A folder in the way is a clear error."""
        (tmp_path / "file").write_text("x")
        with pytest.raises(mesh.StoreError, match="cannot create the run store"):
            mesh.RunStore.create(tmp_path / "file" / "run.sqlite", run_id="r1", config={})

    @pytest.mark.parametrize(
        ("damage", "message"),
        [
            ("missing", "no run store there"),
            ("garbage", "is not a readable mesh run store: file is not a database"),
            ("truncated", "is not a readable mesh run store: database disk image is malformed"),
            ("foreign", "is not a mesh run store (schema version 0)"),
            ("gap", "is missing events: 2 recorded, numbered up to 3"),
            ("inconsistent", "is damaged: NULL value in events.unit_id"),
        ],
    )
    def test_damage_is_reported_never_ignored(
        self, tmp_path: Path, damage: str, message: str
    ) -> None:
        """Missing, foreign, garbage, truncated or gapped stores are errors, never shorter."""
        path = tmp_path / "run.sqlite"
        if damage != "missing":
            with mesh.RunStore.create(path, run_id="r1", config={}) as store:
                for seq in range(1, 200):
                    store.emit(event(seq, payload="x" * 200))
        if damage == "garbage":
            path.write_bytes(b"not sqlite at all" * 100)
        elif damage == "truncated":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif damage == "foreign":
            path.unlink()
            sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
        elif damage == "inconsistent":
            # The schema now promises what the rows break: SQLite's own check notices.
            with sqlite3.connect(path) as raw:
                raw.execute("PRAGMA writable_schema=ON")
                (sql,) = raw.execute("SELECT sql FROM sqlite_master WHERE name='events'").fetchone()
                raw.execute(
                    "UPDATE sqlite_master SET sql=? WHERE name='events'",
                    (sql.replace("unit_id TEXT", "unit_id TEXT NOT NULL"),),
                )
            raw.close()
        elif damage == "gap":
            path.unlink()
            with mesh.RunStore.create(path, run_id="r1", config={}) as store:
                store.emit(event(1))
                store.emit(event(3))
        with pytest.raises(mesh.StoreError, match=message.replace("(", r"\(").replace(")", r"\)")):
            mesh.RunStore.open(path)

    @pytest.mark.parametrize(
        ("damage", "sql", "message"),
        [
            ("no run row", "DELETE FROM run", "is damaged: 0 run records, not one"),
            ("two run rows", "INSERT INTO run VALUES ('r2', '{}')", "2 run records, not one"),
            ("config not JSON", "UPDATE run SET config = '{'", "its configuration is not JSON"),
            ("config a list", "UPDATE run SET config = '[]'", "configuration is not a JSON object"),
            ("events renumbered", "UPDATE events SET seq = 0 WHERE seq = 1", "numbered from 0"),
        ],
    )
    def test_damaged_run_record(self, tmp_path: Path, damage: str, sql: str, message: str) -> None:
        """A run record missing, doubled or unreadable: a StoreError, never a crash."""
        path = tmp_path / "run.sqlite"
        with mesh.RunStore.create(path, run_id="r1", config={}) as store:
            store.emit(event(1))
            store.emit(event(2))
        with sqlite3.connect(path) as raw:
            raw.execute(sql)
        raw.close()
        with pytest.raises(mesh.StoreError, match=message):
            mesh.RunStore.open(path)

    @pytest.mark.parametrize(
        ("sql", "message"),
        [
            ("UPDATE events SET data = 'not json' WHERE seq = 2", "event 2: Expecting value"),
            ("UPDATE events SET lane = 'nobody' WHERE seq = 2", "event 2: 'nobody' is not a valid"),
            ("UPDATE events SET data = '[1]' WHERE seq = 2", "event 2: "),
            ("UPDATE events SET data = '" + "[" * 20000 + "' WHERE seq = 2", "event 2: "),
            ("UPDATE events SET at = 'noon' WHERE seq = 2", "event 2: its time is not a finite"),
            ("UPDATE events SET at = 9e999 WHERE seq = 2", "event 2: its time is not a finite"),
            ("UPDATE events SET at = -9e999 WHERE seq = 2", "event 2: its time is not a finite"),
            ("UPDATE events SET duration_ms = 'x' WHERE seq = 2", "event 2: its duration is"),
            ("UPDATE events SET duration_ms = 9e999 WHERE seq = 2", "event 2: its duration is"),
            ("UPDATE events SET attempt = 'x' WHERE seq = 2", "event 2: its attempt is not a"),
            ("UPDATE events SET attempt = 1.5 WHERE seq = 2", "event 2: its attempt is not a"),
            ("UPDATE events SET attempt = 9e999 WHERE seq = 2", "event 2: its attempt is not a"),
            ("UPDATE events SET unit_id = X'41' WHERE seq = 2", "event 2: its unit id is not text"),
            ("UPDATE events SET candidate_id = X'41' WHERE seq = 2", "event 2: its candidate id"),
            ("UPDATE events SET event = X'41' WHERE seq = 2", "event 2: its name is not text"),
        ],
    )
    def test_damaged_event(self, tmp_path: Path, sql: str, message: str) -> None:
        """
        An event whose data is not JSON, names no lane, or whose field has the wrong type.

        SQLite keeps text in a REAL column, a blob anywhere, an infinite REAL: each is a
        StoreError naming the event, never a crash in whatever reads the events.
        """
        path = tmp_path / "run.sqlite"
        with mesh.RunStore.create(path, run_id="r1", config={}) as store:
            for seq in (1, 2, 3):
                store.emit(event(seq, unit_id="u1", lane=mesh.Lane.CODER))
        with sqlite3.connect(path) as raw:
            raw.execute(sql)
        raw.close()
        with mesh.RunStore.open(path) as store, pytest.raises(mesh.StoreError, match=message):
            list(store.events())

    def test_fields_of_every_type_read_back(self, tmp_path: Path) -> None:
        """Whole and fractional times, durations, attempts and ids read back as written."""
        path = tmp_path / "run.sqlite"
        written = [
            attrs.evolve(event(1, unit_id="u1", lane=mesh.Lane.CODER, attempt=2), duration_ms=5.0),
            attrs.evolve(event(2), at=-1.5, candidate_id="c1"),
        ]
        with mesh.RunStore.create(path, run_id="r1", config={}) as store:
            for stored in written:
                store.emit(stored)
        with sqlite3.connect(path) as raw:
            raw.execute("UPDATE events SET at = 3 WHERE seq = 1")  # an INTEGER in a REAL column
        raw.close()
        with mesh.RunStore.open(path) as store:
            assert list(store.events()) == [attrs.evolve(written[0], at=3.0), written[1]]

    def test_creation_is_all_or_nothing_under_kill_9(self, tmp_path: Path) -> None:
        """
        Killed at random moments while creating stores: each is absent or whole.

        Never a file that is "not a mesh run store" and that a new run refuses to replace.
        """
        script = (
            "import sys, mesh\n"
            "print('ready', flush=True)\n"
            "for n in range(10_000):\n"
            "    path = f'{sys.argv[1]}/{n}/run.sqlite'\n"
            "    mesh.RunStore.create(path, run_id='r', config={'n': n}).close()\n"
        )
        rounds = random.Random(20261129)
        for round_ in range(12):
            folder = tmp_path / str(round_)
            folder.mkdir()
            with subprocess.Popen(
                [sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, text=True
            ) as child:
                assert child.stdout is not None
                assert child.stdout.readline() == "ready\n"
                while not (folder / "0" / "run.sqlite").exists():  # however loaded the machine
                    time.sleep(0.001)
                time.sleep(rounds.uniform(0, 0.2))
                child.send_signal(signal.SIGKILL)
            stores = sorted(folder.glob("*/run.sqlite"))
            assert stores, "the child made no store before its kill"
            for store in stores:
                with mesh.RunStore.open(store) as opened:
                    assert opened.config == {"n": int(store.parent.name)}
            # Where the kill landed, a new store can be made (a draft left is never in the way).
            for leftover in folder.iterdir():
                if not (leftover / "run.sqlite").exists():
                    mesh.RunStore.create(leftover / "run.sqlite", run_id="r", config={}).close()

    def test_write_failure(self, tmp_path: Path) -> None:
        """A failed commit is a StoreError naming the store."""
        store = mesh.RunStore.create(tmp_path / "run.sqlite", run_id="r1", config={})
        store.emit(event(1))
        with pytest.raises(mesh.StoreError, match="cannot write to the run store"):
            store.emit(event(1, "unit_finished"))  # the same number twice cannot be stored
        with pytest.raises(mesh.StoreError, match="UNIQUE constraint failed"):
            store.close()  # what could not be written is never dropped silently


class TestResumePoint:
    def candidates(self) -> list[dict[str, object]]:
        request = mesh.AuthorRequest(
            unit=unit("u1"),
            lane=mesh.Lane.CODER,
            candidate_id="u1-coder-1",
            triplet_index=1,
            attempt=2,
        )
        return [answer(request)]

    def test_states_from_events(self) -> None:
        """Finished units keep their outcome; others restart at their attempt and candidates."""
        events = [
            event(1, "run_started", units=4),
            event(2, "unit_started", unit_id="u1", attempt=1),
            event(3, "rework", unit_id="u1", attempt=2),
            event(4, "candidates_recorded", unit_id="u1", attempt=2, candidates=self.candidates()),
            event(5, "unit_started", unit_id="u2", attempt=1),
            event(
                6,
                "unit_finished",
                unit_id="u2",
                attempt=1,
                state="completed",
                failure_code=None,
                accepted_candidate="u2-coder-1",
                artifact_ref="abc",
                delivery="integrated_commit",
            ),
            event(
                7, "unit_finished", unit_id="u2", attempt=1, state="failed"
            ),  # ignored: already done
            event(8, "unit_blocked", unit_id="u3", blocked_by="u9"),
            event(9, "unit_started", unit_id="u4", attempt=1),
            event(
                10,
                "unit_finished",
                unit_id="u4",
                state="failed",
                failure_code="proof_missing",
                evidence="1 failed",
            ),
            event(11, "delivery_started", unit_id="u1"),
        ]
        point = mesh.resume_point(events)
        assert point.next_seq == 12
        assert len(point.history) == 11
        first = point.checkpoints["u1"]
        assert (first.attempt, first.outcome, [c.candidate_id for c in first.candidates]) == (
            2,
            None,
            ["u1-coder-1"],
        )
        assert point.checkpoints["u2"].outcome == mesh.UnitOutcome(
            unit_id="u2",
            state=mesh.OutcomeState.COMPLETED,
            attempts=1,
            accepted_candidate="u2-coder-1",
            artifact_ref="abc",
            delivery=mesh.Decision.INTEGRATED_COMMIT,
        )
        assert point.checkpoints["u3"].outcome is not None
        assert point.checkpoints["u3"].outcome.blocked_by == "u9"
        failed = point.checkpoints["u4"].outcome
        assert failed is not None
        assert (failed.failure_code, failed.evidence) == (
            mesh.FailureCode.PROOF_MISSING,
            "1 failed",
        )
        # Read back from stored events, outcome states are the enum, not bare text.
        read_back = [point.checkpoints[unit_id].outcome for unit_id in ("u2", "u3", "u4")]
        assert [
            (mesh.OutcomeState, mesh.OutcomeState.COMPLETED),
            (mesh.OutcomeState, mesh.OutcomeState.BLOCKED),
            (mesh.OutcomeState, mesh.OutcomeState.FAILED),
        ] == [(type(outcome.state), outcome.state) for outcome in read_back if outcome]
        assert mesh.unit_states(events, ["u1", "u2", "u3", "u4", "u5"]) == {
            "u1": "in_flight",
            "u2": "completed",
            "u3": "blocked",
            "u4": "failed",
            "u5": "pending",
        }

    def test_outcomes_read_back_from_a_store_are_enums(self, tmp_path: Path) -> None:
        """A run's outcomes, stored as events and read back, are the same `OutcomeState`s."""

        def prover(request: mesh.ProofRequest) -> dict[str, object]:
            verdict = "fail" if request.unit.id == "broken" else "pass"
            return answer(request, decision=verdict, proof_status=verdict)

        units = [
            mesh.Unit(id="fine", objective="works"),
            mesh.Unit(id="broken", objective="fails its proof"),
            mesh.Unit(id="after", objective="waits for broken", deps=("broken",)),
        ]
        path = tmp_path / "run.sqlite"
        with mesh.RunStore.create(path, run_id="r1", config={}) as store:
            roles = fake_roles(prover=FakeAdapter(prover))
            result = mesh.run(units, roles=roles, run_id="r1", sinks=[store])
        with mesh.RunStore.open(path) as again:
            point = mesh.resume_point(again.events())
        read_back = [point.checkpoints[unit.id].outcome for unit in units]
        assert read_back == list(result.outcomes)
        states = [outcome.state for outcome in read_back if outcome is not None]
        assert [type(state) for state in states] == [mesh.OutcomeState] * 3
        assert states == [
            mesh.OutcomeState.COMPLETED,
            mesh.OutcomeState.FAILED,
            mesh.OutcomeState.BLOCKED,
        ]

    @pytest.mark.parametrize("state", ["exploded", 3, None])
    def test_unknown_finished_state_reads_as_failed(self, state: object) -> None:
        """A stored finish whose state is no outcome (or missing) reads back as failed."""
        events = [event(1, "unit_finished", unit_id="u1", attempt=1, state=state)]
        outcome = mesh.resume_point(events).checkpoints["u1"].outcome
        assert outcome is not None
        assert mesh.OutcomeState.FAILED is outcome.state

    def test_unknown_failure_code_and_delivery_read_as_unknown(self) -> None:
        """A recorded code or delivery mesh does not know is read as unknown; a resume refuses."""
        events = [
            event(1, "unit_finished", unit_id="u1", state="failed", failure_code="\x1b[2Jbogus"),
            event(2, "unit_finished", unit_id="u2", state="completed", delivery="bogus"),
        ]
        outcomes = [mesh.resume_point(events).checkpoints[u].outcome for u in ("u1", "u2")]
        assert [(o.failure_code, o.delivery) for o in outcomes if o] == [(None, None)] * 2
        ledger = mesh.render_ledger(mesh.RunMetrics(), [o for o in outcomes if o])
        assert "failed: u1 (unknown)" in ledger
        unknown = r"event 1: unknown failure code '\\x1b\[2Jbogus'"  # escaped, on one line
        with pytest.raises(mesh.MeshError, match=unknown):
            stored_point(events)
        with pytest.raises(mesh.MeshError, match="event 2: unknown delivery 'bogus'"):
            stored_point(events[1:])

    @pytest.mark.parametrize("candidates", ["nope", [{"id": "u1"}]])
    def test_unreadable_candidates(self, candidates: object) -> None:
        """A damaged candidate record is an error, not a silent regeneration."""
        with pytest.raises(mesh.MeshError, match="event 1: "):
            mesh.resume_point(
                [event(1, "candidates_recorded", unit_id="u1", candidates=candidates)]
            )

    @pytest.mark.parametrize(
        "proofs", ["nope", {}, {"u1-coder-1": None, "u1-other": None}, {"u1-coder-1": {"id": 1}}]
    )
    def test_unreadable_proofs(self, proofs: object) -> None:
        """Proofs that do not match the recorded candidates one to one are an error."""
        recorded = event(1, "candidates_recorded", unit_id="u1", candidates=self.candidates())
        with pytest.raises(mesh.MeshError, match="event 2: "):
            mesh.resume_point([recorded, event(2, "proofs_recorded", unit_id="u1", proofs=proofs)])

    def test_new_candidates_forget_the_previous_proofs_and_verdict(self) -> None:
        """Each record of candidates starts their stages over."""
        recorded = event(1, "candidates_recorded", unit_id="u1", candidates=self.candidates())
        events = [
            recorded,
            event(2, "proofs_recorded", unit_id="u1", proofs={"u1-coder-1": None}),
            attrs.evolve(
                event(3, "delivery_started", unit_id="u1", approvals=1), candidate_id="u1-coder-1"
            ),
        ]
        checkpoint = mesh.resume_point(events).checkpoints["u1"]
        assert (checkpoint.proofs, checkpoint.accepted, checkpoint.approvals) == (
            {"u1-coder-1": None},
            "u1-coder-1",
            1,
        )
        again = mesh.resume_point([*events, attrs.evolve(recorded, seq=4)]).checkpoints["u1"]
        assert (again.proofs, again.accepted) == ({}, None)


def test_a_forged_run_id_is_printed_escaped(tmp_path: Path) -> None:
    """`mesh status` of a store whose run id holds terminal and bidi controls: escaped."""
    from mesh.cli import _cli  # noqa: PLC0415 - the command line under test

    forged = "ab\x9b2J\u202eXY\x1b]52;c;x\x07"
    config = {"plan": {"plan": [{"step": "s"}]}}
    mesh.RunStore.create(tmp_path / "run.sqlite", run_id=forged, config=config).close()
    code, out, _ = _cli.run(["status", str(tmp_path)])
    assert code == 0
    assert out.isascii()
    assert forged == json.loads(out)["run_id"]


def test_status_of_a_stopped_run(tmp_path: Path) -> None:
    """A stopped run's status: finished, failed, blocked, in-flight and pending units."""
    import mesh.commands  # noqa: PLC0415 - the command under test

    plan = {"plan": [{"step": f"s{i}"} for i in range(5)]}
    with mesh.RunStore.create(tmp_path / "run.sqlite", run_id="r1", config={"plan": plan}) as store:
        steps: list[tuple[str, str, dict[str, object]]] = [
            ("unit_started", "unit-001", {}),
            ("unit_finished", "unit-001", {"state": "completed"}),
            ("unit_finished", "unit-002", {"state": "failed", "failure_code": "proof_missing"}),
            ("unit_blocked", "unit-003", {"blocked_by": "unit-002"}),
            ("unit_started", "unit-004", {}),
        ]
        for seq, (name, unit_id, data) in enumerate(steps, start=1):
            store.emit(
                mesh.LedgerEvent(
                    event=name, run_id="r1", seq=seq, at=0.0, unit_id=unit_id, attempt=1, data=data
                )
            )
    status = mesh.commands.status(run=tmp_path)
    assert (status["finished"], status["events"]) == (False, 5)
    assert status["by_state"] == {
        "completed": 1,
        "failed": 1,
        "blocked": 1,
        "in_flight": 1,
        "pending": 1,
    }
    units = status["units"]
    assert isinstance(units, list)
    assert units[1] == {
        "id": "unit-002",
        "state": "failed",
        "attempt": 1,
        "failure_code": "proof_missing",
    }
    assert units[4] == {"id": "unit-005", "state": "pending"}
