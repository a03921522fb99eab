"""
Role adapter calls as Ray tasks (``pip install 'mesh[ray]'``).

The engine stays in the caller's process; each call of a remote lane becomes
one Ray task that runs the adapter on a worker and returns its answer. The
engine awaits the task from a worker thread, so neither asyncio nor trio
blocks. Cancelling the await (the engine's call timeout, a cancelled run)
cancels the task: async adapters are cancelled cooperatively on the worker
(their ``finally`` blocks run: proof process groups are killed, worktrees
removed), sync ones are interrupted; a task still running after
``cancel_grace`` seconds has its worker process killed.

Ray is imported only when a `RayExecutor` starts: mesh itself never needs it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Final, final

import anyio
import anyio.to_thread

from ..contracts._enums import Lane
from ..contracts._errors import ExecutorError, InputError
from ._executors import BoundCall, ExecutorInfo, Placed, remote_lane_set
from ._roles import Adapter, BoundAdapter, _is_async
from ._tracing import attached_carrier, trace_carrier

__all__ = ["DEFAULT_REMOTE_LANES", "RayExecutor", "run_on_worker"]

DEFAULT_REMOTE_LANES: Final = frozenset(
    {Lane.CODER, Lane.REDUCER, Lane.APPLIER, Lane.PROVER, Lane.FIXER}
)
"""Lanes whose calls run on Ray by default: everything but the locksmith and the integrator."""

_ENGINE_LANES: Final = frozenset({Lane.LOCKSMITH, Lane.INTEGRATOR})
_CANCELLED: Final = "cancelled"


def _import_ray() -> Any:  # noqa: ANN401 - Ray's module, typed only where Ray is installed
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise ExecutorError(f"RayExecutor needs Ray: pip install 'mesh[ray]' ({exc})") from None


class CancelBoard:
    """
    Which calls the engine cancelled: a Ray actor that workers poll.

    A worker blocked in its event loop does not see Ray's own interrupt, so
    async adapters learn of a cancellation here and unwind through their
    ``finally`` blocks.
    """

    def __init__(self) -> None:
        self._cancelled: set[int] = set()

    def cancel(self, call_id: int) -> None:
        """Mark a call cancelled."""
        self._cancelled.add(call_id)

    def cancelled(self, call_id: int) -> bool:
        """Whether the engine cancelled the call."""
        return call_id in self._cancelled

    def forget(self, call_id: int) -> None:
        """The call ended: drop its mark."""
        self._cancelled.discard(call_id)


async def _watched(
    call: Callable[[], Awaitable[object]], cancelled: Callable[[], bool], poll: float
) -> object:
    """Await ``call()``, cancelling it once ``cancelled()`` says so (checked every ``poll`` s)."""
    box: list[object] = []
    errors: list[Exception] = []
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            # Polled: the board lives in another process and cannot set an anyio.Event here.
            while not await anyio.to_thread.run_sync(cancelled):  # noqa: ASYNC110
                await anyio.sleep(poll)
            group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            box.append(await call())
        except Exception as exc:  # noqa: BLE001 - raised below as itself, not in a group
            errors.append(exc)
        group.cancel_scope.cancel()
    if errors:
        raise errors[0]
    return box[0] if box else _CANCELLED


def run_on_worker(  # noqa: PLR0917 - a Ray task takes its arguments by position
    adapter: Adapter[Any],
    request: object,
    call_id: int,
    board: Any,  # noqa: ANN401 - a Ray actor handle, or None
    poll: float,
    trace: Mapping[str, str] | None = None,
) -> tuple[str, object]:
    """
    The Ray task: answer one request on this worker; returns ``(node id, answer)``.

    Sync adapters run in the task's thread (Ray's interrupt reaches them);
    async ones run in an event loop that also watches the cancel board. In a
    traced run, ``trace`` carries the call's span: it is the current span
    while the adapter runs, so the adapter's own spans nest under it.
    """
    ray = _import_ray()
    node = str(ray.get_runtime_context().get_node_id())
    with attached_carrier(trace):
        if _is_async(adapter):
            call: Callable[[], Awaitable[object]] = functools.partial(adapter, request)  # type: ignore[assignment]
        else:
            answer = adapter(request)
            if not inspect.isawaitable(answer):
                return node, answer
            call = functools.partial(_await, answer)

        def cancelled() -> bool:
            # No board for sync adapters: the engine interrupts or kills those instead.
            return board is not None and bool(ray.get(board.cancelled.remote(call_id)))

        # The loop's main task starts in a copy of this context: the call's span with it.
        return node, anyio.run(_watched, call, cancelled, poll)


async def _await(awaitable: Awaitable[object]) -> object:
    return await awaitable


@final
class RayExecutor:
    """
    Runs role adapter calls as Ray tasks; the engine stays in this process.

    Args:
        address: The cluster to join: ``None`` starts a local Ray instance (or
            uses the one this process already joined), ``"auto"`` joins the
            cluster this machine belongs to, ``"ray://HEAD:10001"`` connects
            a client to a remote one.
        lanes: The lanes whose calls run on Ray (default: coder, reducer,
            applier, prover, fixer). The locksmith and the integrator always
            run with the engine: they hold the run's leases and plan state.
        task_options: Ray task options per lane, e.g. ``{Lane.PROVER:
            {"resources": {"prover": 1}}}`` to send proofs only to nodes started
            with ``--resources '{"prover": N}'``. Default per task:
            ``num_cpus=1`` and ``max_retries=0`` (the engine's own retry and
            replacement are the only ones, as in local runs).
        base_slots: Concurrent remote calls without scale-out: one worker
            instance's worth (default: the CPUs of the largest node).
        max_slots: Concurrent remote calls with scale-out (default: every CPU
            of the cluster). The budget's scale-out gate picks between the two.
        init_options: More `ray.init` arguments (``runtime_env``, ``namespace``…).
            By default worker output is not copied to this process's stdout,
            and Ray leaves the host's logging configuration alone.
        cancel_grace: Seconds a cancelled task gets to unwind before its worker is killed.
        cancel_poll: How often a worker checks whether its call was cancelled.

    Adapters sent to Ray must be picklable, and the modules defining them
    importable on the workers. The built-in git adapters are, when given the
    repository's path rather than an open `WorkspaceManager`.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        lanes: Collection[Lane | str] = DEFAULT_REMOTE_LANES,
        task_options: Mapping[Lane | str, Mapping[str, Any]] | None = None,
        base_slots: int | None = None,
        max_slots: int | None = None,
        init_options: Mapping[str, Any] | None = None,
        cancel_grace: float = 10.0,
        cancel_poll: float = 0.25,
    ) -> None:
        remote = remote_lane_set(lanes)
        if remote & _ENGINE_LANES:
            names = ", ".join(sorted(lane.value for lane in remote & _ENGINE_LANES))
            raise InputError(
                f"lanes: {names} must run with the engine (it holds the leases and the plan state)"
            )
        for name, value in (("base_slots", base_slots), ("max_slots", max_slots)):
            if value is not None and value < 1:
                raise InputError(f"{name} must be >= 1, got {value}")
        for name, seconds in (("cancel_grace", cancel_grace), ("cancel_poll", cancel_poll)):
            if seconds <= 0:
                raise InputError(f"{name} must be > 0 seconds, got {seconds}")
        self.address = address
        self.lanes = remote
        self.task_options: dict[Lane, dict[str, Any]] = {lane: {} for lane in remote}
        for key, options in (task_options or {}).items():
            (lane,) = remote_lane_set([key])
            if lane not in remote:
                raise InputError(f"task_options: {lane.value} does not run on Ray (see lanes)")
            self.task_options[lane] = dict(options)
        self.base_slots = base_slots
        self.max_slots = max_slots
        self.init_options = dict(init_options or {})
        self.cancel_grace = cancel_grace
        self.cancel_poll = cancel_poll
        self._ray: Any = None
        self._owns_ray = False
        self._board: Any = None
        self._task: Any = None
        self._shipped: dict[int, Any] = {}
        self._call_ids = itertools.count(1)
        self._threads = anyio.CapacityLimiter(1)

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, lanes={sorted(self.lanes)})"

    async def start(self) -> ExecutorInfo:
        """Join (or start) the cluster and read its size."""
        if self._ray is not None:
            raise ExecutorError("this RayExecutor is serving another run: make one per run")
        ray = _import_ray()
        if not ray.is_initialized():
            options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
            if self.address is None:
                options["include_dashboard"] = False
            options.update(self.init_options)
            # Joined from a worker thread: the loop keeps running, and Ray leaves the host's
            # SIGTERM handler alone (it only replaces it from the main thread, saying so).
            notice = logging.getLogger("ray._private.worker")
            notice.addFilter(_quiet_sigterm_notice)
            try:
                await anyio.to_thread.run_sync(
                    functools.partial(ray.init, address=self.address, **options)
                )
            except Exception as exc:  # any failure to join is the same to the user
                raise ExecutorError(f"ray.init(address={self.address!r}) failed: {exc}") from exc
            finally:
                notice.removeFilter(_quiet_sigterm_notice)
            self._owns_ray = True
        self._ray = ray
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        node_cpus = [int(node.get("Resources", {}).get("CPU", 0)) for node in nodes]
        cpus = sum(node_cpus)
        max_slots = self.max_slots or max(1, cpus)
        base_slots = min(self.base_slots or max(1, max(node_cpus, default=1)), max_slots)
        self._board = None  # made when an async adapter is bound: an actor is a process
        self._task = ray.remote(run_on_worker)
        self._shipped = {}
        # One waiting thread per call in flight; the engine's slots bound those.
        self._threads = anyio.CapacityLimiter(max_slots + 8)
        return ExecutorInfo(
            name="ray",
            remote_lanes=self.lanes,
            base_slots=base_slots,
            max_slots=max_slots,
            detail={"address": self.address or "local", "nodes": len(nodes), "cpus": cpus},
        )

    def bind(self, lane: Lane, adapter: Adapter[Any]) -> BoundCall:
        """Remote lanes: the adapter goes to Ray's object store once; others run here."""
        if lane not in self.lanes:
            return BoundAdapter.of(adapter).invoke
        ray = self._ray
        if ray is None:
            raise ExecutorError("RayExecutor.bind() before start()")
        options = {"num_cpus": 1, "max_retries": 0, **self.task_options[lane]}
        try:
            task = self._task.options(**options)
        except (TypeError, ValueError) as exc:
            raise InputError(f"task_options for {lane.value}: {exc}") from exc
        shipped = self._shipped.get(id(adapter))
        if shipped is None:
            try:
                shipped = ray.put(adapter)
            except Exception as exc:  # pickling fails with many types
                raise InputError(
                    f"the {lane.value} adapter ({type(adapter).__name__}) cannot be sent to Ray "
                    f"workers: {exc}. Give the built-in git adapters a repository path instead "
                    "of an open WorkspaceManager, or keep this lane local (RayExecutor(lanes=...))"
                ) from exc
            self._shipped[id(adapter)] = (shipped, adapter)
        else:
            shipped = shipped[0]
        cooperative = _is_async(adapter)
        if cooperative and self._board is None:
            self._board = ray.remote(num_cpus=0)(CancelBoard).remote()
        return functools.partial(self._call, task, shipped, cooperative=cooperative)

    async def _call(
        self,
        task: Any,  # noqa: ANN401 - a Ray remote function
        adapter: Any,  # noqa: ANN401 - the adapter's object reference
        request: object,
        *,
        cooperative: bool,
    ) -> Placed:
        ray = self._ray
        call_id = next(self._call_ids)
        # Only async adapters poll the board; sending its handle costs every other call.
        board = self._board if cooperative else None
        ref = task.remote(adapter, request, call_id, board, self.cancel_poll, trace_carrier())
        try:
            node, answer = await anyio.to_thread.run_sync(
                ray.get, ref, abandon_on_cancel=True, limiter=self._threads
            )
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._cancel(ref, call_id, cooperative=cooperative)
            raise
        except ray.exceptions.RayError as exc:
            # The adapter's own exception, as a local run would see it; else Ray's failure.
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception) and not isinstance(cause, ray.exceptions.RayError):
                raise cause from None
            raise ExecutorError(f"ray: {type(exc).__name__}: {_first_line(exc)}") from None
        return Placed(answer, f"ray:{node[:12]}")

    async def _cancel(self, ref: Any, call_id: int, *, cooperative: bool) -> None:  # noqa: ANN401 - Ray's types
        """Cancel a task and wait for it to end: cooperatively first, then by killing it."""
        ray = self._ray
        if cooperative:
            self._board.cancel.remote(call_id)
        else:
            ray.cancel(ref, force=False)
        wait = functools.partial(ray.wait, [ref], timeout=self.cancel_grace)
        ended, _ = await anyio.to_thread.run_sync(wait, limiter=self._threads)
        if not ended:
            ray.cancel(ref, force=True)
            await anyio.to_thread.run_sync(wait, limiter=self._threads)
        if cooperative:
            self._board.forget.remote(call_id)

    async def stop(self) -> None:
        """Drop the shipped adapters and the cancel board; leave Ray if this executor joined it."""
        ray = self._ray
        if ray is None:
            return
        self._shipped = {}
        if self._board is not None:
            ray.kill(self._board)
            self._board = None
        self._ray = None
        if self._owns_ray:
            self._owns_ray = False
            await anyio.to_thread.run_sync(ray.shutdown)


def _quiet_sigterm_notice(record: logging.LogRecord) -> bool:
    return "SIGTERM handler is not set" not in record.getMessage()


def _first_line(error: BaseException) -> str:
    return (str(error).strip() or type(error).__name__).splitlines()[0]
