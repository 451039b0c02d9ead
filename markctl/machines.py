"""Open a machine by its address: hardware, remote device or simulator, one code path.

``open_machine("grbl+serial:///dev/ttyUSB0?baud=115200", profile="grbl-1.1")`` builds the
transport and the driver; ``open_machine("sim://grbl-1.1?clock=instant")`` first builds the
simulated machine from the same profile and hands the driver the near end of an in-process pipe
(byte protocols) or a Modbus client bound to a real pymodbus server on loopback (ARCHITECTURE.md
"Boundaries": drivers never import the simulator; this module wires them).

Use it as an async context manager, so the machine is always made safe and closed::

    async with await open_machine("sim://grbl-1.1") as machine:
        result = await machine.driver.run(program)
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from markctl.address import MachineAddress, parse_address
from markctl.drivers.base import DeviceInfo, Driver, DriverOptions
from markctl.drivers.transports.base import TransportOptions
from markctl.drivers.transports.pipe import PipeTransport
from markctl.errors import AddressError, ConfigError, DriverNotFoundError
from markctl.profiles import FirmwareProfile, load_profile
from markctl.registry import resolve_driver, resolve_transport, validate_options

__all__ = ["SIMULATORS", "CheckedAddress", "Machine", "SimOptions", "check_machine", "open_machine"]

#: Simulator class per driver family ("module:attribute", imported only when used).
SIMULATORS: dict[str, str] = {
    "grbl": "markctl.simulator.grbl:GrblSimulator",
    "telesis": "markctl.simulator.telesis:TelesisSimulator",
    "peen": "markctl.simulator.peen_modbus:ModbusMarkerSimulator",
}


class SimOptions(TransportOptions):
    """Options of ``sim://`` addresses."""

    clock: str = Field(default="instant", description="instant, realtime or scaled:FACTOR")
    faults: str = Field(default="", description="fault spec, e.g. disconnect@line:40,door@t:2.5")


