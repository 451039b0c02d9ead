"""Maps that differ in more than addresses, as data: driver and simulator read the same profile.

peen-modbus-bits: status as a bit field in input registers, a handshake start, one character per
register, 32-bit lengths high word first, no progress or dot-pitch register.
peen-modbus-coil: a start on a coil's rising edge, no progress / job counter / dot pitch / origin
registers (the stored pattern places the fields), 32-bit lengths low word first, unit 7.
"""

from __future__ import annotations

import pytest

from markctl.drivers.base import Outcome
from markctl.drivers.transports.modbus import ModbusRTUOptions
from markctl.layouts.program import PatternField, PatternProgram
from markctl.profiles import FirmwareProfile, load_profile
from markctl.simulator.peen import FONTS

PROGRAM = PatternProgram("1", (PatternField("AB12", 3.0, 5.0, 5.0), PatternField("Z9", 3.0, 5.0, 15.0)))
DOTS = sum(len(FONTS["5x7"].dots(c)) for c in "AB12Z9")


def writes(sim, fc: int, address: int) -> list[tuple[int, ...]]:
    return [r.values for r in sim.requests if r.write and r.function_code == fc and r.address == address]


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu-pty"])
async def test_bit_field_status_in_input_registers_with_a_handshake_start(peen_rig, rtu: bool) -> None:
    profile = load_profile("peen-modbus-bits")
    # The profile's even parity is refused by a Linux pty on pyserial's second tcsetattr (EINVAL);
    # a pty has no line settings to match anyway, so the pty run uses no parity.
    options = ModbusRTUOptions(parity="N") if rtu else None
    async with peen_rig(profile=profile, program=PROGRAM, rtu=rtu, link_options=options) as rig:
        result = await rig.driver.run(PROGRAM)
        assert result.outcome is Outcome.DONE and result.safe_state_confirmed
        assert rig.sim.workpiece.strikes == DOTS and rig.sim.marker.job_counter == 1
        sim = rig.sim
        # handshake: start, then 0 once busy was seen (load pattern: 4 then 0 first)
        assert writes(sim, 6, 0) == [(4,), (0,), (1,), (0,)]
        assert writes(sim, 16, 10)[0] == (0, 3000)  # 3 mm x 1000, high word first
        text = writes(sim, 16, 100)[0]
        assert bytes(text[:8]) == b"AB12\rZ9\0" and len(text) == 64  # one character per register
        assert [w for w in writes(sim, 16, 20)[0]] == [0, 5000, 0, 5000, 0, 5000, 0, 15000]
        assert {r.function_code for r in sim.requests if not r.write} == {4}  # status from input registers


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu-pty"])
async def test_coil_edge_start_and_a_lean_map(peen_rig, rtu: bool) -> None:
    profile = load_profile("peen-modbus-coil")
    async with peen_rig(profile=profile, program=PROGRAM, rtu=rtu) as rig:
        first = await rig.driver.run(PROGRAM)
        second = await rig.driver.run(PROGRAM)  # no job counter: the second Done is told apart too
        assert first.outcome is Outcome.DONE and second.outcome is Outcome.DONE
        assert rig.sim.workpiece.strikes == 2 * DOTS and len(rig.sim.marker.cycles) == 2
        sim = rig.sim
        assert writes(sim, 5, 8) == [(1,), (0,), (1,), (0,)]  # rising edge, released once busy showed
        assert writes(sim, 16, 44)[0][:2] == (300, 0)  # 3 mm x 100, low word first
        assert not any(r.address in (60, 61) for r in sim.requests)  # no origin registers
        assert rig.link.unit == 7


async def test_progress_is_estimated_and_said_so_without_a_progress_register(peen_rig) -> None:
    long = PatternProgram("1", (PatternField("ABCDEFGH", 3.0, 5.0, 5.0),))
    async with peen_rig(profile=load_profile("peen-modbus-coil"), program=long, clock="scaled:4") as rig:
        handle = rig.driver.run(long)
        details = [getattr(e, "detail", "") async for e in handle.watch()]
        assert (await handle).outcome is Outcome.DONE
        assert any(d.startswith("marking") and "(estimated)" in d for d in details)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status_bits": {"busy": 1, "done": 2}}, "status_bits needs busy, done, fault"),
        ({"status_bits": {}, "states": {"idle": 0}}, "states lacks"),
        ({"start": "coil-edge", "coils": {}}, "needs coils.start"),
        ({"commands": {"start": 1, "abort": 0, "reset_fault": 3, "load_pattern": 4}}, "no command may be 0"),
        ({"force_pct": 11}, "register 11 is both char_height and force_pct"),
        ({"job_counter": 0}, "share an input register"),
        ({"text_start": 22}, "register 22 is both"),
    ],
)
def test_a_map_that_cannot_work_is_refused(change: dict[str, object], message: str) -> None:
    data = load_profile("peen-modbus-bits").model_dump()
    data["protocol"]["registers"].update(change)
    with pytest.raises(ValueError, match=message):
        FirmwareProfile.model_validate(data)


async def test_per_field_height_angle_and_origin(peen_rig) -> None:
    program = PatternProgram(
        "1",
        (
            PatternField("AB", 3.0, 10.0, 10.0),
            PatternField("C1", 5.0, 60.0, 40.0, angle_deg=90.0),
        ),
    )
    async with peen_rig(profile=load_profile("peen-modbus-fields"), program=program) as rig:
        result = await rig.driver.run(program)
        assert result.outcome is Outcome.DONE
        sim = rig.sim
        assert writes(sim, 16, 100)[0] == (300, 0, 1000, 1000)
        assert writes(sim, 16, 110)[0] == (500, 900, 6000, 4000)  # 5 mm, 90.0 degrees x 10, (60, 40) mm
        marker = sim.marker
        assert marker.field_heights == {1: 3.0, 2: 5.0} and marker.field_angles == {1: 0.0, 2: 90.0}
        assert marker.origins == {1: (10.0, 10.0), 2: (60.0, 40.0)}
        # field 2 runs upwards from (60, 40): its dots lie on x <= 60 and y >= 40
        second = [s for s in marker.strikes if s.y >= 39.99 and s.x <= 60.01]
        assert len(second) == sum(len(FONTS["5x7"].dots(c)) for c in "C1")


def test_per_field_block_layout_is_validated() -> None:
    data = load_profile("peen-modbus-fields").model_dump()
    data["protocol"]["registers"]["field_block"]["stride"] = 3  # height, angle, x, y need 4
    with pytest.raises(ValueError, match="do not fit in the stride"):
        FirmwareProfile.model_validate(data)
    data = load_profile("peen-modbus-fields").model_dump()
    data["protocol"]["registers"]["field_origins"] = 4
    with pytest.raises(ValueError, match="not both"):
        FirmwareProfile.model_validate(data)
