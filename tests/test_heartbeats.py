"""Heartbeats: a call whose heartbeats stop is ended as hung, long before its timeout."""

from __future__ import annotations

import math
import time
from pathlib import Path

import anyio
import pytest

import mesh
from mesh.engine._call_facts import CALL_BEAT, CallBeat
from mesh.host._process import run_command
from mesh.testing import FakeAdapter, ManualClock, answer, capture_ledger, fake_roles

from engine_helpers import execute, new_file_answer, unit

pytestmark = pytest.mark.anyio
ONE_CALL = mesh.RetryPolicy(calls=1)


def calls_of(ledger: list[mesh.LedgerEvent], lane: str) -> list[mesh.LedgerEvent]:
    return [e for e in ledger if e.event == "adapter_call" and e.lane == lane]


class TestHung:
    async def test_a_call_whose_heartbeats_stop_is_ended_long_before_its_timeout(self) -> None:
        clock = ManualClock()

        async def beats_then_hangs(request: mesh.AuthorRequest) -> object:
            assert mesh.heartbeat()
            await clock.sleep(1)
            mesh.heartbeat()
            await anyio.sleep_forever()
            raise AssertionError  # pragma: no cover - never wakes

        with capture_ledger() as ledger:
            async with clock.autojumping():
                result = await execute(
                    [unit("a")],
                    fake_roles(coder=FakeAdapter(beats_then_hangs)),
                    clock=clock,
                    call_timeout=1000,
                    heartbeat_timeout=10,
                    retry=ONE_CALL,
                    max_attempts=1,
                )
        outcome = result.outcomes[0]
        assert outcome.failure_code is mesh.FailureCode.TIMEOUT_RETRY_EXHAUSTED
        assert "coder stopped sending heartbeats (10s without one)" in outcome.evidence
        coder_calls = calls_of(ledger, "coder")
        assert {(e.data["outcome"], e.data["hung"], e.data["heartbeats"]) for e in coder_calls} == {
            ("timeout", True, 2)
        }
        # Found between one and one and a quarter timeouts after the last heartbeat.
        assert all(10_000 <= (e.duration_ms or 0) <= 1000 + 12_500 for e in coder_calls)
        assert clock.current_time() < 100

    async def test_a_hung_call_is_retried_as_a_timeout(self) -> None:
        clock = ManualClock()
        hung: list[int] = []

        async def hangs_once(request: mesh.AuthorRequest) -> object:
            mesh.heartbeat()
            if request.call == 1:
                hung.append(1)
                await anyio.sleep_forever()
            return answer(request)

        async with clock.autojumping():
            result = await execute(
                [unit("a")],
                fake_roles(coder=FakeAdapter(hangs_once)),
                clock=clock,
                heartbeat_timeout=5,
                max_attempts=1,
            )
        assert result.outcomes[0].state == "completed"
        assert len(hung) == 2

    async def test_a_call_that_keeps_beating_runs_as_long_as_it_needs(self) -> None:
        clock = ManualClock()

        async def slow_but_alive(request: mesh.AuthorRequest) -> object:
            for _ in range(20):
                mesh.heartbeat()
                await clock.sleep(4)
            return answer(request)

        with capture_ledger() as ledger:
            async with clock.autojumping():
                result = await execute(
                    [unit("a")],
                    fake_roles(coder=FakeAdapter(slow_but_alive)),
                    clock=clock,
                    heartbeat_timeout=10,
                    call_timeout=None,
                    max_attempts=1,
                )
        assert result.outcomes[0].state == "completed"
        assert {e.data["heartbeats"] for e in calls_of(ledger, "coder")} == {20}

    async def test_a_call_that_never_beats_has_only_its_timeout(self) -> None:
        clock = ManualClock()

        async def silent(request: mesh.AuthorRequest) -> object:
            await anyio.sleep_forever()
            raise AssertionError  # pragma: no cover - never wakes

        with capture_ledger() as ledger:
            async with clock.autojumping():
                await execute(
                    [unit("a")],
                    fake_roles(coder=FakeAdapter(silent)),
                    clock=clock,
                    heartbeat_timeout=1,
                    call_timeout=50,
                    retry=ONE_CALL,
                    max_attempts=1,
                )
        coder_calls = calls_of(ledger, "coder")
        assert all("hung" not in e.data and "heartbeats" not in e.data for e in coder_calls)
        assert all((e.duration_ms or 0) >= 50_000 for e in coder_calls)

    async def test_a_sync_adapter_in_its_thread(self) -> None:
        """A thread that beats then blocks: the call ends; the thread is left to finish."""

        def blocks(request: mesh.AuthorRequest) -> object:
            mesh.heartbeat()
            time.sleep(1.5)
            return answer(request)

        with capture_ledger() as ledger:
            await execute(
                [unit("a")],
                fake_roles(coder=blocks),
                heartbeat_timeout=0.2,
                retry=ONE_CALL,
                max_attempts=1,
            )
        assert {e.data.get("hung") for e in calls_of(ledger, "coder")} == {True}


