"""What the driver says when the link or the unit id is wrong, and when it sends abort."""

from __future__ import annotations

import asyncio

import pytest

from markctl.drivers.base import Outcome, SafeStateReached
from markctl.drivers.modbus_marker import ModbusMarkerDriver
from markctl.drivers.transports.modbus import ModbusRTULink, ModbusTCPLink, ModbusTCPOptions
from markctl.errors import DeviceError, MachineTimeoutError
from markctl.layouts.program import PatternField, PatternProgram
from markctl.profiles import load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.peen_modbus import ModbusMarkerSimulator

from .conftest import peen_profile  # noqa: TID252

A1 = PatternProgram("1", (PatternField("A1", 3.0, 10.0, 10.0),))
ABORT = 2  # peen-modbus commands.abort


def aborts(sim: ModbusMarkerSimulator) -> int:
    """Abort commands the machine received (command register or abort coil)."""
    return sum(
        1
        for r in sim.requests
        if (r.function_code in (6, 16) and r.address == 0 and r.values[:1] == (ABORT,))
        or (r.function_code == 5 and r.address == 1 and r.values == (1,))
    )


async def test_wrong_unit_over_tcp_names_the_unit() -> None:
    sim = ModbusMarkerSimulator(load_profile("peen-modbus"), clock=make_clock("instant"))
    port = await sim.serve_tcp()
    link = ModbusTCPLink(f"127.0.0.1:{port}", ModbusTCPOptions(unit=9, timeout=0.3, retries=0))
    try:
        with pytest.raises(DeviceError) as info:
            await ModbusMarkerDriver(link, load_profile("peen-modbus")).connect()
        message = str(info.value)
        assert "no device with unit id 9 answers there" in message and "?unit=" in message
        assert "\n" not in message
    finally:
        await link.close()
        await sim.stop()


async def test_wrong_unit_over_rtu_is_silence_reported_with_the_unit() -> None:
    sim = ModbusMarkerSimulator(load_profile("peen-modbus"), clock=make_clock("instant"))
    port = await sim.serve_rtu_tcp()
    link = ModbusRTULink(f"socket://127.0.0.1:{port}", ModbusTCPOptions(unit=9, timeout=0.3, retries=0))
    try:
        with pytest.raises(MachineTimeoutError) as info:
            await ModbusMarkerDriver(link, load_profile("peen-modbus")).connect()
        assert "from unit 9" in str(info.value) and "answers unit id 9" in str(info.value)
        assert sim.requests == []  # the device never took the request as its own
    finally:
        await link.close()
        await sim.stop()


async def test_by_default_no_abort_is_sent_to_an_idle_machine(peen_rig) -> None:
    async with peen_rig(program=A1) as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.DONE and result.safe_state_confirmed
        await rig.driver.close()
        assert aborts(rig.sim) == 0
        assert not rig.sim.marker.stylus_down and not rig.sim.marker.busy


async def test_abort_when_idle_true_sends_it_at_job_end_and_on_close(peen_rig) -> None:
    async with peen_rig(program=A1, profile=peen_profile(abort_when_idle=True)) as rig:
        assert (await rig.driver.run(A1)).outcome is Outcome.DONE
        await rig.driver.close()
        assert aborts(rig.sim) == 2


async def test_a_cycle_that_may_be_running_is_always_aborted(peen_rig) -> None:
    long = PatternProgram("1", (PatternField("ABCDEFGHIJ", 3.0, 10.0, 10.0),))
    async with peen_rig(program=long, clock="scaled:4") as rig:
        handle = rig.driver.run(long)
        async for event in handle.watch():
            if getattr(event, "detail", "").startswith("marking"):
                break
        result = await handle.abort()
        assert result.outcome is Outcome.ABORTED and result.safe_state_confirmed
        assert aborts(rig.sim) == 1 and rig.sim.marker.cycles[-1].outcome == "aborted"
        assert not rig.sim.marker.stylus_down


async def test_a_fault_stops_the_cycle_and_is_confirmed_without_abort(peen_rig) -> None:
    async with peen_rig(program=A1, faults="jam@cycle:1") as rig:
        seen: list[SafeStateReached] = []
        handle = rig.driver.run(A1)
        async for event in handle.watch():
            if isinstance(event, SafeStateReached):
                seen.append(event)
        result = await handle
        assert result.outcome is Outcome.FAULT and result.safe_state_confirmed
        assert seen and seen[-1].method.startswith("no abort needed: status fault")
        assert aborts(rig.sim) == 0 and not rig.sim.marker.stylus_down


async def test_an_abort_that_arrives_with_the_answer_is_not_lost() -> None:
    # pymodbus awaits each answer with asyncio.wait_for, which on Python 3.11 returns the answer and
    # drops a cancellation that lands in the same loop turn (gh-86296). The link awaits the request
    # through a shield, so the operator's abort reaches the job whatever pymodbus does inside.
    link = ModbusTCPLink("127.0.0.1:1")
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def as_pymodbus_waits() -> int:
        return await asyncio.wait_for(answer, 5)

    task = asyncio.create_task(link._uncancelled(as_pymodbus_waits))
    await asyncio.sleep(0)  # the request is waiting for its answer
    answer.set_result(1)
    task.cancel()  # the operator's abort, in the same turn
    with pytest.raises(asyncio.CancelledError):
        await task
