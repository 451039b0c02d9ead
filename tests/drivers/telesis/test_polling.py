"""The I (status) frames leave at most ``status_poll_hz_max`` times a second, in every path:
handshake, job, cycle polling and the safe state's confirmation (shipped profile, 4 Hz)."""

from __future__ import annotations

from markctl.drivers.base import CommLog, Outcome
from markctl.drivers.telesis import TelesisOptions
from markctl.layouts.program import PatternField, PatternProgram
from markctl.profiles import load_profile

A1 = PatternProgram("SERIAL", (PatternField("A1", 3.0, 10.0, 12.0),))


def status_sends(driver) -> list[float]:
    return [
        e.t
        for e in driver.history
        if isinstance(e, CommLog) and e.direction == "tx" and e.data.startswith(b"\x01I")
    ]


async def test_status_frames_are_paced_by_the_profile(telesis_rig) -> None:
    async with telesis_rig(program=A1, profile=load_profile("telesis-tmp")) as rig:
        assert rig.driver.poll_hz == 4.0
        result = await rig.driver.run(A1)
        assert result.outcome is Outcome.DONE
        await rig.driver.close()
        times = status_sends(rig.driver)
        assert len(times) >= 5  # handshake, before Go, >= 1 poll, 2 safe-state checks (job end, close)
        assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.25 * 0.98


async def test_poll_option_is_capped(telesis_rig) -> None:
    async with telesis_rig(profile=load_profile("telesis-tmp"), options=TelesisOptions(poll_hz=40)) as rig:
        assert rig.driver.poll_hz == 4.0