@dataclass
class Machine:
    """An opened machine: its driver, and the simulator behind it when simulated."""

    address: MachineAddress
    profile: FirmwareProfile
    driver: Driver
    simulator: Any | None = None
    _cleanup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def info(self) -> DeviceInfo | None:
        return self.driver.info

    async def close(self) -> None:
        """Make the machine safe and close it, then stop any simulator. Idempotent."""
        try:
            await self.driver.close()
        finally:
            while self._cleanup:
                with contextlib.suppress(Exception):
                    await self._cleanup.pop()()

    async def __aenter__(self) -> Machine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _import(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _profile_for(address: MachineAddress, profile: str | FirmwareProfile | None) -> FirmwareProfile:
    if address.is_simulated:
        sim_profile = load_profile(address.location)
        if profile is not None and (profile if isinstance(profile, str) else profile.id) != sim_profile.id:
            raise ConfigError(f"{address}: the simulator runs profile {sim_profile.id!r}, not {profile!r}")
        return sim_profile
    if profile is None:
        raise ConfigError(f"{address}: which machine is this? give its firmware profile (--profile)")
    return load_profile(profile) if isinstance(profile, str) else profile


@dataclass(frozen=True)
class CheckedAddress:
    """An address that passed every check that needs no connection."""

    address: MachineAddress
    profile: FirmwareProfile
    driver_cls: type[Driver]


_PORT_TRANSPORTS = frozenset({"serial", "modbus-rtu"})


def check_machine(
    address: str | MachineAddress, profile: str | FirmwareProfile | None = None
) -> CheckedAddress:
    """Every check of a machine address that needs no connection, in the order a person fixes them.

    Syntax, the profile (exists, speaks this protocol), the driver and its transports, every option
    (names and values) and, for a serial port, that the device exists. Raises ConfigError naming
    the part; nothing is opened.
    """
    addr = parse_address(address) if isinstance(address, str) else address
    # Names first (a typo in the scheme is the likelier mistake than a missing profile).
    if addr.protocol is not None:
        _resolve_named(resolve_driver, addr.protocol, addr, "protocol")
    if not addr.is_simulated:
        _resolve_named(resolve_transport, addr.transport, addr, "transport")
    prof = _profile_for(addr, profile)
    family = addr.protocol or prof.family
    if family != prof.family:
        raise AddressError(
            f"profile {prof.id!r} speaks {prof.family!r}, not {family!r}", address=str(addr), part="protocol"
        )
    driver_cls: type[Driver] = resolve_driver(family)
    if addr.transport not in driver_cls.transports:
        raise AddressError(
            f"{family} machines are reached over {', '.join(sorted(driver_cls.transports))}",
            address=str(addr),
            part="transport",
        )
    full = MachineAddress(family, addr.transport, addr.location, addr.options)
    try:
        _check_options(full)
    except AddressError as exc:
        raise exc.as_typed(str(addr)) from None
    if addr.transport in _PORT_TRANSPORTS and os.name == "posix" and "://" not in addr.location:
        if not Path(addr.location).exists():
            raise AddressError(
                f"serial port {addr.location!r} does not exist",
                address=str(addr),
                part="location",
                hint="check the cable and the device name: ls /dev/ttyUSB* /dev/ttyACM*",
            )
    return CheckedAddress(full, prof, driver_cls)


def _check_options(full: MachineAddress) -> None:
    if full.is_simulated:
        sim_opts = validate_options(full, transport_model=SimOptions).transport
        assert isinstance(sim_opts, SimOptions)
        from markctl.simulator.clock import make_clock

        try:
            make_clock(sim_opts.clock)
        except ValueError as exc:
            raise AddressError(str(exc), address=str(full), part="option clock") from None
    else:
        validate_options(full)


def _resolve_named(resolve: Callable[[str], Any], name: str, addr: MachineAddress, part: str) -> None:
    try:
        resolve(name)
    except DriverNotFoundError as exc:
        raise AddressError(str(exc), address=str(addr), part=part) from None


async def open_machine(
    address: str | MachineAddress,
    *,
    profile: str | FirmwareProfile | None = None,
    connect: bool = True,
    simulator_kwargs: dict[str, Any] | None = None,
) -> Machine:
    """Build (and by default connect) the machine at ``address``."""
    checked = check_machine(address, profile)
    full, prof, driver_cls = checked.address, checked.profile, checked.driver_cls
    addr = full
    if addr.is_simulated:
        machine = await _open_simulated(full, prof, driver_cls, simulator_kwargs or {})
    else:
        opts = validate_options(full)
        transport = resolve_transport(full.transport)(full.location, opts.transport)
        machine = Machine(
            full, prof, driver_cls(transport, prof, _driver_options(opts.driver), name=str(full))
        )
    if connect:
        try:
            await machine.driver.connect()
        except BaseException:
            await machine.close()
            raise
    return machine


async def _open_simulated(
    addr: MachineAddress, prof: FirmwareProfile, driver_cls: type[Driver], extra: dict[str, Any]
) -> Machine:
    from markctl.simulator.clock import make_clock

    opts = validate_options(addr, transport_model=SimOptions)
    sim_opts = opts.transport
    assert isinstance(sim_opts, SimOptions)
    try:
        clock = make_clock(sim_opts.clock)
    except ValueError as exc:
        raise AddressError(str(exc), address=str(addr), part="option clock") from exc
    sim_cls = _import(SIMULATORS[prof.family])
    try:
        sim = sim_cls(prof, clock=clock, faults=sim_opts.faults, **extra)
    except ValueError as exc:  # a fault spec the simulator refuses
        raise AddressError(str(exc), address=str(addr), part="option faults") from exc
    if prof.family == "peen":
        port = await sim.serve_tcp("127.0.0.1", 0)
        link_cls = resolve_transport("modbus-tcp")
        link = link_cls(f"127.0.0.1:{port}", link_cls.options_model())
        machine = Machine(
            addr, prof, driver_cls(link, prof, _driver_options(opts.driver), name=str(addr)), sim
        )
        machine._cleanup.append(sim.stop)
        return machine
    pipe = PipeTransport(str(addr), sink=sim.receive, on_open=lambda: sim.attach(pipe.feed, pipe.hang_up))
    await sim.start()
    machine = Machine(addr, prof, driver_cls(pipe, prof, _driver_options(opts.driver), name=str(addr)), sim)
    machine._cleanup.append(sim.stop)
    return machine


def _driver_options(options: object) -> DriverOptions | None:
    # validate_options built it from the driver's own options_model, a DriverOptions subclass.
    return options if isinstance(options, DriverOptions) else None
