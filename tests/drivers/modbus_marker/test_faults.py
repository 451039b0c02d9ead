"""Modbus marker faults: each ends in a safe state (or says it could not), with an error that names
the register and a result that says how far the cycle got; the simulator confirms the stop.

Request numbers (``@msg:N``) count requests the server received. For the A1 job below:
1 status block, 2-5 discrete inputs (handshake; the status is still fresh when the job starts),
6 pattern, 7 command=load_pattern, 8 status, 9 text block, 10 char_height..speed_pct,
11 field origins, 12 command=start, 13.. status polls.
"""

from __future__ import annotations

import asyncio

import pytest

from markctl.drivers.base import Outcome, Progress, State
from markctl.drivers.modbus_marker import ModbusMarkerDriver
from markctl.drivers.transports.modbus import ModbusTCPLink, ModbusTCPOptions
from markctl.errors import DeviceError, MachineConnectionError, MachineTimeoutError
from markctl.layouts.program import PatternField, PatternProgram
from markctl.profiles import FirmwareProfile, load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.peen import FieldSlot, Pattern
from markctl.simulator.peen_modbus import ModbusMarkerSimulator

A1 = PatternProgram("7", (PatternField("A1", 4.0, 20.0, 30.0),))
LONG = PatternProgram("7", (PatternField("AB12-XY/7Z", 3.0, 10.0, 12.0),))
QUICK = ModbusTCPOptions(timeout=0.2, retries=0)


def peen_profile(**protocol: object) -> FirmwareProfile:
    data = load_profile("peen-modbus").model_dump()
    data["protocol"].update(protocol)
    return FirmwareProfile.model_validate(data)


def assert_stopped(sim: ModbusMarkerSimulator) -> None:
    """The cycle was stopped, and no dot was struck after the moment it was stopped."""
    cycle = sim.marker.cycles[-1]
    assert cycle.ended_t is not None and cycle.stopped_t is not None, "the cycle was not stopped"
    assert all(s.t <= cycle.stopped_t for s in sim.marker.strikes if s.cycle == cycle.number)


async def test_exception_response_names_the_register(peen_rig) -> None:
    async with peen_rig(program=A1, faults="exception@msg:9=4") as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.ERROR and result.code == "modbus-exception:4"
        assert (
            "text[32] (holding 10)" in result.message
            and "exception 4 (server device failure)" in result.message
        )
        assert result.safe_state_confirmed and (result.done, result.total) == (0, 2)
        assert rig.sim.marker.cycles == []


async def test_no_answer_is_a_timeout_naming_the_register(peen_rig) -> None:
    async with peen_rig(program=A1, faults="noreply@msg:12", link_options=QUICK) as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.TIMEOUT and result.code == "modbus-timeout"
        assert "no answer for command (holding 0) within 0.2 s" in result.message
        # the start was never acted on; the next requests were answered, so the abort is confirmed
        assert result.safe_state_confirmed and rig.sim.marker.cycles == []


@pytest.mark.parametrize(
    ("faults", "code", "text"),
    [
        ("fault@cycle:1=3", "3", "Axis position error"),
        ("estop@cycle:1", "1", "Emergency stop"),
        ("jam@cycle:1", "2", "Stylus jammed"),
    ],
)
async def test_fault_mid_cycle(peen_rig, faults: str, code: str, text: str) -> None:
    async with peen_rig(program=LONG, faults=faults) as rig:
        result = await rig.driver.run(LONG)
        cycle = rig.sim.marker.cycles[-1]
        assert result.outcome is Outcome.FAULT and result.code == code and text in result.message
        assert cycle.outcome == "fault" and 0 < cycle.dots_struck < cycle.dots_total
        # progress % is what the map reports: the result converts it back to characters
        assert result.total == 10 and result.done == cycle.chars_done  # 10 % per character here
        assert "progress" in result.message and result.safe_state_confirmed
        assert_stopped(rig.sim)


async def test_link_drop_mid_cycle_then_explicit_recovery(peen_rig) -> None:
    async with peen_rig(program=LONG, faults="drop@cycle:1") as rig:
        result = await rig.driver.run(LONG)
        assert result.outcome is Outcome.CONNECTION_LOST and "connection lost" in result.message
        assert not result.safe_state_confirmed and rig.driver.state is State.NEEDS_RECOVERY
        # never auto-resume: a new job is refused until recover() reconnects and confirms safety
        with pytest.raises(Exception, match="not confirmed"):
            rig.driver.run(A1)
        await rig.driver.recover()
        assert rig.driver.state is not State.NEEDS_RECOVERY
        again = await rig.driver.run(LONG)
        assert again.outcome is Outcome.DONE


async def test_link_drop_on_a_request(peen_rig) -> None:
    async with peen_rig(program=A1, faults="drop@msg:10", link_options=QUICK) as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.CONNECTION_LOST and "connection lost during" in result.message
        assert "char_height+dot_pitch+force_pct+speed_pct (holding 50)" in result.message
        assert not result.safe_state_confirmed and rig.sim.marker.cycles == []


