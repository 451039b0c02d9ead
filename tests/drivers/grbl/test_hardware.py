"""The GRBL contract on a real machine: ``pytest --machine grbl+serial:///dev/ttyUSB0``.

Skipped unless the run was given ``--machine`` (root conftest); the profile is ``grbl-1.1`` unless
a ``--profile`` option exists. It marks nothing: the job is a beam-off frame and a program at 0 % power, so it is safe on
a machine with a workpiece loaded, and it checks the same ends as the simulator suite.
"""

from __future__ import annotations

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


async def test_real_machine_frames_and_runs_a_zero_power_job(machine: tuple[str, str]) -> None:
    import numpy as np

    url, profile_id = machine
    address = parse_address(url)
    if address.protocol != "grbl":
        pytest.skip(f"{url} is not a grbl+... address")
    options = validate_options(address)
    transport_cls = resolve_transport(address.transport)
    transport = transport_cls(address.location, options.transport)
    driver = GRBLDriver(transport, load_profile(profile_id), options.driver)  # type: ignore[arg-type]
    async with driver:
        assert driver.info is not None and driver.settings.get(32) == 1
        frame = await driver.frame((0.0, 0.0, 10.0, 10.0), speed_mm_min=1000)
        assert frame.outcome is Outcome.DONE and frame.safe_state_confirmed
        program = MotionProgram(
            (Stroke(StrokeKind.LINE, np.array([[1.0, 1.0], [9.0, 1.0], [9.0, 9.0]]), 0),),
            (ProcessParams(speed_mm_min=1000, power_pct=0),),
        )
        result = await driver.run(program)
        assert result.ok and result.safe_state_confirmed
        assert driver.events_of(SafeStateReached)
