"""A Modbus marker driver bound to the simulator's real pymodbus server, as markctl wires ``sim://peen-modbus``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import pytest

from markctl.drivers.modbus_marker import ModbusMarkerDriver, ModbusMarkerOptions
from markctl.drivers.transports.modbus import ModbusLink, ModbusRTULink, ModbusTCPLink, ModbusTCPOptions
from markctl.layouts.program import PatternProgram
from markctl.profiles import FirmwareProfile, load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.peen import FieldSlot, Pattern
from markctl.simulator.peen_modbus import ModbusMarkerSimulator


@dataclass
class Rig:
    sim: ModbusMarkerSimulator
    link: ModbusLink
    driver: ModbusMarkerDriver


RigFactory = Callable[..., AbstractAsyncContextManager[Rig]]


def peen_profile(**protocol: object) -> FirmwareProfile:
    data = load_profile("peen-modbus").model_dump()
    data["protocol"].update(protocol)
    return FirmwareProfile.model_validate(data)


@pytest.fixture
def peen_rig() -> RigFactory:
    @asynccontextmanager
    async def make(
        *,
        faults: str = "",
        clock: str = "instant",
        profile: FirmwareProfile | None = None,
        program: PatternProgram | None = None,
        options: ModbusMarkerOptions | None = None,
        link_options: ModbusTCPOptions | None = None,
        rtu: bool = False,
        connect: bool = True,
    ) -> AsyncIterator[Rig]:
        prof = profile or load_profile("peen-modbus")
        patterns = None
        if program is not None:
            # The pattern a technician stored on the controller under this number: where each
            # field goes (the height comes over the wire, in char_height).
            slots = tuple(FieldSlot(f.x_mm, f.y_mm, 3.0, f.angle_deg, f.font) for f in program.fields)
            patterns = {program.pattern: Pattern(slots)}
        sim = ModbusMarkerSimulator(prof, clock=make_clock(clock), faults=faults, patterns=patterns)
        link: ModbusLink
        if rtu:
            link = ModbusRTULink(await sim.serve_rtu_pty(), link_options)
        else:
            port = await sim.serve_tcp("127.0.0.1", 0)
            link = ModbusTCPLink(f"127.0.0.1:{port}", link_options)
        driver = ModbusMarkerDriver(link, prof, options)
        try:
            if connect:
                await driver.connect()
            yield Rig(sim, link, driver)
        finally:
            await driver.close()
            await link.close()
            await sim.stop()

    return make
