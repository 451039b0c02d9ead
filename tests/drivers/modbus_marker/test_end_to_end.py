"""Modbus marker driver against the simulator's real pymodbus server, over TCP and RTU on a pty pair.

Figures are worked out by hand: 'A' has 18 dots and '1' 10 in the 5x7 font; at 4 mm the pitch is
4/6 mm and the '1' starts one blank column after the 'A' (6 pitches); the default force (75 % of
15-150 N = 116.25 N) gives a dent 0.6 x 116.25/150 = 0.465 mm deep and as wide (90 degree cone).
"""

from __future__ import annotations

import pytest
from pymodbus.client import AsyncModbusTcpClient

from markctl.drivers.base import Outcome
from markctl.drivers.modbus_marker import ModbusMarkerDriver, ModbusMarkerOptions
from markctl.drivers.modbus_marker.driver import pack_text, unpack_text
from markctl.drivers.transports.modbus import ModbusRTULink
from markctl.layouts.program import PatternField, PatternProgram
from markctl.profiles import FirmwareProfile, load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.peen_modbus import ModbusMarkerSimulator

from .conftest import peen_profile  # noqa: TID252

A1 = PatternProgram("7", (PatternField("A1", 4.0, 20.0, 30.0),))
R = 0.6 * 116.25 / 150
P = 4.0 / 6


def assert_a1_marked(sim: ModbusMarkerSimulator) -> None:
    wp = sim.workpiece
    assert wp.strikes == 28
    bbox = wp.marked_bbox_mm()
    assert bbox is not None
    # 'A' dot centres x 20 .. 20+4P, '1' x 20+7P .. 20+9P; y 30 .. 34
    assert bbox == pytest.approx((20.0 - R, 30.0 - R, 20.0 + 9 * P + R, 34.0 + R), abs=0.1)
    assert (bbox[3] - bbox[1]) - 2 * R == pytest.approx(4.0, abs=0.1)  # height from char_height
    col, row = (int(v) for v in wp.to_px(20.0 + 2 * P, 30.0))  # between the legs of the 'A'
    assert wp.depth[row, col] == 0


async def test_tcp_load_fill_go_poll_to_done(peen_rig) -> None:
    async with peen_rig(program=A1) as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.DONE and result.safe_state_confirmed
        assert (result.done, result.total) == (2, 2)
        assert_a1_marked(rig.sim)
        assert rig.sim.marker.job_counter == 1
        # the registers the driver wrote, as the server stored them
        writes = {(r.function_code, r.address) for r in rig.sim.requests if r.write}
        assert (16, 10) in writes  # the text block in one request
        assert (16, 50) in writes  # char_height..speed_pct in one request
        assert (6, 0) in writes and (6, 1) in writes  # command, pattern


async def test_rtu_on_a_pty_pair(peen_rig) -> None:
    async with peen_rig(program=A1, rtu=True) as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.DONE and result.safe_state_confirmed
        assert_a1_marked(rig.sim)


async def test_start_and_abort_through_coils(peen_rig) -> None:
    async with peen_rig(program=A1, options=ModbusMarkerOptions(use_coils=True)) as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.DONE
        assert_a1_marked(rig.sim)
        coil_writes = [r for r in rig.sim.requests if r.function_code == 5 and r.write]
        assert [r.address for r in coil_writes] == [0]  # start; the machine was seen idle: no abort
    always = peen_profile(abort_when_idle=True)
    async with peen_rig(profile=always, program=A1, options=ModbusMarkerOptions(use_coils=True)) as rig:
        assert (await rig.driver.run(A1)).outcome is Outcome.DONE
        coil_writes = [r for r in rig.sim.requests if r.function_code == 5 and r.write]
        assert [r.address for r in coil_writes][:2] == [0, 1]  # start coil, then abort coil (safe state)


def vendor_profile() -> FirmwareProfile:
    """A different machine: the same keys, other addresses, low byte first, another scale."""
    data = load_profile("peen-modbus").model_dump()
    data["id"] = "vendor-x"
    data["protocol"]["unit"] = 7
    data["protocol"]["registers"].update(
        {
            "command": 100,
            "pattern": 101,
            "status": 110,
            "fault_code": 111,
            "progress_pct": 112,
            "job_counter": 120,
            "text_start": 200,
            "text_registers": 20,
            "char_height": 300,
            "dot_pitch": 302,
            "force_pct": 304,
            "speed_pct": 306,
            "length_scale": 1000.0,
            "text_byte_order": "low-first",
            "text_separator": "|",
            "commands": {"start": 11, "abort": 12, "reset_fault": 13, "load_pattern": 14},
            "states": {"idle": 1, "busy": 2, "done": 4, "fault": 8},
            "coils": {},
            "discrete_inputs": {"busy": 5},
        }
    )
    return FirmwareProfile.model_validate(data)


