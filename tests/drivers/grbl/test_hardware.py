"""The GRBL contract on a real machine: ``pytest --machine grbl+serial:///dev/ttyUSB0``.

Skipped unless the run was given ``--machine`` (root conftest); the profile is ``grbl-1.1`` unless
a ``--profile`` option exists. It marks nothing: the jobs are a beam-off frame and programs at 0 %
power, so it is safe on a machine with a workpiece loaded, and it checks the same ends as the
simulator suite. The soft-limit test changes ``$20``/``$22`` for its duration and puts them back.

Against the reference firmware without a board: build gnea/grbl 1.1h with grbl/grbl-sim (see
``tests/fixtures/grbl/README.md``), then
``socat PTY,raw,echo=0,link=/tmp/ttyGRBL "EXEC:'stdbuf -i0 -o0 ./grbl_sim.exe -n -b /dev/null -s /dev/null',pty,raw,echo=0"``
and ``pytest tests/drivers/grbl/test_hardware.py --machine grbl+serial:///tmp/ttyGRBL``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from markctl.address import parse_address
from markctl.drivers.base import Outcome, SafeStateReached
from markctl.drivers.grbl import GRBLDriver
from markctl.layouts.program import MotionProgram, ProcessParams, Stroke, StrokeKind
from markctl.profiles import load_profile
from markctl.registry import resolve_transport, validate_options

pytestmark = pytest.mark.hardware


@pytest.fixture
def machine(machine_url: str | None, request: pytest.FixtureRequest) -> tuple[str, str]:
    if not machine_url:
        pytest.skip("no --machine URL given")
    # The profile: a --profile option if the root conftest ever grows one, else Grbl 1.1.
    profile_id = request.config.getoption("--profile", default=None) or "grbl-1.1"
    return machine_url, str(profile_id)


def _zero_power(points: list[list[float]]) -> MotionProgram:
    return MotionProgram(
        (Stroke(StrokeKind.LINE, np.array(points, dtype=float), 0),),
        (ProcessParams(speed_mm_min=1000, power_pct=0),),
    )


@pytest.fixture
async def driver(machine: tuple[str, str]) -> AsyncIterator[GRBLDriver]:
    url, profile_id = machine
    address = parse_address(url)
    if address.protocol != "grbl":
        pytest.skip(f"{url} is not a grbl+... address")
    options = validate_options(address)
    transport_cls = resolve_transport(address.transport)
    transport = transport_cls(address.location, options.transport)
    built = GRBLDriver(transport, load_profile(profile_id), options.driver)  # type: ignore[arg-type]
    async with built:
        yield built


async def test_real_machine_frames_and_runs_a_zero_power_job(driver: GRBLDriver) -> None:
    assert driver.info is not None and driver.settings.get(32) == 1
    frame = await driver.frame((0.0, 0.0, 10.0, 10.0), speed_mm_min=1000)
    assert frame.outcome is Outcome.DONE and frame.safe_state_confirmed
    result = await driver.run(_zero_power([[1.0, 1.0], [9.0, 1.0], [9.0, 9.0]]))
    assert result.ok and result.safe_state_confirmed
    assert driver.events_of(SafeStateReached)


async def test_real_machine_reports_buffers_and_settings_as_floats(driver: GRBLDriver) -> None:
    assert driver.info is not None
    assert driver.info.details["rx_buffer_bytes"] > 0 and driver.info.details["planner_blocks"] > 0
    assert isinstance(driver.settings[11], float) and 0 < driver.settings[11] < 1  # $11=0.010
    assert {0, 1, 100, 110, 120, 130} <= set(driver.settings)  # every setting, not only the profile's


async def test_real_machine_error_names_code_and_line(driver: GRBLDriver) -> None:
    result = await driver.run_gcode(["G21G90", "M5S0", "G1X5Y5F600", "G1X10Y5 P3"])
    assert (result.outcome, result.code, result.line) == (Outcome.ERROR, "error:36", 4)
    assert result.safe_state_confirmed


async def test_real_machine_abort_ends_safe(driver: GRBLDriver) -> None:
    job = driver.run(_zero_power([[1, 1], [60, 1], [60, 40], [1, 40], [1, 1]]))
    await asyncio.sleep(1.0)
    result = await job.abort()
    assert result.outcome is Outcome.ABORTED and result.safe_state_confirmed
    assert driver.events_of(SafeStateReached)[-1].method.startswith("feed hold")  # type: ignore[attr-defined]


async def test_real_machine_soft_limits_agree_with_the_driver(driver: GRBLDriver) -> None:
    # Issue 12 row 17 on the firmware itself: with $20=1 the machine space is -$13x..0. The
    # driver refuses a job at positive machine coordinates; sent raw, the firmware stops it.
    saved = {n: driver.settings.get(n, 0.0) for n in (20, 22)}
    try:
        await driver.set_setting(22, 1)
        await driver.set_setting(20, 1)
        await driver.unlock()
        await driver.query_status()
        with pytest.raises(ValueError, match=r"past the limit at X0"):
            driver.run(_zero_power([[1, 1], [5, 1]]))
        raw = await driver.run_gcode(["G21G90G54", "M5S0", "G10L2P1X0Y0", "G0X5Y0"])
        assert raw.outcome is Outcome.ALARM and raw.code == "ALARM:2" and raw.safe_state_confirmed
        await driver.unlock()
        inside = await driver.run_gcode(["G21G90G54", "M5S0", "G0X-1Y-1", "G0X0Y0"])
        assert inside.ok, inside.message
    finally:
        await driver.set_setting(20, saved[20])
        await driver.set_setting(22, saved[22])
