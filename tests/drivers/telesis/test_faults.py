"""Every injected fault ends in a safe state (or says it could not), a clear error, and a result
that says how far the cycle got; the simulator confirms the stylus stopped and struck nothing after.

Frame numbers (``@msg:N``) count frames the marker received: with the A1 job below they are
1 = I (handshake; still fresh when the job starts, so not asked again), 2 = P, 3 = V01,
4 = I (check before Go), 5 = G, 6.. = I polls.
"""

from __future__ import annotations

import asyncio

import pytest

from markctl.drivers.base import Outcome, Progress, SafeStateUnconfirmed, State
from markctl.layouts.program import PatternField, PatternProgram
from markctl.profiles import FirmwareProfile, load_profile
from markctl.simulator.telesis import TelesisSimulator

A1 = PatternProgram("SERIAL", (PatternField("A1", 3.0, 10.0, 12.0),))
LONG = PatternProgram("SERIAL", (PatternField("AB12-XY/7Z", 3.0, 10.0, 12.0),))


def quick(**protocol: object) -> FirmwareProfile:
    """telesis-tmp with a short reply timeout, so lost replies are found in a fraction of a second."""
    data = load_profile("telesis-tmp").model_dump()
    data["protocol"].update({"reply_timeout_s": 0.15, "status_poll_hz_max": 50.0, **protocol})
    return FirmwareProfile.model_validate(data)


def assert_stopped(sim: TelesisSimulator) -> None:
    """The cycle was stopped, and no dot was struck after the moment it was stopped."""
    cycle = sim.marker.cycles[-1]
    assert cycle.ended_t is not None and cycle.stopped_t is not None, "the cycle was not stopped"
    assert all(s.t <= cycle.stopped_t for s in sim.marker.strikes if s.cycle == cycle.number)
    assert cycle.dots_struck == sum(1 for s in sim.marker.strikes if s.cycle == cycle.number)


async def test_one_nak_is_retransmitted_and_the_job_completes(telesis_rig) -> None:
    async with telesis_rig(program=A1, faults="nak@msg:2") as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.DONE
        assert rig.sim.naks_sent == 1 and rig.sim.workpiece.strikes == 28
        loads = [f for d, f in rig.sim.transcript if d == "rx" and f.startswith(b"\x01P")]
        assert len(loads) == 2  # the P frame went twice


async def test_naks_on_every_try_are_a_device_error_before_any_dot(telesis_rig) -> None:
    async with telesis_rig(program=A1, faults="nak@msg:2,nak@msg:3,nak@msg:4") as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.ERROR and result.code == "NAK"
        assert "refused P (load pattern 'SERIAL') (NAK) 3 times" in result.message
        assert (result.done, result.total) == (0, 2) and result.safe_state_confirmed
        assert rig.sim.marker.cycles == [] and rig.sim.workpiece.strikes == 0


async def test_one_lost_reply_is_retransmitted(telesis_rig) -> None:
    async with telesis_rig(program=A1, faults="noreply@msg:5", profile=quick()) as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.DONE
        # the lost G was never acted on, so exactly one cycle ran
        assert len(rig.sim.marker.cycles) == 1 and rig.sim.workpiece.strikes == 28


async def test_three_lost_replies_are_link_down(telesis_rig) -> None:
    async with telesis_rig(
        program=A1, faults="noreply@msg:3,noreply@msg:4,noreply@msg:5", profile=quick()
    ) as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.TIMEOUT and result.code == "link-down"
        assert "link down: no valid answer to V01 (text field 1) after 3 tries of 0.15 s" in result.message
        assert result.done == 0
        # the link came back for the safe state's O and I, so it is confirmed
        assert result.safe_state_confirmed and rig.sim.workpiece.strikes == 0


async def test_corrupted_bcc_in_a_reply_is_retransmitted(telesis_rig) -> None:
    async with telesis_rig(program=A1, faults="badbcc@msg:2", profile=quick()) as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.DONE
        status_frames = [f for d, f in rig.sim.transcript if d == "rx" and f.startswith(b"\x01I")]
        assert len(status_frames) >= 4  # handshake, the corrupted one, its retry, ...


