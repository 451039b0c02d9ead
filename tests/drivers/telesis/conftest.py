"""A Telesis driver wired to the simulator the way markctl wires ``sim://telesis-tmp``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from markctl.drivers.telesis import TelesisDriver, TelesisOptions
from markctl.drivers.transports import PipeTransport
from markctl.layouts.program import PatternField, PatternProgram
from markctl.profiles import FirmwareProfile, load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.peen import FieldSlot, Pattern
from markctl.simulator.telesis import TelesisSimulator


def telesis_profile(**protocol: Any) -> FirmwareProfile:
    """telesis-tmp with protocol settings replaced (e.g. a short reply timeout for fault tests)."""
    base = load_profile("telesis-tmp")
    if not protocol:
        return base
    data = base.model_dump()
    data["protocol"].update(protocol)
    return FirmwareProfile.model_validate(data)


def patterns_for(program: PatternProgram) -> dict[str, Pattern]:
    """The controller-side pattern a technician would design for this program's fields."""
    slots = tuple(FieldSlot(f.x_mm, f.y_mm, f.height_mm, f.angle_deg, f.font) for f in program.fields)
    return {program.pattern: Pattern(slots)}


@dataclass
class Rig:
    sim: TelesisSimulator
    pipe: PipeTransport
    driver: TelesisDriver


RigFactory = Callable[..., AbstractAsyncContextManager[Rig]]


@pytest.fixture
def telesis_rig() -> RigFactory:
    @asynccontextmanager
    async def make(
        *,
        faults: str = "",
        clock: str = "instant",
        profile: FirmwareProfile | None = None,
        program: PatternProgram | None = None,
        options: TelesisOptions | None = None,
        connect: bool = True,
    ) -> AsyncIterator[Rig]:
        # 50 Hz status polls instead of the shipped 4 Hz keep the suite quick; the pacing itself is
        # tested with the shipped profile in test_polling.py.
        prof = profile or telesis_profile(status_poll_hz_max=50.0)
        sim = TelesisSimulator(
            prof,
            clock=make_clock(clock),
            faults=faults,
            patterns=patterns_for(program) if program is not None else None,
        )
        pipe = PipeTransport("sim://telesis-tmp", sink=sim.receive)
        sim.attach(pipe.feed, pipe.hang_up)
        await sim.start()
        driver = TelesisDriver(pipe, prof, options)
        try:
            if connect:
                await driver.connect()
            yield Rig(sim, pipe, driver)
        finally:
            await driver.close()
            await sim.stop()

    return make


SERIAL = PatternProgram("SERIAL", (PatternField("AB12-XY/7.Z", 3.0, 10.0, 12.0),))