class TestBound:
    @pytest.mark.parametrize("start", [0.0, 1e6, 1.7e9])
    @pytest.mark.parametrize("quiet", [0.3, 1 / 3, 3.3, 10.0])
    async def test_found_between_one_and_a_quarter_timeouts_after_the_last_beat(
        self, start: float, quiet: float
    ) -> None:
        """Whatever the clock's value and the beat's offset within a quarter."""
        for offset in (0.0, 0.13, 0.5, 0.77):
            clock = ManualClock(start)
            beaten: list[float] = []

            async def beats_then_hangs(
                request: mesh.AuthorRequest,
                clock: ManualClock = clock,
                offset: float = offset,
                beaten: list[float] = beaten,
            ) -> object:
                await clock.sleep(quiet * offset)
                mesh.heartbeat()
                beaten.append(clock.current_time())
                await anyio.sleep_forever()
                raise AssertionError  # pragma: no cover - never wakes

            with capture_ledger() as ledger:
                async with clock.autojumping():
                    await execute(
                        [unit("a")],
                        fake_roles(coder=FakeAdapter(beats_then_hangs)),
                        clock=clock,
                        call_timeout=None,
                        heartbeat_timeout=quiet,
                        retry=ONE_CALL,
                        max_attempts=1,
                    )
            ended = [e.at for e in calls_of(ledger, "coder") if e.data.get("hung")]
            assert len(ended) == 2
            # Clock values near 1.7e9 carry about 2e-7 s of float error.
            for end, beat in zip(sorted(ended), sorted(beaten), strict=True):
                assert quiet - 1e-6 <= end - beat <= quiet * 1.25 + 1e-6

    async def test_a_hung_call_not_safe_to_rerun_says_so(self) -> None:
        clock = ManualClock()

        async def beats_then_hangs(request: mesh.AuthorRequest) -> object:
            mesh.heartbeat()
            await anyio.sleep_forever()
            raise AssertionError  # pragma: no cover - never wakes

        async with clock.autojumping():
            result = await execute(
                [unit("a")],
                fake_roles(coder=FakeAdapter(beats_then_hangs, rerun_safe=False)),
                clock=clock,
                heartbeat_timeout=1,
                max_attempts=1,
            )
        assert result.outcomes[0].evidence.startswith(
            "coder stopped sending heartbeats (1s without one) and was not called again"
        )


class TestOutsideARun:
    def test_outside_a_call_nothing_listens(self) -> None:
        assert not mesh.heartbeat()

    async def test_a_run_without_a_heartbeat_timeout_does_not_listen(self) -> None:
        heard: list[bool] = []

        async def coder(request: mesh.AuthorRequest) -> object:
            heard.append(mesh.heartbeat())
            return answer(request)

        await execute([unit("a")], fake_roles(coder=FakeAdapter(coder)))
        assert heard == [False, False]

    @pytest.mark.parametrize("wrong", [0, -1, 0.05, math.inf, math.nan])
    def test_the_timeout_is_checked(self, wrong: float) -> None:
        with pytest.raises(mesh.InputError, match=r"heartbeat_timeout must be at least 0\.1"):
            mesh.Orchestrator(roles=fake_roles(), heartbeat_timeout=wrong)

    @pytest.mark.parametrize(("wrong", "says"), [(0.05, "at least 0.1"), ("1", "a number")])
    async def test_the_front_door_checks_it_first(self, wrong: object, says: str) -> None:
        with pytest.raises(mesh.ValidationError, match=f"heartbeat_timeout: .*{says}"):
            await mesh.run_async([unit("a")], roles=fake_roles(), heartbeat_timeout=wrong)  # type: ignore[call-overload]


class TestCommands:
    async def test_a_running_process_sends_heartbeats(self, tmp_path: Path) -> None:
        beat = CallBeat(every=0.05)
        token = CALL_BEAT.set(beat)
        try:
            finished = await run_command(["sleep", "0.4"], cwd=tmp_path, timeout=10)
        finally:
            CALL_BEAT.reset(token)
        assert finished.ok
        assert beat.count >= 3

    async def test_a_long_proof_on_a_repository_stays_alive(
        self, repo: Path, tmp_path: Path
    ) -> None:
        """The built-in prover's process beats for it: a 1 s proof outlives a 0.3 s timeout."""
        plan = {
            "plan": [{"id": "a", "step": "a", "write_scope": ["a.txt"], "proof_command": "sleep 1"}]
        }
        events: list[mesh.LedgerEvent] = []
        run = await mesh.run_async(
            plan,
            roles=mesh.Roles(coder=new_file_answer),
            repo=repo,
            out=tmp_path / "out",
            heartbeat_timeout=0.3,
            on_event=events.append,
        )
        assert [o.state for o in run.result.outcomes] == ["completed"]
        proofs = calls_of(events, "prover")
        assert proofs
        assert all(int(str(e.data["heartbeats"])) >= 2 for e in proofs)
        store = mesh.RunStore.open(run.store_path)
        assert store.config["heartbeat_timeout"] == 0.3
        store.close()
