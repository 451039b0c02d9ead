"""The driver contract: one job at a time, events for everything, and safe state on every end.

A driver turns a :class:`~markctl.layouts.program.Program` into protocol traffic over a
:class:`~markctl.drivers.transports.ByteTransport` (or a Modbus client), reports normalised
:class:`State` and progress as :class:`Event` objects, and **always ends in a safe state**:

* Every end of a job (done, device error, alarm, abort, cancellation, lost link, any exception)
  passes through :meth:`Driver.safe_state`, and so does :meth:`Driver.close`.
* ``safe_state`` is shielded from cancellation, bounded in time, and shared by concurrent
  callers (one in-flight attempt). It emits :class:`SafeStateReached` naming how the beam or
  stylus was made safe, or :class:`SafeStateUnconfirmed` with the reason, after one last
  unacknowledged stop command (:meth:`Driver._last_resort`); the driver then lands in
  ``NEEDS_RECOVERY`` and refuses new jobs until :meth:`Driver.recover`.
* A job's end survives further cancellation: its result and JobEnded event are never lost.
* Never auto-resume after a lost link: a job that lost its link leaves the driver in
  ``NEEDS_RECOVERY`` even when the reset was confirmed, and recovery is an explicit call.

A family implements four coroutines: ``_handshake`` (connect), ``_execute`` (one job),
``_make_safe`` (beam off / stylus retracted, confirmed) and optionally ``_pause``/``_resume``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from markctl.errors import (
    AlarmError,
    DeviceError,
    MachineConnectionError,
    MachineError,
    MachineTimeoutError,
    MarkctlError,
    SafetyError,
)

if TYPE_CHECKING:
    from markctl.layouts.program import Program
    from markctl.profiles import FirmwareProfile

__all__ = [
    "CommLog",
    "DeviceInfo",
    "Driver",
    "DriverOptions",
    "Event",
    "JobEnded",
    "JobHandle",
    "JobResult",
    "JobStarted",
    "Outcome",
    "Progress",
    "SafeStateReached",
    "SafeStateUnconfirmed",
    "State",
    "StateChanged",
]


class State(StrEnum):
    """Normalised machine state; drivers keep the raw text in :class:`StateChanged`."""

    CONNECTING = "connecting"
    IDLE = "idle"
    RUN = "run"
    HOLD = "hold"
    JOG = "jog"
    HOME = "home"
    CHECK = "check"
    SLEEP = "sleep"
    TOOL = "tool"
    DOOR = "door"
    ALARM = "alarm"
    FAULT = "fault"
    DISCONNECTED = "disconnected"
    NEEDS_RECOVERY = "needs-recovery"


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every driver event; ``t`` is ``time.monotonic()`` when it was emitted."""

    t: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged(Event):
    state: State
    raw: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress(Event):
    """``done`` of ``total`` units (lines acknowledged, dots struck, percent...)."""

    done: int
    total: int
    detail: str = ""
    position: tuple[float, float] | None = None

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


@dataclass(frozen=True, slots=True, kw_only=True)
class CommLog(Event):
    """Every byte in or out, for support and for tests."""

    direction: str  # "tx" or "rx"
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SafeStateReached(Event):
    reason: str
    method: str  # how: e.g. "feed hold, soft reset, status Idle with FS:0,0"


@dataclass(frozen=True, slots=True, kw_only=True)
class SafeStateUnconfirmed(Event):
    reason: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStarted(Event):
    job_id: int
    digest: str
    total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEnded(Event):
    job_id: int
    result: JobResult


# --- jobs -------------------------------------------------------------------------------------


class Outcome(StrEnum):
    DONE = "done"
    ERROR = "error"  # the machine refused a command (error:N, NAK, Modbus exception)
    ALARM = "alarm"  # interlock, limit, e-stop, door
    FAULT = "fault"  # the machine reported a fault during the cycle
    ABORTED = "aborted"  # the host asked to stop
    CONNECTION_LOST = "connection-lost"
    TIMEOUT = "timeout"
    INTERNAL = "internal"  # a bug or unexpected exception on the host side


