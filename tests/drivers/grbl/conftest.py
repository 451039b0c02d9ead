"""Fixtures for the GRBL driver: a simulator wired exactly as markctl wires ``sim://`` addresses.

``pipe = PipeTransport(name, sink=sim.receive); sim.attach(pipe.feed, pipe.hang_up);
await sim.start(); driver = GRBLDriver(pipe, profile, options)``.

``fast(profile)`` raises the profile's status-poll ceiling for tests only, so the driver's own
rate limit (5 Hz on real Grbl, PROTOCOLS.md §1.2) does not make the suite slow; driver and
simulator still share the one profile object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from markctl.drivers.grbl import GRBLDriver, GRBLOptions
from markctl.drivers.transports import PipeTransport
from markctl.layouts.program import MotionProgram, ProcessParams, Stroke, StrokeKind
from markctl.profiles import FirmwareProfile, GrblProtocol, load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.grbl import GrblSimulator
from markctl.simulator.workpiece import Workpiece

GRBL_PROFILES = ("grbl-1.1", "grblhal", "fluidnc")
#: The contract cases: every profile, plus Grbl 1.1h with homing and soft limits on, homed, and a
#: work offset putting work 0,0 at the plate's corner (machine space is -travel..0, issue 12 row 17).
CONTRACT_CASES = (*GRBL_PROFILES, "grbl-1.1+soft-limits")


async def limit_machine_space(driver: GRBLDriver) -> None:
    """Homing and soft limits on, homed, work 0,0 at the physical corner where the plate lies."""
    await driver.set_setting(22, 1)
    await driver.set_setting(20, 1)
    await driver.home()
    await driver.command(f"G10L2P1X{-driver.settings[130]:g}Y{-driver.settings[131]:g}")
    await driver.command("G0X0Y0")  # off the switches, to the plate's corner
    for _ in range(500):
        report = await driver.query_status()  # the new WCO comes with the next report
        if report is not None and report.state == "Idle" and driver.wco is not None:
            return
    raise AssertionError(f"never idle after homing: {report}")


def fast(profile: FirmwareProfile, poll_hz: float = 40.0) -> FirmwareProfile:
    assert isinstance(profile.protocol, GrblProtocol)
    protocol = profile.protocol.model_copy(update={"status_poll_hz_max": poll_hz})
    return profile.model_copy(update={"protocol": protocol})


@dataclass
class Rig:
    driver: GRBLDriver
    sim: GrblSimulator
    pipe: PipeTransport


def square_and_zigzag() -> MotionProgram:
    """A few strokes that look like text: a closed square, a zigzag, a diagonal, in a 60 x 40 plate."""
    square = np.array([[5, 5], [20, 5], [20, 20], [5, 20], [5, 5]], dtype=float)
    zigzag = np.array([[25, 5], [30, 20], [35, 5], [40, 20], [45, 5]], dtype=float)
    diagonal = np.array([[50, 30], [55, 35]], dtype=float)
    return MotionProgram(
        strokes=(
            Stroke(StrokeKind.LINE, square, 0),
            Stroke(StrokeKind.LINE, zigzag, 0),
            Stroke(StrokeKind.LINE, diagonal, 1),
        ),
        params=(
            ProcessParams(speed_mm_min=1500, power_pct=60),
            ProcessParams(speed_mm_min=900, power_pct=30),
        ),
    )


def long_program(segments: int = 120) -> MotionProgram:
    """Many short segments (a raster-like polyline), enough to fill the RX buffer and planner."""
    xs = 5 + np.arange(segments + 1) * 0.4
    ys = 10 + 3 * np.sin(np.arange(segments + 1) * 0.7)
    return MotionProgram(
        strokes=(Stroke(StrokeKind.LINE, np.column_stack([xs, ys]), 0),),
        params=(ProcessParams(speed_mm_min=1200, power_pct=50),),
    )


@pytest.fixture
async def rig() -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    made: list[Rig] = []

    async def make(
        profile_id: str = "grbl-1.1",
        *,
        faults: str = "",
        clock: str = "instant",
        speed: bool = True,
        connect: bool = True,
        sim_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Rig:
        profile_id, _, variant = profile_id.partition("+")
        profile = load_profile(profile_id)
        if speed:
            profile = fast(profile)
        sim = GrblSimulator(
            profile,
            clock=make_clock(clock),
            faults=faults,
            workpiece=Workpiece(60, 40, px_per_mm=20),
            **(sim_kwargs or {}),
        )
        pipe = PipeTransport(f"sim://{profile_id}", sink=sim.receive)
        sim.attach(pipe.feed, pipe.hang_up)
        await sim.start()
        options.setdefault("poll_hz", 20.0)
        options.setdefault("response_timeout_s", 3.0)
        driver = GRBLDriver(pipe, profile, GRBLOptions(**options))
        built = Rig(driver, sim, pipe)
        made.append(built)
        if connect:
            await driver.connect()
            if variant == "soft-limits":
                await limit_machine_space(driver)
        return built

    yield make
    for built in made:
        await built.driver.close()
        await built.sim.stop()
