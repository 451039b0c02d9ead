"""Contract suite: the GRBL driver against the simulator, for every GRBL-family profile.

Each test wires the simulator the way markctl wires ``sim://<profile>`` (see conftest) and asserts
on three things: the job's result and events, the simulator's own state (beam, position,
counters) and the burned workpiece.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from markctl.drivers.base import JobEnded, Outcome, Progress, SafeStateReached, State
from markctl.drivers.grbl import GRBLDriver, GRBLOptions
from markctl.drivers.transports import SerialTransport, TCPTransport
from markctl.errors import AlarmError, SafetyError
from markctl.layouts.program import MotionProgram, ProcessParams, Stroke, StrokeKind
from markctl.profiles import load_profile
from markctl.registry import resolve_driver
from markctl.simulator.clock import make_clock
from markctl.simulator.grbl import GrblSimulator
from markctl.simulator.serve import PtyBridge, serve_tcp
from markctl.simulator.workpiece import Workpiece

from .conftest import CONTRACT_CASES, Rig, fast, long_program, square_and_zigzag  # noqa: TID252

pytestmark = pytest.mark.parametrize("profile_id", CONTRACT_CASES)


def expected_mask(program: MotionProgram, like: Workpiece, width_mm: float) -> np.ndarray:
    """The program's strokes drawn straight onto an empty plate of the same size and resolution."""
    plate = Workpiece(like.width_mm, like.height_mm, px_per_mm=like.px_per_mm, origin=like.origin)
    for stroke in program.strokes:
        for (x0, y0), (x1, y1) in zip(stroke.points, stroke.points[1:], strict=False):
            plate.burn_segment(x0, y0, x1, y1, width_mm=width_mm, depth_mm=0.01)
    return plate.marked()


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-pixels, pixels + 1):
        for dx in range(-pixels, pixels + 1):
            out |= np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
    return out


def assert_beam_off_and_safe(rig: Rig) -> None:
    assert not rig.sim.beam_on
    reached = rig.driver.events_of(SafeStateReached)
    assert reached, "no SafeStateReached event"


async def test_connect_learns_dialect_and_buffers(rig, profile_id: str) -> None:
    r = await rig(profile_id)
    info = r.driver.info
    assert info is not None
    profile = load_profile(profile_id.partition("+")[0])
    assert info.dialect == profile.protocol.dialect  # type: ignore[union-attr]
    assert info.details["rx_buffer_bytes"] == profile.protocol.rx_buffer_bytes  # type: ignore[union-attr]
    assert info.details["planner_blocks"] == profile.protocol.planner_blocks  # type: ignore[union-attr]
    assert r.driver.settings[32] == 1 and r.driver.state is State.IDLE


async def test_streamed_mark_matches_the_program_geometry(rig, profile_id: str, tmp_path) -> None:
    r = await rig(profile_id)
    program = square_and_zigzag()
    offset = r.sim.lines_received  # the simulator numbers every line since power-on
    job = r.driver.run(program)
    result = await job
    assert result.outcome is Outcome.DONE and result.safe_state_confirmed
    assert result.done == result.total == len(r.driver.last_lines)
    assert_beam_off_and_safe(r)
    wp = r.sim.workpiece
    png = wp.save_png(tmp_path / "mark.png")
    assert png.stat().st_size > 0
    burned = wp.marked()
    expected = expected_mask(program, wp, max(r.sim.spot_mm, 1.01 / wp.px_per_mm))
    # Within one pixel both ways: everything planned was burned, nothing else was.
    assert not (expected & ~dilate(burned, 1)).any(), "part of the program was not burned"
    assert not (burned & ~dilate(expected, 1)).any(), "something burned outside the program"
    # Travel (G0) never burned: every burned piece comes from a G1 line of the program.
    g1_lines = {
        offset + i + 1
        for i, line in enumerate(r.driver.last_lines)
        if not line.startswith(("G0", "M", "G21"))
    }
    assert {b.line for b in r.sim.burn_log} <= g1_lines
    events = [type(e).__name__ for e in r.driver.history]
    assert events.index("JobStarted") < events.index("JobEnded")
    progress = r.driver.events_of(Progress)
    assert progress[-1].done == progress[-1].total  # type: ignore[attr-defined]