@dataclass(frozen=True, slots=True)
class JobResult:
    """How a job ended and how far it got.

    ``done``/``total`` are in the driver's progress units (lines acknowledged for GRBL,
    characters or percent for pattern machines); ``line`` is the program line a device error
    refers to, when known; ``safe_state_confirmed`` says whether the end was confirmed safe.
    """

    outcome: Outcome
    message: str = ""
    code: str | None = None
    line: int | None = None
    done: int = 0
    total: int = 0
    safe_state_confirmed: bool = False
    # False only when the driver knows nothing that can cut was sent (it calls job.begin_cycle()
    # right before the first such byte): then the weapon was not touched and may be marked again.
    cycle_started: bool = True

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DONE


class JobHandle:
    """A running job: awaitable for its :class:`JobResult`, watchable for its events."""

    def __init__(self, driver: Driver, job_id: int) -> None:
        self._driver = driver
        self.job_id = job_id
        self._task: asyncio.Task[JobResult] | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._result: JobResult | None = None
        self._ending = False  # the job's work is over; it is bringing the machine to its safe state
        self.cycle_started = False  # set by begin_cycle(): something that can cut may have been sent
        self.done_units = 0
        self.total_units = 0

    def _bind(self, task: asyncio.Task[JobResult]) -> None:
        self._task = task

    def _post(self, event: Event) -> None:
        self._events.put_nowait(event)
        if isinstance(event, JobEnded):
            self._result = event.result

    def begin_cycle(self) -> None:
        """Called by the driver right before it sends the first byte that can mark (a motion line,
        Go, Start). Until then a failed job has certainly not touched the weapon."""
        self.cycle_started = True

    def report(
        self, done: int, total: int, detail: str = "", position: tuple[float, float] | None = None
    ) -> None:
        """Called by the driver's ``_execute`` as the job advances."""
        self.done_units, self.total_units = done, total
        self._driver.emit(Progress(done=done, total=total, detail=detail, position=position))

    @property
    def result(self) -> JobResult | None:
        return self._result

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def __await__(self) -> Generator[Any, None, JobResult]:
        return self._wait().__await__()

    async def _wait(self) -> JobResult:
        assert self._task is not None
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            # Whoever awaited us was cancelled (Ctrl-C, a closing service): abort the job and
            # let it reach its safe state before the cancellation goes on. Once the job is making
            # the machine safe there is nothing left to abort.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._driver.safe_state_timeout_s + 1
            with contextlib.suppress(asyncio.CancelledError):
                while not self._task.done() and not self._ending and loop.time() < deadline:
                    self._task.cancel()  # repeated: see abort()
                    await asyncio.wait({self._task}, timeout=0.2)
                await asyncio.wait({self._task}, timeout=max(0.0, deadline - loop.time()))
            raise

    async def watch(self) -> AsyncIterator[Event]:
        """Every event of this job, ending with its :class:`JobEnded`."""
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, JobEnded):
                return

    async def abort(self) -> JobResult:
        """Stop the job; returns its result once the machine is safe (or declared unconfirmed)."""
        assert self._task is not None
        # Repeat the request until the job is ending: Python 3.11's asyncio.wait_for swallows a
        # cancellation that arrives just as the future it waits for completes (CPython gh-86296),
        # and a driver waiting that way would go on marking.
        while not self._task.done() and not self._ending:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=0.2)
        return await asyncio.shield(self._task)

    async def pause(self) -> None:
        await self._driver._pause()

    async def resume(self) -> None:
        await self._driver._resume()


# --- the driver -------------------------------------------------------------------------------


