"""The driver contract (drivers/base.py) on both pattern-machine drivers, over every way they connect:
Telesis over the in-process pipe, a real pty and TCP; the Modbus marker over pymodbus TCP and RTU
on a pty pair. Same assertions for all: events in order, safe state on every end, refusals early.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from markctl.drivers.base import (
    Driver,
    JobEnded,
    JobStarted,
    Outcome,
    Progress,
    SafeStateReached,
    State,
)
from markctl.drivers.modbus_marker import ModbusMarkerDriver
from markctl.drivers.telesis import TelesisDriver
from markctl.drivers.transports import PipeTransport, SerialTransport, TCPTransport
from markctl.drivers.transports.modbus import ModbusRTULink, ModbusTCPLink
from markctl.errors import MachineError
from markctl.layouts.program import MotionProgram, PatternField, PatternProgram, ProcessParams
from markctl.profiles import FirmwareProfile, load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.peen_modbus import ModbusMarkerSimulator
from markctl.simulator.serve import PtyBridge, serve_tcp
from markctl.simulator.telesis import TelesisSimulator

WAYS = ["telesis-pipe", "telesis-pty", "telesis-tcp", "peen-modbus-tcp", "peen-modbus-rtu"]
TEXT = PatternField("AB12-XY/7Z", 3.0, 10.0, 12.0)


@dataclass
class Machine:
    driver: Driver
    sim: Any  # TelesisSimulator | ModbusMarkerSimulator
    program: PatternProgram


def fast(profile_id: str, key: str) -> FirmwareProfile:
    data = load_profile(profile_id).model_dump()
    data["protocol"][key] = 50.0  # quick polls; the pacing is tested on its own
    return FirmwareProfile.model_validate(data)


@asynccontextmanager
async def machine(way: str, *, faults: str = "", clock: str = "instant") -> AsyncIterator[Machine]:
    async with AsyncExitStack() as stack:
        if way.startswith("telesis"):
            profile = fast("telesis-tmp", "status_poll_hz_max")
            tsim = TelesisSimulator(profile, clock=make_clock(clock), faults=faults)
            await tsim.start()
            stack.push_async_callback(tsim.stop)
            transport: Any
            if way == "telesis-pipe":
                transport = PipeTransport("sim://telesis-tmp", sink=tsim.receive)
                tsim.attach(transport.feed, transport.hang_up)
            elif way == "telesis-pty":
                bridge = PtyBridge(tsim)
                bridge.start()
                stack.callback(bridge.close)
                transport = SerialTransport(bridge.path)
            else:
                server, port = await serve_tcp(tsim)
                stack.push_async_callback(server.wait_closed)
                stack.callback(server.close)
                transport = TCPTransport(f"127.0.0.1:{port}")
            driver: Driver = TelesisDriver(transport, profile)
            sim: Any = tsim
            program = PatternProgram("SERIAL", (TEXT,))
        else:
            profile = fast("peen-modbus", "poll_hz_max")
            msim = ModbusMarkerSimulator(profile, clock=make_clock(clock), faults=faults)
            stack.push_async_callback(msim.stop)
            if way == "peen-modbus-tcp":
                link: ModbusTCPLink | ModbusRTULink = ModbusTCPLink(f"127.0.0.1:{await msim.serve_tcp()}")
            else:
                link = ModbusRTULink(await msim.serve_rtu_pty())
            stack.push_async_callback(link.close)
            driver = ModbusMarkerDriver(link, profile)
            sim = msim
            program = PatternProgram("12", (TEXT,))
        await driver.connect()
        stack.push_async_callback(driver.close)
        yield Machine(driver, sim, program)


@pytest.mark.parametrize("way", WAYS)
async def test_a_job_emits_started_progress_safe_ended(way: str) -> None:
    async with machine(way) as m:
        assert m.driver.state is State.IDLE and m.driver.info is not None
        assert m.driver.info.family == m.driver.family
        handle = m.driver.run(m.program)
        events = [e async for e in handle.watch()]
        result = await handle
        kinds = [type(e) for e in events]
        assert kinds[0] is JobStarted and kinds[-1] is JobEnded
        assert Progress in kinds and kinds.index(SafeStateReached) < kinds.index(JobEnded)
        assert result.ok and result.safe_state_confirmed and (result.done, result.total) == (10, 10)
        assert m.sim.marker.cycles[-1].outcome == "done"


@pytest.mark.parametrize("way", WAYS)
async def test_a_fault_ends_safe_with_how_far_it_got(way: str) -> None:
    async with machine(way, faults="jam@cycle:1") as m:
        result = await m.driver.run(m.program)
        assert result.outcome is Outcome.FAULT and result.code == "2"
        assert 0 < result.done < result.total and result.safe_state_confirmed
        assert not m.sim.marker.stylus_down


@pytest.mark.parametrize("way", WAYS)
async def test_refusals_come_before_any_traffic(way: str) -> None:
    async with machine(way, clock="scaled:2") as m:
        motion = MotionProgram(strokes=(), params=(ProcessParams(speed_mm_min=100, force_pct=50),))
        with pytest.raises(ValueError):
            m.driver.run(motion)
        handle = m.driver.run(m.program)
        with pytest.raises(MachineError, match="already running"):
            m.driver.run(m.program)
        # a cancelled awaiter aborts the job, which still ends in a confirmed safe state
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(handle, 0.05)
        result = await handle
        assert result.outcome is Outcome.ABORTED and result.safe_state_confirmed


@pytest.mark.parametrize("way", WAYS)
async def test_close_is_safe_and_idempotent(way: str) -> None:
    async with machine(way) as m:
        await m.driver.close()
        await m.driver.close()
        assert m.driver.state is State.DISCONNECTED
        assert [e.reason for e in m.driver.events_of(SafeStateReached)] == ["close"]  # type: ignore[attr-defined]