async def test_slow_device_beyond_the_timeout(peen_rig) -> None:
    # 50 simulated seconds at x100 = 0.5 s per answer, over the 0.2 s request timeout
    async with peen_rig(faults="slow@t:0=50", clock="scaled:100", link_options=QUICK, connect=False) as rig:
        with pytest.raises(
            MachineTimeoutError,
            match=r"no answer for status\+fault_code\+progress_pct\+job_counter \(holding 2\)",
        ):
            await rig.driver.connect()


async def test_slow_device_within_the_timeout(peen_rig) -> None:
    async with peen_rig(program=A1, faults="slow@t:0=2", clock="scaled:100", link_options=QUICK) as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.DONE and rig.sim.workpiece.strikes == 28


async def test_host_abort_mid_cycle(peen_rig) -> None:
    async with peen_rig(program=LONG, clock="scaled:4") as rig:
        handle = rig.driver.run(LONG)
        async for event in handle.watch():
            if isinstance(event, Progress) and event.detail.startswith("marking"):
                break
        result = await handle.abort()
        cycle = rig.sim.marker.cycles[-1]
        assert result.outcome is Outcome.ABORTED and result.safe_state_confirmed
        assert cycle.outcome == "aborted" and cycle.dots_struck < cycle.dots_total
        assert rig.sim.marker.fault_code == 6  # "Aborted by host" in peen-modbus
        assert_stopped(rig.sim)
        struck = rig.sim.workpiece.strikes
        await asyncio.sleep(0.3)
        assert rig.sim.workpiece.strikes == struck


async def test_unknown_pattern_faults_the_load(peen_rig) -> None:
    async with peen_rig(program=A1) as rig:
        rig.sim.marker.patterns = {"7": Pattern((FieldSlot(1, 1),))}
        result = await rig.driver.run(PatternProgram("9", A1.fields))
        assert result.outcome is Outcome.ERROR and result.code == "fault:4"
        assert "loading pattern 9 failed: Pattern not found" in result.message
        # the next job clears the fault first and runs
        assert (await rig.driver.run(A1)).outcome is Outcome.DONE


async def test_programs_the_map_cannot_carry_are_refused(peen_rig) -> None:
    async with peen_rig() as rig:
        requests = len(rig.sim.requests)
        with pytest.raises(ValueError, match="fields, the map has origins for 8"):
            rig.driver.run(PatternProgram("1", tuple(PatternField("A", 3.0, 0, i) for i in range(9))))
        code = PatternField("KE KDF 26 GP-000417", 6.0, 30.0, 5.0, font="datamatrix", dot_pitch_mm=0.3)
        with pytest.raises(ValueError, match="font 'datamatrix' is not one of this machine's fonts"):
            rig.driver.run(PatternProgram("1", (A1.fields[0], code)))
        with pytest.raises(ValueError, match="x = -1.0 mm does not fit"):
            rig.driver.run(PatternProgram("1", (PatternField("A", 3.0, -1.0, 0),)))
        with pytest.raises(ValueError, match="share them"):
            rig.driver.run(PatternProgram("1", (PatternField("A", 3.0, 0, 0), PatternField("B", 4.0, 0, 5))))
        with pytest.raises(ValueError, match="the map holds 64"):
            rig.driver.run(PatternProgram("1", (PatternField("A" * 65, 3.0, 0, 0),)))
        assert len(rig.sim.requests) == requests


async def test_nobody_listening_is_a_connection_error() -> None:
    sim = ModbusMarkerSimulator(load_profile("peen-modbus"), clock=make_clock("instant"))
    port = await sim.serve_tcp()
    await sim.stop()  # the port is free again
    driver = ModbusMarkerDriver(ModbusTCPLink(f"127.0.0.1:{port}", QUICK), load_profile("peen-modbus"))
    with pytest.raises(MachineConnectionError, match="cannot connect"):
        await driver.connect()


async def test_wrong_unit_is_a_device_error_or_timeout_naming_the_register() -> None:
    sim = ModbusMarkerSimulator(load_profile("peen-modbus"), clock=make_clock("instant"))
    port = await sim.serve_tcp()
    link = ModbusTCPLink(f"127.0.0.1:{port}", ModbusTCPOptions(unit=9, timeout=0.3, retries=0))
    driver = ModbusMarkerDriver(link, load_profile("peen-modbus"))
    try:
        with pytest.raises((DeviceError, MachineTimeoutError), match=r"\(holding 2\)"):
            await driver.connect()
    finally:
        await link.close()
        await sim.stop()


async def test_pattern_names_go_through_the_profiles_table(peen_rig) -> None:
    strict = peen_profile(pattern_numbers={"iti-stockpile": 5})
    async with peen_rig(profile=strict) as rig:
        with pytest.raises(
            ValueError, match=r"pattern 'SERIAL' has no number; add it to \[protocol.pattern_numbers\]"
        ):
            rig.driver.run(PatternProgram("SERIAL", A1.fields))
        result = await rig.driver.run(PatternProgram("iti-stockpile", A1.fields))
        assert result.outcome is Outcome.DONE and rig.sim.marker.pattern_name == "5"
    async with peen_rig() as rig:  # the generic map: any other name loads pattern 1
        assert (await rig.driver.run(PatternProgram("SERIAL", A1.fields))).outcome is Outcome.DONE
        assert rig.sim.marker.pattern_name == "1"