class DriverOptions(BaseModel):
    """Base of every driver's option model (address query options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the handshake learned about the machine."""

    family: str
    dialect: str
    version: str
    banner: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class Driver(ABC):
    """Base class of every driver family; see the module docstring for the contract."""

    family: ClassVar[str]
    options_model: ClassVar[type[DriverOptions]] = DriverOptions
    transports: ClassVar[frozenset[str]] = frozenset()
    safe_state_timeout_s: ClassVar[float] = 5.0
    last_resort_timeout_s: ClassVar[float] = 1.0
    history_size: ClassVar[int] = 20_000

    def __init__(
        self,
        transport: Any,
        profile: FirmwareProfile,
        options: DriverOptions | None = None,
        *,
        name: str = "",
    ) -> None:
        self.transport = transport
        self.profile = profile
        self.options = options if options is not None else self.options_model()
        self.name = name or f"{self.family}:{profile.id}"
        self.info: DeviceInfo | None = None
        self.history: deque[Event] = deque(maxlen=self.history_size)
        self._subscribers: list[asyncio.Queue[Event]] = []
        self._state = State.DISCONNECTED
        self._job: JobHandle | None = None
        self._job_counter = 0
        self._safe_task: asyncio.Task[bool] | None = None
        self._connected = False
        self._closed = False

    # --- events ------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Record an event and hand it to every subscriber and to the running job."""
        self.history.append(event)
        for queue in self._subscribers:
            queue.put_nowait(event)
        if self._job is not None and not isinstance(event, CommLog):
            self._job._post(event)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Event]]:
        """``async with driver.subscribe() as events:`` receive every event until the block ends."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            yield queue
        finally:
            self._subscribers.remove(queue)

    def events_of(self, kind: type[Event]) -> list[Event]:
        """Recorded events of one type (tests and diagnostics)."""
        return [e for e in self.history if isinstance(e, kind)]

    @property
    def state(self) -> State:
        return self._state

    def set_state(self, state: State, raw: str = "") -> None:
        if state is not self._state:
            self._state = state
            self.emit(StateChanged(state=state, raw=raw))

    def log(self, direction: str, data: bytes) -> None:
        self.emit(CommLog(direction=direction, data=bytes(data)))

    # --- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> DeviceInfo:
        """Open the transport and run the handshake; the machine is usable only after this."""
        self.set_state(State.CONNECTING)
        try:
            await self.transport.open()
            self.info = await self._handshake()
        except BaseException:
            self.set_state(State.DISCONNECTED)
            with contextlib.suppress(Exception):
                await self.transport.close()
            raise
        self._connected = True
        self._closed = False
        return self.info

    async def close(self) -> None:
        """Make the machine safe, then close the link. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._job is not None and not self._job.done():
                await self._job.abort()
            if self._connected:
                await self.safe_state("close")
        finally:
            self._connected = False
            with contextlib.suppress(Exception):
                await self.transport.close()
            if self._state is not State.NEEDS_RECOVERY:
                self.set_state(State.DISCONNECTED)

    async def __aenter__(self) -> Driver:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self) -> None:
        if getattr(self, "_connected", False) and not getattr(self, "_closed", True):
            warnings.warn(
                f"{self.name} was never closed: its safe state was not confirmed", ResourceWarning, 2
            )

    async def recover(self) -> DeviceInfo:
        """After a lost link or an unconfirmed safe state: reconnect and handshake again."""
        if self._job is not None and not self._job.done():
            raise MachineError("a job is still running; abort it first", address=self.name)
        with contextlib.suppress(Exception):
            await self.transport.close()
        self._connected = False
        info = await self.connect()
        if not await self.safe_state("recover"):
            raise SafetyError("recovered the link but could not confirm a safe state", address=self.name)
        return info

    # --- jobs --------------------------------------------------------------------------------

    def run(self, program: Program) -> JobHandle:
        """Start marking ``program``; returns at once with the job's handle."""
        if not self._connected:
            raise MachineConnectionError(f"{self.name}: not connected", address=self.name)
        if self._state is State.NEEDS_RECOVERY:
            raise SafetyError(
                f"{self.name}: needs recovery (the last safe state was not confirmed, or the link was lost)",
                address=self.name,
                hint="inspect the machine and re-establish its position, then call recover()",
            )
        if self._job is not None and not self._job.done():
            raise MachineError(f"{self.name}: a job is already running", address=self.name)
        self._check_program(program)
        self._job_counter += 1
        handle = JobHandle(self, self._job_counter)
        self._job = handle
        handle._bind(
            asyncio.create_task(self._job_main(program, handle), name=f"{self.name} job {handle.job_id}")
        )
        return handle

    @abstractmethod
    def _check_program(self, program: Program) -> None:
        """Raise ValueError for a program this family cannot mark, before anything is sent."""

    async def _job_main(self, program: Program, handle: JobHandle) -> JobResult:
        self.emit(JobStarted(job_id=handle.job_id, digest=program.digest, total=handle.total_units))
        reason = "job done"
        try:
            result = await self._execute(program, handle)
            if not result.ok:
                reason = f"job {result.outcome.value}"
        except asyncio.CancelledError:
            result = self._ended(handle, Outcome.ABORTED, "aborted by the host")
            reason = "abort"
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except MachineConnectionError as exc:
            result = self._ended(handle, Outcome.CONNECTION_LOST, str(exc))
            reason = "connection lost"
        except MachineTimeoutError as exc:
            result = self._ended(handle, Outcome.TIMEOUT, str(exc), exc.code)
            reason = "timeout"
        except AlarmError as exc:
            result = self._ended(handle, Outcome.ALARM, str(exc), exc.alarm_code)
            reason = "alarm"
        except DeviceError as exc:
            result = self._ended(handle, Outcome.ERROR, str(exc), exc.device_code)
            reason = "device error"
        except MarkctlError as exc:
            result = self._ended(handle, Outcome.ERROR, str(exc), exc.code)
            reason = "error"
        except Exception as exc:  # a bug must still end in a safe state, and be reported
            result = self._ended(handle, Outcome.INTERNAL, f"{type(exc).__name__}: {exc}")
            reason = "internal error"
        handle._ending = True
        confirmed = await self._safe_state_to_the_end(reason)
        if result.outcome is Outcome.CONNECTION_LOST:
            # Never auto-resume after a drop: even a confirmed reset may have lost position (a
            # reopened USB link resets many boards), so the operator re-establishes it first.
            self.set_state(State.NEEDS_RECOVERY, raw="the link was lost during a job")
        final = JobResult(
            outcome=result.outcome,
            message=result.message,
            code=result.code,
            line=result.line,
            done=result.done,
            total=result.total,
            safe_state_confirmed=confirmed,
            cycle_started=result.ok or handle.cycle_started,
        )
        self.emit(JobEnded(job_id=handle.job_id, result=final))
        return final

    @staticmethod
    def _ended(handle: JobHandle, outcome: Outcome, message: str, code: str | None = None) -> JobResult:
        return JobResult(outcome, message, code, None, handle.done_units, handle.total_units)

    # --- safe state --------------------------------------------------------------------------

    async def safe_state(self, reason: str) -> bool:
        """Beam off / stylus retracted, confirmed. Shielded, time-bounded, shared by concurrent callers."""
        task = self._safe_task
        if task is None or task.done():
            task = asyncio.ensure_future(self._safe_state_once(reason))
            self._safe_task = task
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # Our caller is being cancelled; the attempt goes on to its end before we let go.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task}, timeout=self.safe_state_timeout_s + 1)
            raise

    async def _safe_state_to_the_end(self, reason: str) -> bool:
        """The end of a job: wait for the shared safe-state attempt even if cancelled meanwhile.

        A job's result and its JobEnded event must not be lost to a second abort or a Ctrl-C that
        arrives while the machine is being made safe; the attempt is bounded in time anyway.
        """
        task = self._safe_task
        if task is None or task.done():
            task = asyncio.ensure_future(self._safe_state_once(reason))
            self._safe_task = task
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()

    async def _safe_state_once(self, reason: str) -> bool:
        try:
            async with asyncio.timeout(self.safe_state_timeout_s):
                method = await self._make_safe(reason)
        except Exception as exc:
            error = (
                f"no confirmation within {self.safe_state_timeout_s:g} s"
                if isinstance(exc, TimeoutError) and not isinstance(exc, MarkctlError)
                else f"{type(exc).__name__}: {exc}"
            )
            try:
                async with asyncio.timeout(self.last_resort_timeout_s):
                    last = await self._last_resort()
            except Exception as second:  # the link may be gone: nothing more software can do
                last = f"last resort failed: {type(second).__name__}: {second}"
            if last:
                error = f"{error}; {last}"
            self.emit(SafeStateUnconfirmed(reason=reason, error=error))
            self.set_state(State.NEEDS_RECOVERY, raw=error)
            return False
        self.emit(SafeStateReached(reason=reason, method=method))
        return True

    # --- what a family implements --------------------------------------------------------------

    @abstractmethod
    async def _handshake(self) -> DeviceInfo:
        """Talk to a freshly opened link until the machine is known and ready."""

    @abstractmethod
    async def _execute(self, program: Program, job: JobHandle) -> JobResult:
        """Mark ``program``; report progress with ``job.report``; raise MachineError subclasses on failure."""

    @abstractmethod
    async def _make_safe(self, reason: str) -> str:
        """Turn the beam off / retract the stylus and confirm it; return how. Raise if unconfirmed."""

    async def _last_resort(self) -> str:
        """When the safe state cannot be confirmed: one unacknowledged stop command, if the link allows.

        Returns what was sent (for the SafeStateUnconfirmed event), or "" if the family has none.
        """
        return ""

    async def _pause(self) -> None:
        raise MachineError(f"{self.name}: pause is not supported", address=self.name)

    async def _resume(self) -> None:
        raise MachineError(f"{self.name}: resume is not supported", address=self.name)
