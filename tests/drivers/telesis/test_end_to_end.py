"""Telesis driver + simulated marker, end to end: over the in-process pipe, a real pty and TCP.

The assertions are on the simulated workpiece: the dots of the requested text, at the requested
height and position. Expected figures are worked out by hand from the glyphs (5x7, 3 mm high ->
0.5 mm pitch; the stored pattern's force, pattern_force_pct 25 % of 20-120 N = 45 N -> dent depth and
radius 0.6 x 45/120 = 0.225 mm).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from markctl.drivers.base import Outcome, Progress, SafeStateReached
from markctl.drivers.telesis import TelesisDriver
from markctl.drivers.transports import SerialTransport, TCPTransport
from markctl.layouts.program import PatternField, PatternProgram
from markctl.profiles import FirmwareProfile, load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.peen import FieldSlot, Pattern
from markctl.simulator.serve import PtyBridge, serve_tcp
from markctl.simulator.telesis import TelesisSimulator

A1 = PatternProgram("SERIAL", (PatternField("A1", 3.0, 10.0, 12.0),))
R = 0.6 * 45 / 120  # dent radius (90 degree cone) = depth


def assert_a1_marked(sim: TelesisSimulator) -> None:
    wp = sim.workpiece
    # 'A' has 18 dots, '1' has 10 (counted on the glyphs by hand)
    assert wp.strikes == 28
    bbox = wp.marked_bbox_mm()
    assert bbox is not None
    # dot centres: 'A' x 10.0-12.0, '1' (advance 6 x 0.5 mm) x 13.5-14.5; rows y 12.0-15.0
    assert bbox == pytest.approx((10.0 - R, 12.0 - R, 14.5 + R, 15.0 + R), abs=0.1)
    assert (bbox[3] - bbox[1]) - 2 * R == pytest.approx(3.0, abs=0.1)  # the requested height
    col, row = (round(v) for v in wp.to_px(10.0, 12.0))
    assert wp.depth[row - 1 : row + 1, col - 1 : col + 1].max() == pytest.approx(R, abs=0.05)
    # inside the 'A', between its legs on the bottom row, nothing is struck
    col, row = (int(v) for v in wp.to_px(11.0, 12.0))
    assert wp.depth[row, col] == 0


def patterns(program: PatternProgram) -> dict[str, Pattern]:
    return {
        program.pattern: Pattern(
            tuple(FieldSlot(f.x_mm, f.y_mm, f.height_mm, f.angle_deg, f.font) for f in program.fields)
        )
    }


async def test_pipe_marks_the_requested_text_at_the_requested_place(telesis_rig, tmp_path: Path) -> None:
    async with telesis_rig(program=A1) as rig:
        async with rig.driver.subscribe() as events:
            result = await rig.driver.run(A1)
        assert result.outcome is Outcome.DONE and result.safe_state_confirmed
        assert (result.done, result.total) == (2, 2)
        assert_a1_marked(rig.sim)
        seen = []
        while not events.empty():
            seen.append(events.get_nowait())
        assert any(isinstance(e, Progress) and e.done == e.total == 2 for e in seen)
        assert any(isinstance(e, SafeStateReached) and "not busy" in e.method for e in seen)
        png = rig.sim.workpiece.save_png(tmp_path / "mark.png")
        image = np.asarray(Image.open(png))
        assert image.shape == rig.sim.workpiece.shape and (image < 200).sum() > 0


async def test_two_fields_7x9_and_rotation(telesis_rig) -> None:
    program = PatternProgram(
        "TWO",
        (
            PatternField("I", 4.0, 20.0, 5.0, font="7x9"),
            PatternField("-", 3.0, 50.0, 5.0, angle_deg=90.0),
        ),
    )
    async with telesis_rig(program=program) as rig:
        result = await rig.driver.run(program)
        assert result.outcome is Outcome.DONE and result.total == 2
        wp = rig.sim.workpiece
        # 7x9 'I' = 5 + 7 + 5 = 17 dots; 5x7 '-' = 3 dots (columns 1-3 of row 3)
        assert wp.strikes == 20
        # '-' rotated 90 degrees about (50, 5): a vertical run x = 50 - 1.5, y 5.5-6.5
        dash = [s for s in rig.sim.marker.strikes[-3:]]
        assert {round(s.x, 6) for s in dash} == {48.5}
        assert sorted(round(s.y, 6) for s in dash) == [5.5, 6.0, 6.5]
        # the 'I' is 4 mm high: dot centres from y 5 to 9
        ys = [s.y for s in rig.sim.marker.strikes[:17]]
        assert min(ys) == pytest.approx(5.0) and max(ys) == pytest.approx(9.0)


async def test_rate_follows_the_profile(telesis_rig) -> None:
    # ~2 characters/s for 3.175 mm 5x7 text (telesis-tmp chars_per_s); measured in simulated time
    program = PatternProgram("RATE", (PatternField("HNE4", 3.175, 2.0, 5.0),))  # near-average glyphs
    async with telesis_rig(program=program) as rig:
        await rig.driver.run(program)
        cycle = rig.sim.marker.cycles[-1]
        assert cycle.ended_t is not None
        rate = cycle.chars_total / (cycle.ended_t - cycle.started_t)
        assert rate == pytest.approx(2.0, rel=0.25)


@pytest.mark.parametrize(
    "framing",
    [
        {"bcc": "sum", "bcc_encoding": "hex", "bcc_span": "soh-to-etx"},
        {"bcc": "xor", "bcc_encoding": "hex", "bcc_span": "stx-to-etx", "reply_framing": "echo"},
        {"bcc": "sum", "bcc_encoding": "binary", "bcc_span": "type-to-etx", "set_field_type": "1"},
        {"status_format": "io"},
    ],
)
async def test_profile_framing_variants_end_to_end(telesis_rig, framing: dict[str, str]) -> None:
    data = load_profile("telesis-tmp").model_dump()
    data["protocol"].update({"status_poll_hz_max": 50.0, **framing})
    profile = FirmwareProfile.model_validate(data)
    async with telesis_rig(program=A1, profile=profile) as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.DONE, result.message
        assert_a1_marked(rig.sim)
        assert rig.sim.naks_sent == 0


async def test_over_a_real_pty_with_the_serial_transport() -> None:
    profile = load_profile("telesis-tmp")
    sim = TelesisSimulator(profile, clock=make_clock("instant"), patterns=patterns(A1))
    bridge = PtyBridge(sim)
    bridge.start()
    await sim.start()
    driver = TelesisDriver(SerialTransport(bridge.path), profile)
    try:
        await driver.connect()
        result = await driver.run(A1)
        assert result.outcome is Outcome.DONE and result.safe_state_confirmed
    finally:
        await driver.close()
        await sim.stop()
        bridge.close()
    assert_a1_marked(sim)


async def test_over_tcp() -> None:
    profile = load_profile("telesis-tmp")
    sim = TelesisSimulator(profile, clock=make_clock("instant"), patterns=patterns(A1))
    await sim.start()
    server, port = await serve_tcp(sim, "127.0.0.1", 0)
    driver = TelesisDriver(TCPTransport(f"127.0.0.1:{port}"), profile)
    try:
        await driver.connect()
        result = await driver.run(A1)
        assert result.outcome is Outcome.DONE and result.safe_state_confirmed
    finally:
        await driver.close()
        server.close()
        await server.wait_closed()
        await sim.stop()
    assert_a1_marked(sim)


async def test_a_second_job_after_a_fault_resets_first(telesis_rig) -> None:
    async with telesis_rig(program=A1, faults="jam@cycle:1") as rig:
        first = await rig.driver.run(A1)
        assert first.outcome is Outcome.FAULT
        second = await rig.driver.run(A1)
        assert second.outcome is Outcome.DONE
        assert [c.outcome for c in rig.sim.marker.cycles] == ["fault", "done"]