async def test_char_counting_keeps_the_planner_fed_without_overflow(rig, profile_id: str) -> None:
    r = await rig(profile_id, poll_hz=0)
    result = await r.driver.run(long_program(150))
    assert result.outcome is Outcome.DONE
    assert r.sim.rx_overflow_bytes == 0 and not r.sim.corrupted_lines
    assert r.sim.planner_underruns == 0
    # At most the very first block: it starts moving before the second line has arrived.
    assert r.sim.lookahead_starved_blocks <= 1
    # More than one line was in flight at once: the writes outran the acknowledgements.
    tx = [e for e in r.driver.history if type(e).__name__ == "CommLog" and e.direction == "tx"]  # type: ignore[attr-defined]
    assert len(tx) > 150


async def test_send_response_mode_also_marks(rig, profile_id: str) -> None:
    r = await rig(profile_id, streaming="send-response")
    result = await r.driver.run(square_and_zigzag())
    assert result.ok and r.sim.workpiece.marked().any()


@pytest.mark.parametrize("streaming", ["char-count", "send-response"])
async def test_device_error_reports_code_text_and_line(rig, profile_id: str, streaming: str) -> None:
    r = await rig(profile_id, streaming=streaming)
    offset = r.sim.lines_received
    result = await r.driver.run_gcode(["G21G90", "M4S0", "G1X5Y5F600S100", "G123", "G1X10Y5", "G1X10Y10"])
    assert result.outcome is Outcome.ERROR
    assert (result.code, result.line) == ("error:20", 4)
    assert "Unsupported or invalid G-code" in result.message
    assert result.safe_state_confirmed
    assert_beam_off_and_safe(r)
    burned_lines = {b.line - offset for b in r.sim.burn_log}
    if streaming == "send-response":
        assert burned_lines <= {3}  # nothing after the refused line was even sent
    else:
        # Character counting's known reservation (PROTOCOLS.md §1.2): lines already in the RX
        # buffer when the error comes back still run; the flush stops whatever is left.
        assert burned_lines <= {3, 5, 6}


async def test_abort_stops_the_beam_at_once(rig, profile_id: str) -> None:
    r = await rig(profile_id, clock="scaled:20")
    job = r.driver.run(long_program(200))
    async for event in job.watch():
        if isinstance(event, Progress) and event.done >= 40:
            break
    result = await job.abort()
    assert result.outcome is Outcome.ABORTED and result.safe_state_confirmed
    method = r.driver.events_of(SafeStateReached)[-1].method  # type: ignore[attr-defined]
    assert method.startswith("feed hold, Hold:0, soft reset")
    assert not r.sim.beam_on and r.sim.state == "Idle"  # reset from Hold:0 keeps position: no alarm
    # The first thing the machine heard was the feed hold; burning stopped the moment it did.
    hold_at, first = r.sim.realtime_log[0]
    assert first == ord("!")
    assert r.sim.burn_log and not r.sim.burned_after(hold_at + 1e-3)  # 1 ms: scaled-clock reading noise


async def test_pause_holds_with_the_beam_off_and_resume_finishes(rig, profile_id: str) -> None:
    r = await rig(profile_id, clock="scaled:20")
    job = r.driver.run(long_program(120))
    async for event in job.watch():
        if isinstance(event, Progress) and event.done >= 30:
            break
    await job.pause()
    assert r.driver.status is not None and r.driver.status.raw_state == "Hold:0"
    assert not r.sim.beam_on
    held = r.sim.clock.now()
    await asyncio.sleep(0.05)
    assert not r.sim.burned_after(held)  # nothing resumes by itself
    await job.resume()
    result = await job
    assert result.ok and r.sim.burned_after(held)


async def test_overrides_reach_the_machine(rig, profile_id: str) -> None:
    r = await rig(profile_id)
    await r.driver.set_override("feed", 150)
    await r.driver.set_override("power", 40)
    report = None
    for _ in range(30):
        report = await r.driver.query_status()
        if report is not None and report.overrides is not None:
            break
    assert report is not None and report.overrides == (150, 100, 40)


