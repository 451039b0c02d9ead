"""Status polling never exceeds the profile's rate, as seen by the server (pymodbus action timestamps).

The driver waits a whole period after each status *answer* before the next status request, so the
arrival times at the server are at least one period apart by construction; this checks it holds
over a real TCP connection. (A lower bound on an interval, not a wall-clock duration.)
"""

from __future__ import annotations

import pytest

from markctl.drivers.base import Outcome, Progress
from markctl.drivers.modbus_marker import ModbusMarkerOptions
from markctl.layouts.program import PatternField, PatternProgram

LONG = PatternProgram("7", (PatternField("AB12-XY/7Z", 3.0, 10.0, 12.0),))


def status_reads(rig) -> list[float]:
    status = rig.driver.map.status
    return [
        r.wall_t
        for r in rig.sim.requests
        if r.function_code == 3 and r.address <= status < r.address + r.count
    ]


async def test_polls_at_most_poll_hz_max(peen_rig) -> None:
    # x10: the 10-character mark (4 simulated seconds) takes about 0.4 s, several polls long
    async with peen_rig(program=LONG, clock="scaled:10") as rig:
        result = await rig.driver.run(LONG)
        assert result.outcome is Outcome.DONE
        times = status_reads(rig)
        assert len(times) >= 5
        period = 1.0 / rig.driver.profile.protocol.poll_hz_max  # type: ignore[union-attr]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= period * 0.98, gaps


async def test_a_faster_option_is_capped_and_a_slower_one_honoured(peen_rig) -> None:
    async with peen_rig(options=ModbusMarkerOptions(poll_hz=60)) as rig:
        assert rig.driver.poll_hz == 10.0
    async with peen_rig(program=LONG, clock="scaled:10", options=ModbusMarkerOptions(poll_hz=4)) as rig:
        await rig.driver.run(LONG)
        times = status_reads(rig)
        assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.25 * 0.98


def test_poll_delay_is_slow_far_from_the_end_and_fast_near_it() -> None:
    from markctl.drivers.pattern import poll_delay

    period, slow = 0.1, 1.0
    assert poll_delay(0.0, 0.0, expected=10.0, period=period, slow=slow) == slow  # start of a long cycle
    assert poll_delay(2.0, 0.2, expected=10.0, period=period, slow=slow) == slow  # 8 s left
    assert poll_delay(2.0, 0.8, expected=10.0, period=period, slow=slow) == pytest.approx(0.125)  # 0.5 s left
    assert poll_delay(9.9, 0.99, expected=10.0, period=period, slow=slow) == period  # never under the period
    assert poll_delay(12.0, 0.0, expected=10.0, period=period, slow=slow) == period  # overdue: fastest
    assert poll_delay(0.0, 0.0, expected=10.0, period=2.0, slow=slow) == 2.0  # slow never beats the limit


async def test_an_abort_is_confirmed_at_the_poll_limit_not_on_the_slow_schedule(peen_rig) -> None:
    # Far from the end of a 12 s cycle the driver polls only every 3 s (a quarter of what is left).
    # Confirming an abort must not wait for that schedule: it would outlast a 2 s safe-state bound.
    three = PatternProgram("7", tuple(PatternField(t, 3.0, 10.0, y) for t, y in (("AB12-XY/7Z", 12.0),
                                      ("CD34-UV/8W", 20.0), ("EF56-ST/9X", 28.0))))  # fmt: skip
    async with peen_rig(
        program=three, clock="scaled:0.5", options=ModbusMarkerOptions(slow_poll_s=10)
    ) as rig:
        rig.driver.safe_state_timeout_s = 2.0
        handle = rig.driver.run(three)
        async for event in handle.watch():
            if isinstance(event, Progress) and event.detail.startswith("marking"):
                break
        result = await handle.abort()
        assert result.outcome is Outcome.ABORTED and result.safe_state_confirmed, result
        assert not rig.sim.marker.stylus_down