@pytest.mark.parametrize(
    ("faults", "code", "text"),
    [
        ("fault@cycle:1=3", "3", "X axis did not reach position"),
        ("estop@cycle:1", "1", "Emergency stop pressed"),
        ("jam@cycle:1", "2", "Stylus jammed"),
    ],
)
async def test_fault_mid_cycle(telesis_rig, faults: str, code: str, text: str) -> None:
    async with telesis_rig(program=LONG, faults=faults) as rig:
        result = await rig.driver.run(LONG)
        cycle = rig.sim.marker.cycles[-1]
        assert result.outcome is Outcome.FAULT and result.code == code
        assert text in result.message and "characters marked (reported by the marker)" in result.message
        # half the dots were struck; the result reports the characters the marker had finished
        assert cycle.outcome == "fault" and 0 < cycle.dots_struck < cycle.dots_total
        assert result.done == cycle.chars_done and 0 < result.done < result.total == 10
        assert result.safe_state_confirmed
        assert_stopped(rig.sim)


async def test_fault_is_reported_even_without_a_fault_code_in_the_status(telesis_rig) -> None:
    async with telesis_rig(program=LONG, faults="jam@cycle:1", profile=quick(status_format="io")) as rig:
        result = await rig.driver.run(LONG)
        assert result.outcome is Outcome.FAULT and result.code is None
        assert "this status format carries no code" in result.message and "(estimated)" in result.message


async def test_link_drop_mid_cycle_is_unconfirmed_and_blocks_new_jobs(telesis_rig) -> None:
    async with telesis_rig(program=LONG, faults="drop@cycle:1", profile=quick()) as rig:
        result = await rig.driver.run(LONG)
        assert result.outcome is Outcome.CONNECTION_LOST and "link lost" in result.message
        assert not result.safe_state_confirmed
        assert rig.driver.state is State.NEEDS_RECOVERY
        assert rig.driver.events_of(SafeStateUnconfirmed)
        with pytest.raises(Exception, match="not confirmed"):
            rig.driver.run(A1)
        # a real marker owns its cycle: it finishes the mark although the host is gone
        await asyncio.sleep(0)
        assert rig.sim.marker.cycles[-1].outcome in ("running", "done")


async def test_link_drop_on_a_frame(telesis_rig) -> None:
    async with telesis_rig(program=A1, faults="drop@msg:3", profile=quick()) as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.CONNECTION_LOST and (result.done, result.total) == (0, 2)
        assert not result.safe_state_confirmed and rig.sim.workpiece.strikes == 0


async def test_slow_device_within_the_timeout_still_marks(telesis_rig) -> None:
    # 2 simulated seconds at x100 = 20 ms per reply, under the 150 ms reply timeout
    async with telesis_rig(program=A1, faults="slow@t:0=2", clock="scaled:100", profile=quick()) as rig:
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.DONE and rig.sim.workpiece.strikes == 28


async def test_slow_device_beyond_the_timeout_is_link_down(telesis_rig) -> None:
    # 50 simulated seconds at x100 = 0.5 s per reply, over the 150 ms reply timeout
    async with telesis_rig(
        program=A1, faults="slow@t:0=50", clock="scaled:100", profile=quick(), connect=False
    ) as rig:
        with pytest.raises(TimeoutError, match="link down"):
            await rig.driver.connect()


async def test_host_abort_mid_cycle_stops_the_stylus(telesis_rig) -> None:
    # x4 time: the 10-character mark lasts about a second of wall time, long enough to abort it
    async with telesis_rig(program=LONG, clock="scaled:4") as rig:
        handle = rig.driver.run(LONG)
        async for event in handle.watch():
            if isinstance(event, Progress) and event.detail.startswith("marking"):
                break
        result = await handle.abort()
        cycle = rig.sim.marker.cycles[-1]
        assert result.outcome is Outcome.ABORTED and result.safe_state_confirmed
        assert result.total == 10 and result.done <= cycle.chars_done
        assert cycle.outcome == "aborted" and cycle.dots_struck < cycle.dots_total
        assert_stopped(rig.sim)
        struck = rig.sim.workpiece.strikes
        await asyncio.sleep(0.3)
        assert rig.sim.workpiece.strikes == struck  # nothing struck after the abort


async def test_unknown_pattern_is_caught_before_go(telesis_rig) -> None:
    async with telesis_rig(program=A1) as rig:  # the store holds "SERIAL" only
        result = await rig.driver.run(PatternProgram("OTHER", A1.fields))
        assert result.outcome is Outcome.ERROR and result.code == "fault:5"
        assert "marker faulted before Go: Pattern not found" in result.message
        assert rig.sim.marker.cycles == [] and result.safe_state_confirmed
        # the safe state's O cleared the fault: the right pattern marks next
        assert (await rig.driver.run(A1)).outcome is Outcome.DONE