async def test_check_mode_refuses_a_bad_job_before_anything_moves(rig, profile_id: str) -> None:
    r = await rig(profile_id, check_mode=True)
    start = r.sim.position
    result = await r.driver.run_gcode(["G21G90", "M4S0", "G1X5Y5F600S100", "G1X10Y5 P3", "G1X10Y10"])
    assert (result.outcome, result.code, result.line) == (Outcome.ERROR, "error:36", 4)
    assert result.message.startswith("check mode")
    assert r.sim.position == start and not r.sim.burn_log
    good = await r.driver.run(square_and_zigzag())
    assert good.ok and r.sim.burn_log  # check passed, then it marked


async def test_framing_with_the_beam_off_burns_nothing(rig, profile_id: str) -> None:
    r = await rig(profile_id)
    result = await r.driver.frame((5.0, 5.0, 45.0, 30.0), speed_mm_min=3000)
    assert result.ok
    assert not r.sim.workpiece.marked().any() and not r.sim.burn_log
    corners = {(round(x1), round(y1)) for _, _, x1, y1, _ in r.sim.travel_log}
    assert {(5, 5), (45, 5), (45, 30), (5, 30)} <= corners
    visible = await r.driver.frame((5.0, 5.0, 45.0, 30.0), power_pct=1.0)
    assert visible.ok and r.sim.burn_log  # the explicit low-power mode does light the beam
    assert max(b.line_energy_j_per_mm for b in r.sim.burn_log) < 0.05
    with pytest.raises(ValueError):
        r.driver.frame((0, 0, 1, 1), power_pct=20)


async def test_laser_mode_off_is_refused(rig, profile_id: str) -> None:
    r = await rig(profile_id)
    await r.driver.set_setting(32, 0)
    with pytest.raises(SafetyError, match="laser mode is off"):
        r.driver.run(square_and_zigzag())
    await r.driver.refresh_settings()
    assert r.driver.settings[32] == 0 and r.sim.settings[32] == 0


async def test_resume_from_line_restores_modal_state(rig, profile_id: str) -> None:
    r = await rig(profile_id)
    lines = r.driver.lines_for(square_and_zigzag())
    start = lines.index("G0X25Y5")  # the zigzag stroke
    result = await r.driver.resume_from_line(lines, start + 2)  # mid-zigzag
    assert result.ok
    xs = [x for b in r.sim.burn_log for x in (b.x0, b.x1)]
    assert min(xs) >= 30.0 - 1e-6  # nothing of the square, nor of the zigzag before the resume point
    assert r.sim.burn_log[0].x0 == pytest.approx(30.0) and r.sim.burn_log[0].y0 == pytest.approx(20.0)
    assert r.sim.burn_log[0].line_energy_j_per_mm > 0  # power and M4 were restored


async def test_alarm_state_refuses_jobs_until_unlocked(rig, profile_id: str) -> None:
    r = await rig(profile_id)
    await r.driver.command("$SLP")
    await r.driver.reset()
    await r.driver.query_status()
    with pytest.raises(AlarmError, match="unlock"):
        r.driver.run(square_and_zigzag())
    await r.driver.unlock()
    assert (await r.driver.run(square_and_zigzag())).ok


async def test_registry_and_options(profile_id: str) -> None:
    cls = resolve_driver("grbl")
    assert cls is GRBLDriver and cls.family == "grbl"
    assert {"serial", "tcp", "rfc2217", "sim"} <= cls.transports
    opts = cls.options_model.model_validate(
        {"streaming": "send-response", "poll_hz": "2", "check_mode": "true"}
    )
    assert opts == GRBLOptions(streaming="send-response", poll_hz=2.0, check_mode=True)


async def test_over_a_real_pty_with_the_serial_transport(profile_id: str) -> None:
    profile = fast(load_profile(profile_id.partition("+")[0]))
    sim = GrblSimulator(profile, clock=make_clock("instant"), workpiece=Workpiece(60, 40, px_per_mm=20))
    await sim.start()
    bridge = PtyBridge(sim)
    bridge.start()
    driver = GRBLDriver(
        SerialTransport(bridge.path), profile, GRBLOptions(poll_hz=20, handshake_timeout_s=0.5)
    )
    try:
        info = await driver.connect()  # pyserial flushes the banner on open: the driver sends ^X
        assert info.dialect == profile.protocol.dialect  # type: ignore[union-attr]
        result = await driver.run(square_and_zigzag())
        assert result.ok and sim.workpiece.marked().any() and not sim.beam_on
    finally:
        await driver.close()
        bridge.close()
        await sim.stop()