async def test_a_vendor_map_is_a_profile_not_code(peen_rig) -> None:
    program = PatternProgram("3", (PatternField("A1", 4.0, 20.0, 30.0), PatternField("Z", 4.0, 20.0, 10.0)))
    async with peen_rig(profile=vendor_profile(), program=program) as rig:
        result = await rig.driver.run(program)
        assert result.outcome is Outcome.DONE, result.message
        assert rig.sim.marker.texts == {1: "A1", 2: "Z"}
        assert rig.sim.workpiece.strikes == 28 + 15  # 'Z' = 5 + 1 + 1 + 1 + 1 + 1 + 5 dots
        addresses = {r.address for r in rig.sim.requests}
        assert {100, 101, 110, 200, 300}.issubset(addresses) and 0 not in addresses


def test_text_packing_per_byte_order() -> None:
    assert pack_text("ABC", 3, "high-first") == [0x4142, 0x4300, 0x0000]
    assert pack_text("ABC", 3, "low-first") == [0x4241, 0x0043, 0x0000]
    assert unpack_text([0x4142, 0x4300, 0x4444], "high-first") == "ABC"
    assert unpack_text([0x4241, 0x0043], "low-first") == "ABC"
    with pytest.raises(ValueError, match="do not fit"):
        pack_text("ABCDE", 2, "high-first")


async def test_any_standard_client_can_drive_the_simulator() -> None:
    profile = load_profile("peen-modbus")
    sim = ModbusMarkerSimulator(profile, clock=make_clock("instant"))
    port = await sim.serve_tcp()
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    try:
        assert await client.connect()
        await client.write_registers(10, pack_text("HI", 32, "high-first"), device_id=1)
        await client.write_register(1, 5, device_id=1)  # pattern 5 ...
        await client.write_register(0, 4, device_id=1)  # ... load it
        await client.write_register(0, 1, device_id=1)  # start
        for _ in range(200):
            rr = await client.read_holding_registers(2, count=4, device_id=1)
            if rr.registers[0] == 2:  # done
                break
        assert rr.registers == [2, 0, 100, 1]  # done, no fault, 100 %, one job
        inputs = await client.read_discrete_inputs(0, count=4, device_id=1)
        assert inputs.bits[:4] == [True, False, True, False]  # ready, not busy, done, no fault
        gap = await client.read_holding_registers(6, count=2, device_id=1)  # not in the map
        assert gap.isError() and gap.exception_code == 2
        assert sim.workpiece.strikes == 17 + 11  # 'H' = 6 x 2 + 5 dots, 'I' = 3 + 5 + 3
    finally:
        client.close()
        await sim.stop()


async def test_field_origins_place_the_text_without_a_stored_pattern(peen_rig) -> None:
    # The simulator's default store ("*") knows nothing of A1's position: the origin registers do.
    async with peen_rig() as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.DONE
        assert_a1_marked(rig.sim)
        assert rig.sim.marker.origins == {1: (20.0, 30.0)}


async def test_a_map_without_origins_leaves_positions_to_the_pattern(peen_rig) -> None:
    data = load_profile("peen-modbus").model_dump()
    data["protocol"]["registers"]["field_origins"] = 0
    async with peen_rig(profile=FirmwareProfile.model_validate(data), program=A1) as rig:
        assert (await rig.driver.run(A1)).outcome is Outcome.DONE
        assert_a1_marked(rig.sim)  # from the stored pattern
        assert not any(60 <= r.address < 76 for r in rig.sim.requests)


async def test_rtu_framing_over_tcp_through_a_socket_url() -> None:
    profile = load_profile("peen-modbus")
    sim = ModbusMarkerSimulator(profile, clock=make_clock("instant"))
    port = await sim.serve_rtu_tcp()
    link = ModbusRTULink(f"socket://127.0.0.1:{port}")
    driver = ModbusMarkerDriver(link, profile)
    try:
        await driver.connect()
        result = await driver.run(A1)
        assert result.outcome is Outcome.DONE and result.safe_state_confirmed
        assert_a1_marked(sim)
    finally:
        await driver.close()
        await sim.stop()
