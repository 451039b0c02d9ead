"""The driver base class ends every job in a safe state and says so in its events.

``EchoMarker`` is a deliberately small driver over the in-process pipe: each pattern field is one
command line, answered ``ok`` by the far end, which tests script to fail in each way a real
machine can (refuse, alarm, drop the link, hang). The contract under test is the base class's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from markctl.drivers.base import (
    DeviceInfo,
    Driver,
    JobEnded,
    JobHandle,
    JobResult,
    Outcome,
    SafeStateReached,
    SafeStateUnconfirmed,
    State,
)
from markctl.drivers.transports import PipeTransport
from markctl.errors import AlarmError, DeviceError, MachineTimeoutError, SafetyError
from markctl.layouts.program import PatternField, PatternProgram, Program
from markctl.profiles import load_profile


class EchoMarker(Driver):
    family = "echo"
    safe_state_timeout_s = 0.5

    def __init__(self, transport: PipeTransport) -> None:
        super().__init__(transport, load_profile("telesis-tmp"), name="echo")
        self.safe_commands = 0
        self.beam_on = False

    async def _handshake(self) -> DeviceInfo:
        self.set_state(State.IDLE)
        return DeviceInfo(family="echo", dialect="echo", version="1")

    def _check_program(self, program: Program) -> None:
        if not isinstance(program, PatternProgram):
            raise ValueError("echo marks pattern programs only")

    async def _request(self, line: str) -> str:
        await self.transport.write(line.encode() + b"\n")
        reply = await self.transport.read(timeout=0.3)
        if not reply:
            raise MachineTimeoutError("no reply", address=self.name)
        return reply.decode().strip()

    async def _execute(self, program: Program, job: JobHandle) -> JobResult:
        assert isinstance(program, PatternProgram)
        self.beam_on = True
        self.set_state(State.RUN)
        for i, f in enumerate(program.fields):
            reply = await self._request(f"MARK {f.text}")
            if reply.startswith("error:"):
                raise DeviceError(f"refused {f.text!r}", device_code=reply)
            if reply.startswith("ALARM:"):
                raise AlarmError("e-stop", alarm_code=reply)
            job.report(i + 1, len(program.fields))
        self.set_state(State.IDLE)
        return JobResult(Outcome.DONE, done=len(program.fields), total=len(program.fields))

    async def _make_safe(self, reason: str) -> str:
        self.safe_commands += 1
        reply = await self._request("STOP")
        if reply != "ok":
            raise SafetyError(f"stop not confirmed: {reply}")
        self.beam_on = False
        return "STOP acknowledged"


class FarEnd:
    """The scripted machine: ``behaviour(line)`` returns the reply, or None for silence."""

    def __init__(self, behaviour: Callable[[str], bytes | None]) -> None:
        self.lines: list[str] = []
        self.behaviour = behaviour
        self.pipe = PipeTransport("echo", self.receive)

    def receive(self, data: bytes) -> None:
        for line in data.decode().splitlines():
            self.lines.append(line)
            reply = self.behaviour(line)
            if reply is not None:
                self.pipe.feed(reply)


PROGRAM = PatternProgram("p", tuple(PatternField(t, 3.0, 0, 0) for t in ("GB", "26", "A123")))


async def _run(behaviour: Callable[[str], bytes | None]) -> tuple[EchoMarker, FarEnd, JobResult]:
    far = FarEnd(behaviour)
    driver = EchoMarker(far.pipe)
    await driver.connect()
    result = await driver.run(PROGRAM)
    return driver, far, result


def _assert_safe_and_said_so(driver: EchoMarker, result: JobResult) -> None:
    assert not driver.beam_on
    assert result.safe_state_confirmed
    reached = driver.events_of(SafeStateReached)
    assert reached and reached[-1].method == "STOP acknowledged"  # type: ignore[attr-defined]
    ended = driver.events_of(JobEnded)
    assert ended[-1].result == result  # type: ignore[attr-defined]


async def test_success_ends_safe() -> None:
    driver, far, result = await _run(lambda line: b"ok\n")
    assert result.outcome is Outcome.DONE and result.done == 3
    assert far.lines == ["MARK GB", "MARK 26", "MARK A123", "STOP"]
    _assert_safe_and_said_so(driver, result)
    await driver.close()


async def test_device_error_ends_safe_with_code() -> None:
    driver, far, result = await _run(lambda line: b"error:20\n" if line == "MARK 26" else b"ok\n")
    assert result.outcome is Outcome.ERROR and result.code == "error:20" and result.done == 1
    assert far.lines[-1] == "STOP"
    _assert_safe_and_said_so(driver, result)
    await driver.close()


async def test_alarm_ends_safe() -> None:
    driver, _, result = await _run(lambda line: b"ALARM:1\n" if line.startswith("MARK") else b"ok\n")
    assert result.outcome is Outcome.ALARM and result.code == "ALARM:1"
    _assert_safe_and_said_so(driver, result)
    await driver.close()


async def test_exception_in_driver_ends_safe_and_is_reported() -> None:
    far = FarEnd(lambda line: b"ok\n")
    driver = EchoMarker(far.pipe)
    await driver.connect()

    async def boom(program: Program, job: JobHandle) -> JobResult:
        driver.beam_on = True
        raise ZeroDivisionError("bug")

    driver._execute = boom  # type: ignore[method-assign]
    result = await driver.run(PROGRAM)
    assert result.outcome is Outcome.INTERNAL and "ZeroDivisionError" in result.message
    _assert_safe_and_said_so(driver, result)
    await driver.close()


async def test_abort_and_cancelled_awaiter_end_safe() -> None:
    release = asyncio.Event()
    far = FarEnd(lambda line: None if line.startswith("MARK") else b"ok\n")
    driver = EchoMarker(far.pipe)
    driver.safe_state_timeout_s = 2.0
    await driver.connect()

    async def slow(program: Program, job: JobHandle) -> JobResult:
        driver.beam_on = True
        await release.wait()
        raise AssertionError("never released")

    driver._execute = slow  # type: ignore[method-assign]
    job = driver.run(PROGRAM)
    await asyncio.sleep(0.01)
    result = await job.abort()
    assert result.outcome is Outcome.ABORTED
    _assert_safe_and_said_so(driver, result)

    job2 = driver.run(PROGRAM)
    waiter = asyncio.create_task(job2._wait())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert job2.done() and job2.result is not None and job2.result.outcome is Outcome.ABORTED
    assert not driver.beam_on
    await driver.close()


async def test_lost_link_is_unconfirmed_and_blocks_new_jobs() -> None:
    holder: list[FarEnd] = []

    def behaviour(line: str) -> bytes | None:
        if line == "MARK 26":
            holder[0].pipe.hang_up("cable pulled")
            return None
        return b"ok\n"

    far = FarEnd(behaviour)
    holder.append(far)
    driver = EchoMarker(far.pipe)
    await driver.connect()
    result = await driver.run(PROGRAM)
    assert result.outcome is Outcome.CONNECTION_LOST and "cable pulled" in result.message
    assert result.done == 1 and not result.safe_state_confirmed
    unconfirmed = driver.events_of(SafeStateUnconfirmed)
    assert unconfirmed and "cable pulled" in unconfirmed[-1].error  # type: ignore[attr-defined]
    assert driver.state is State.NEEDS_RECOVERY
    with pytest.raises(SafetyError, match="not confirmed"):
        driver.run(PROGRAM)
    await driver.close()


async def test_silent_machine_times_out_and_safe_state_is_bounded() -> None:
    driver, _, result = await _run(lambda line: None)
    assert result.outcome is Outcome.TIMEOUT
    assert not result.safe_state_confirmed and driver.state is State.NEEDS_RECOVERY
    await driver.close()


async def test_concurrent_safe_state_calls_share_one_attempt() -> None:
    far = FarEnd(lambda line: b"ok\n")
    driver = EchoMarker(far.pipe)
    await driver.connect()
    results = await asyncio.gather(*(driver.safe_state("x") for _ in range(5)))
    assert results == [True] * 5 and driver.safe_commands == 1
    await driver.close()


async def test_close_is_idempotent_and_makes_safe() -> None:
    far = FarEnd(lambda line: b"ok\n")
    async with EchoMarker(far.pipe) as driver:
        assert driver.state is State.IDLE
    await driver.close()
    assert far.lines == ["STOP"] and driver.state is State.DISCONNECTED


async def test_wrong_program_is_refused_before_any_byte() -> None:
    from markctl.layouts.program import MotionProgram, ProcessParams

    far = FarEnd(lambda line: b"ok\n")
    driver = EchoMarker(far.pipe)
    await driver.connect()
    with pytest.raises(ValueError, match="pattern programs only"):
        driver.run(MotionProgram(strokes=(), params=(ProcessParams(speed_mm_min=100, power_pct=10),)))
    assert far.lines == []
    await driver.close()


async def test_cancels_during_the_safe_state_do_not_lose_the_result() -> None:
    # A second abort, a Ctrl-C on the awaiter and close() may all arrive while the job is already
    # making the machine safe: the result and JobEnded must survive them.
    gate = asyncio.Event()
    far = FarEnd(lambda line: b"error:20\n" if line.startswith("MARK") else b"ok\n")
    driver = EchoMarker(far.pipe)
    driver.safe_state_timeout_s = 5.0
    await driver.connect()
    original = driver._make_safe

    async def slow_make_safe(reason: str) -> str:
        await gate.wait()
        return await original(reason)

    driver._make_safe = slow_make_safe  # type: ignore[method-assign]
    job = driver.run(PROGRAM)
    watcher = asyncio.create_task(_collect(job))
    for _ in range(50):
        if job._ending:
            break
        await asyncio.sleep(0.01)
    assert job._ending
    first = asyncio.create_task(job.abort())
    second = asyncio.create_task(job.abort())
    waiter = asyncio.create_task(job._wait())
    await asyncio.sleep(0.05)
    waiter.cancel()
    gate.set()
    results = await asyncio.gather(first, second)
    assert all(
        r.outcome is Outcome.ERROR and r.code == "error:20" and r.safe_state_confirmed for r in results
    )
    with pytest.raises(asyncio.CancelledError):
        await waiter
    events = await asyncio.wait_for(watcher, 5)
    assert isinstance(events[-1], JobEnded) and events[-1].result.code == "error:20"
    assert job.result is not None and job.result.outcome is Outcome.ERROR and not driver.beam_on
    driver._make_safe = original  # type: ignore[method-assign]
    await driver.close()


async def _collect(job: JobHandle) -> list[object]:
    return [event async for event in job.watch()]