async def test_over_tcp_with_the_tcp_transport(profile_id: str) -> None:
    profile = fast(load_profile(profile_id.partition("+")[0]))
    sim = GrblSimulator(profile, clock=make_clock("instant"), workpiece=Workpiece(60, 40, px_per_mm=20))
    await sim.start()
    server, port = await serve_tcp(sim)
    options = GRBLOptions(poll_hz=20, handshake_timeout_s=0.5)  # pyserial may flush the banner on open
    driver = GRBLDriver(TCPTransport(f"127.0.0.1:{port}"), profile, options)
    try:
        await driver.connect()
        result = await driver.run(square_and_zigzag())
        assert result.ok and sim.workpiece.marked().any()
        ended = driver.events_of(JobEnded)
        assert ended[-1].result == result  # type: ignore[attr-defined]
    finally:
        await driver.close()
        server.close()
        await server.wait_closed()
        await sim.stop()


async def test_laser_dots_fire_standing_still_and_nowhere_between(rig, profile_id: str) -> None:
    r = await rig(profile_id)
    points = np.array([[10.0, 10.0], [20.0, 12.0], [30.0, 14.0]])
    program = MotionProgram(
        (Stroke(StrokeKind.DOTS, points, 0),), (ProcessParams(speed_mm_min=600, power_pct=80),)
    )
    result = await r.driver.run(program)
    assert result.ok and not r.sim.beam_on
    dots = [(b.x0, b.y0) for b in r.sim.burn_log]
    assert dots == [(10.0, 10.0), (20.0, 12.0), (30.0, 14.0)]
    assert all(b.x0 == b.x1 and b.y0 == b.y1 for b in r.sim.burn_log)


async def test_counting_against_a_wrong_buffer_size_overflows_the_machine(rig, profile_id: str) -> None:
    # The same driver told the RX buffer is 8 KiB (as a naive sender assumes): the simulator's
    # buffer overflows, drops bytes, and the job cannot end well (lost lines, mangled lines).
    if profile_id == "grblhal":
        pytest.skip("1024-byte buffer and 35 blocks: a short job fits anyway")
    r = await rig(profile_id, rx_buffer_bytes=8192, watchdog_s=2.0)
    result = await r.driver.run(long_program(150))
    assert r.sim.rx_overflow_bytes > 0
    assert not result.ok
    assert result.safe_state_confirmed and not r.sim.beam_on


async def test_jog_and_jog_cancel(rig, profile_id: str) -> None:
    r = await rig(profile_id, clock="scaled:20")
    x0, y0, _ = r.sim.position  # machine coordinates: 0,0 here, or -travel with soft limits on
    await r.driver.jog(5.0, 2.0, 3000)
    for _ in range(200):
        report = await r.driver.query_status()
        if report is not None and report.state == "Idle":
            break
    assert r.sim.position[:2] == pytest.approx((x0 + 5.0, y0 + 2.0))
    await r.driver.jog(50.0, 0.0, 600)  # 5 s: long enough to cancel half way
    await r.driver.jog_cancel()
    for _ in range(200):
        report = await r.driver.query_status()
        if report is not None and report.state == "Idle":
            break
    assert x0 + 5.0 < r.sim.position[0] < x0 + 55.0 and not r.sim.burn_log
    with pytest.raises(ValueError):
        await r.driver.jog(1, 1, 0)


async def test_operator_actions_wait_for_the_job(rig, profile_id: str) -> None:
    # A jog, a setting or homing slipped into a running stream would move the head mid-mark and
    # break the streamer's byte count: refused until the job has ended.
    from markctl.errors import MachineError

    r = await rig(profile_id)
    job = r.driver.run(square_and_zigzag())
    for action in (
        r.driver.jog(1, 0, 500),
        r.driver.set_setting(110, 5000),
        r.driver.unlock(),
        r.driver.home(),
    ):
        with pytest.raises(MachineError, match="while a job runs"):
            await action
    result = await job
    assert result.ok
    await r.driver.jog(1, 0, 500)  # fine again once the job is over
