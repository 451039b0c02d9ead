"""Every injected fault ends with the beam off, the right result and a safe-state event.

Asserted three ways: the job's result, the driver's events, and the simulator's own beam state
and burn record (nothing burned after the fault where the firmware stops at once; only program
geometry ever). Faults are the simulator's (PROTOCOLS.md §9.4): disconnect, silence (lost ok),
garbled byte, alarm and door at a time, slow host reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ClassVar

import pytest

from markctl.drivers.base import Outcome, SafeStateReached, SafeStateUnconfirmed, State
from markctl.drivers.grbl import GRBLDriver, GRBLOptions
from markctl.drivers.transports.base import TransportOptions
from markctl.errors import MachineConnectionError, SafetyError
from markctl.profiles import load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.grbl import GrblSimulator
from markctl.simulator.workpiece import Workpiece

from .conftest import GRBL_PROFILES, Rig, fast, long_program  # noqa: TID252


def program_lines_only(rig: Rig, offset: int) -> None:
    """Every burned piece came from a G1 line of the job (never travel, never the safe state)."""
    lines = rig.driver.last_lines
    for burn in rig.sim.burn_log:
        index = burn.line - offset - 1
        assert 0 <= index < len(lines), f"burned by line {burn.line}, outside the job"
        assert not lines[index].startswith(("G0", "M")), f"burned by {lines[index]!r}"


@pytest.mark.parametrize("profile_id", GRBL_PROFILES)
async def test_alarm_mid_job(rig, profile_id: str) -> None:
    r = await rig(profile_id, faults="alarm@t:0.8=1")
    offset = r.sim.lines_received
    result = await r.driver.run(long_program(150))
    assert result.outcome is Outcome.ALARM and result.code == "ALARM:1"
    assert "Hard limit" in result.message and result.safe_state_confirmed
    assert not r.sim.beam_on and r.sim.state == "Alarm"
    assert not r.sim.burned_after(r.sim.fault_times["alarm"])
    program_lines_only(r, offset)
    method = r.driver.events_of(SafeStateReached)[-1].method  # type: ignore[attr-defined]
    assert "soft reset" in method and "status Alarm" in method  # ^X was needed: '?' is ignored until then
    assert r.driver.state is State.ALARM


@pytest.mark.parametrize("profile_id", GRBL_PROFILES)
async def test_door_mid_job(rig, profile_id: str) -> None:
    r = await rig(profile_id, faults="door@t:0.8")
    result = await r.driver.run(long_program(150))
    assert result.outcome is Outcome.ALARM and result.code == "door"
    assert result.safe_state_confirmed
    assert not r.sim.beam_on
    assert not r.sim.burned_after(r.sim.fault_times["door"])
    assert r.driver.events_of(SafeStateReached)


async def test_lost_ok_ends_in_a_timeout_not_a_hang(rig) -> None:
    r = await rig("grbl-1.1", faults="silence@line:30")
    offset = r.sim.lines_received
    result = await r.driver.run(long_program(150))
    assert result.outcome is Outcome.TIMEOUT and "lost ok" in result.message
    assert result.safe_state_confirmed and not r.sim.beam_on
    program_lines_only(r, offset)
    assert r.driver.events_of(SafeStateReached)


async def test_garbled_response_stops_the_job(rig) -> None:
    # Without status polling the machine's output during the job is only "ok\r\n" lines, so a
    # byte offset lands inside the 11th one deterministically.
    probe = await rig("grbl-1.1", poll_hz=0)
    handshake_bytes = probe.sim._bytes_sent
    r = await rig("grbl-1.1", poll_hz=0, faults=f"garble@byte:{handshake_bytes + 4 * 10 + 1}")
    result = await r.driver.run(long_program(150))
    assert result.outcome is Outcome.ERROR and result.code == "protocol"
    assert "byte 0" in result.message  # the ProtocolError names the offending byte
    assert result.safe_state_confirmed and not r.sim.beam_on


async def test_garbled_push_message_is_ignored(rig) -> None:
    probe = await rig("grbl-1.1")
    received = b"".join(
        e.data for e in probe.driver.history if type(e).__name__ == "CommLog" and e.direction == "rx"
    )  # type: ignore[attr-defined]
    at = received.index(b"[VER:") + 3  # inside $I's [VER:...] line: a push message, not a response
    r = await rig("grbl-1.1", faults=f"garble@byte:{at}")
    assert r.driver.info is not None and r.driver.state is State.IDLE
    assert any("garbled" in m for m in r.driver.messages)
    assert r.driver.info.version == "1.1h"  # from the banner, as [VER:] was unreadable
    assert (await r.driver.run(long_program(20))).ok


async def test_slow_host_reads_still_finish(rig) -> None:
    r = await rig("grbl-1.1", faults="slow@t:0=0.02")
    result = await r.driver.run(long_program(60))
    assert result.ok and result.safe_state_confirmed


async def test_disconnect_mid_job_is_never_confirmed_safe_by_guessing(rig) -> None:
    r = await rig("grbl-1.1", faults="disconnect@line:40")
    offset = r.sim.lines_received
    result = await r.driver.run(long_program(150))
    assert result.outcome is Outcome.CONNECTION_LOST
    assert f"last acknowledged line {r.driver.last_acked}" in result.message
    assert not result.safe_state_confirmed
    unconfirmed = r.driver.events_of(SafeStateUnconfirmed)
    assert unconfirmed and "reopening failed" in unconfirmed[-1].error  # type: ignore[attr-defined]
    assert r.driver.state is State.NEEDS_RECOVERY
    with pytest.raises(SafetyError):
        r.driver.run(long_program(5))  # no new job until someone recovers the machine
    # The firmware, unreachable, runs what it had queued and then stops (real Grbl does that
    # too); every burn is still the job's own geometry, from lines sent before the drop.
    await _until(lambda: r.sim.state == "Idle")
    assert not r.sim.beam_on
    program_lines_only(r, offset)
    assert max(b.line for b in r.sim.burn_log) - offset < 40


class ReopenablePipe:
    """An in-process link that can be plugged in again, like a USB cable (tests only).

    Opening it re-attaches the simulator, which (like an Arduino on DTR) resets on open.
    """

    options_model: ClassVar[type[TransportOptions]] = TransportOptions

    def __init__(self, sim: GrblSimulator) -> None:
        self.sim = sim
        self.opened = 0
        self.refuse_opens = 0  # the next this-many opens fail, like a port that re-enumerates
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._lost: MachineConnectionError | None = None
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open and self._lost is None

    @property
    def description(self) -> str:
        return "reopenable"

    async def open(self) -> None:
        if self.refuse_opens:
            self.refuse_opens -= 1
            raise MachineConnectionError("reopenable: no such device (yet)")
        self.opened += 1
        self._lost = None
        self._queue = asyncio.Queue()
        self._open = True
        self.sim.attach(self._queue.put_nowait, self._hang_up)

    def _hang_up(self, reason: str) -> None:
        self._lost = MachineConnectionError(reason)
        self._queue.put_nowait(b"")

    async def close(self) -> None:
        self._open = False
        self.sim.detach()

    async def write(self, data: bytes) -> None:
        if self._lost is not None or not self._open:
            raise self._lost or MachineConnectionError("closed")
        self.sim.receive(data)

    async def read(self, timeout: float | None = None) -> bytes:
        try:
            data = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return b""
        if not data and self._lost is not None:
            raise self._lost
        return data


async def test_disconnect_then_one_reopen_resets_the_machine_and_confirms() -> None:
    profile = fast(load_profile("grbl-1.1"))
    sim = GrblSimulator(
        profile,
        clock=make_clock("instant"),
        faults="disconnect@line:40",
        workpiece=Workpiece(60, 40, px_per_mm=20),
    )
    await sim.start()
    link = ReopenablePipe(sim)
    driver = GRBLDriver(link, profile, GRBLOptions(poll_hz=20))
    try:
        await driver.connect()
        result = await driver.run(long_program(150))
        assert result.outcome is Outcome.CONNECTION_LOST and result.safe_state_confirmed
        method = driver.events_of(SafeStateReached)[-1].method  # type: ignore[attr-defined]
        assert method.startswith("link reopened, soft reset")
        assert link.opened == 2 and not sim.beam_on
        reopened_at = sim.realtime_log[-1][0]
        assert not sim.burned_after(reopened_at)
        # The beam is off and confirmed, but the reopen reset the board: position is lost, so no
        # new job until someone recovers the machine on purpose (never auto-resume).
        assert driver.state is State.NEEDS_RECOVERY
        with pytest.raises(SafetyError, match="not confirmed|recover"):
            driver.run(long_program(10))
        await driver.recover()
        assert driver.state is not State.NEEDS_RECOVERY
    finally:
        await driver.close()
        await sim.stop()


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout)


async def test_after_a_power_cycling_reconnect_home_then_resume_from_the_last_acknowledged_line() -> None:
    # The whole recovery story of PROTOCOLS.md §9.3: the link drops mid-job, the one reopen pulses
    # DTR (the board power-cycles: beam off, position forgotten), the driver confirms the safe
    # state, the operator homes, and the job resumes from the last acknowledged line with its
    # modal state restored. The mark ends up where the program says, in physical coordinates.
    profile = fast(load_profile("grbl-1.1"))
    sim = GrblSimulator(
        profile,
        clock=make_clock("instant"),
        faults="disconnect@line:60",
        workpiece=Workpiece(60, 40, px_per_mm=20),
    )
    await sim.start()
    link = ReopenablePipe(sim)
    driver = GRBLDriver(link, profile, GRBLOptions(poll_hz=20))
    program = long_program(120)  # ends at x = 53 mm, inside the 60 mm plate
    try:
        await driver.connect()
        await driver.set_setting(22, 1)  # homing enabled: a power-cycled Grbl comes up locked
        first = await driver.run(program)
        assert first.outcome is Outcome.CONNECTION_LOST and first.safe_state_confirmed
        assert first.line is not None and first.line == driver.last_acked
        assert driver.state is State.NEEDS_RECOVERY  # never auto-resume after a drop
        await driver.recover()  # the operator's decision; the board comes up locked
        assert driver.state is State.ALARM and sim.position == (0.0, 0.0, 0.0)
        assert sim.physical_position != (0.0, 0.0, 0.0)  # Grbl forgot where the head is
        await driver.home()
        # The switches are at the far corner, machine 0 (Grbl's default $23=0): machine space is
        # -travel..0, so the operator puts work 0,0 back at the plate's corner with a work offset.
        travel = [driver.settings[130 + i] for i in range(3)]
        assert sim.position == (0.0, 0.0, 0.0) and sim.physical_position == tuple(travel)
        await driver.command(f"G10L2P1X{-travel[0]:g}Y{-travel[1]:g}")
        lines = driver.last_lines
        # Acknowledged is not executed: up to a planner's worth of acknowledged lines died with
        # the power cycle, so the resume point steps back by that much.
        start = driver.resume_point()
        assert start == first.line - profile.protocol.planner_blocks - 1  # type: ignore[union-attr]
        second = await driver.resume_from_line(lines, start)
        assert second.ok and not sim.beam_on
        # Every segment of the program was burned by one of the two runs, nowhere else.
        xs = program.strokes[0].points[:, 0]
        burned_xs = sorted({round(b.x1, 3) for b in sim.burn_log})
        assert min(burned_xs) > xs[0] and max(burned_xs) == pytest.approx(xs[-1], abs=1e-3)
        wp = sim.workpiece
        for x, y in program.strokes[0].points[1:]:
            col, row = (int(v) for v in wp.to_px(x, y))
            assert wp.marked()[row - 1 : row + 2, col - 1 : col + 2].any(), f"({x:.1f}, {y:.1f}) not marked"
        assert not [b for b in sim.burn_log if b.x0 < xs[0] - 0.01 or b.x1 > xs[-1] + 0.01]
    finally:
        await driver.close()
        await sim.stop()


async def test_alarm_after_every_line_was_acknowledged(rig) -> None:
    # All three lines are acknowledged at once (the planner has room); the hard-limit alarm comes
    # while the driver waits for Idle, when Grbl no longer answers '?'.
    r = await rig("grbl-1.1", faults="alarm@t:1=1")
    result = await r.driver.run_gcode(["G21G90", "M4S0", "G1X50F600S100"])
    assert (result.outcome, result.code, result.done) == (Outcome.ALARM, "ALARM:1", 3)
    assert result.safe_state_confirmed and not r.sim.beam_on
    assert not r.sim.burned_after(r.sim.fault_times["alarm"])


async def test_unconfirmed_after_a_failed_reopen_until_recover() -> None:
    profile = fast(load_profile("grbl-1.1"))
    sim = GrblSimulator(
        profile,
        clock=make_clock("instant"),
        faults="disconnect@line:40",
        workpiece=Workpiece(60, 40, px_per_mm=20),
    )
    await sim.start()
    link = ReopenablePipe(sim)
    driver = GRBLDriver(link, profile, GRBLOptions(poll_hz=20))
    try:
        await driver.connect()
        link.refuse_opens = 1  # the port is not back yet when the safe state tries
        result = await driver.run(long_program(150))
        assert result.outcome is Outcome.CONNECTION_LOST and not result.safe_state_confirmed
        assert driver.state is State.NEEDS_RECOVERY
        with pytest.raises(SafetyError):
            driver.run(long_program(5))
        info = await driver.recover()  # the operator plugs it back: reconnect, handshake, safe state
        assert info.dialect == "grbl" and driver.state is State.IDLE
        assert driver.events_of(SafeStateReached)[-1].reason == "recover"  # type: ignore[attr-defined]
        assert not sim.beam_on
        assert (await driver.run(long_program(5))).ok
    finally:
        await driver.close()
        await sim.stop()
