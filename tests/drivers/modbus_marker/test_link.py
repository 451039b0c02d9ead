"""The typed Modbus link: addresses and options, errors named by register, nothing of pymodbus leaking."""

from __future__ import annotations

import pytest
from pymodbus.exceptions import ModbusException

from markctl.address import parse_address
from markctl.drivers.modbus_marker import ModbusMarkerOptions
from markctl.drivers.transports.modbus import ModbusRTULink, ModbusRTUOptions, ModbusTCPLink, ModbusTCPOptions
from markctl.errors import AddressError, DeviceError, MachineConnectionError, MachineError
from markctl.profiles import load_profile
from markctl.registry import resolve_driver, resolve_transport, validate_options
from markctl.simulator.clock import make_clock
from markctl.simulator.peen_modbus import ModbusMarkerSimulator


def test_registry_names_and_address_options() -> None:
    assert resolve_transport("modbus-tcp") is ModbusTCPLink
    assert resolve_transport("modbus-rtu") is ModbusRTULink
    assert resolve_driver("peen").family == "peen"
    opts = validate_options(parse_address("peen+modbus-tcp://127.0.0.1:5020?unit=3&use_coils=true&poll_hz=5"))
    assert opts.transport == ModbusTCPOptions(unit=3)
    assert opts.driver == ModbusMarkerOptions(use_coils=True, poll_hz=5)
    rtu = validate_options(parse_address("peen+modbus-rtu:///dev/ttyUSB1?baud=9600&parity=E"))
    assert rtu.transport == ModbusRTUOptions(baud=9600, parity="E")
    with pytest.raises(AddressError, match="did you mean unit"):
        validate_options(parse_address("peen+modbus-tcp://127.0.0.1:5020?unti=3"))


def test_profile_fills_what_the_address_left_out() -> None:
    link = ModbusRTULink("/dev/null", ModbusRTUOptions(baud=9600))
    link.use_profile_defaults(unit=4, timeout=0.5, retries=1, baud=19200, parity="E", stopbits=1)
    assert (link.unit, link.setting("baud"), link.setting("parity"), link.setting("timeout")) == (
        4,
        9600,
        "E",
        0.5,
    )


async def test_requests_on_a_closed_link_are_connection_errors() -> None:
    link = ModbusTCPLink("127.0.0.1:1")
    with pytest.raises(MachineConnectionError, match=r"not open \(status \(holding 2\)\)"):
        await link.read_registers(2, 1, what="status (holding 2)")


async def test_exception_responses_name_the_register_and_hide_pymodbus() -> None:
    sim = ModbusMarkerSimulator(load_profile("peen-modbus"), clock=make_clock("instant"))
    link = ModbusTCPLink(f"127.0.0.1:{await sim.serve_tcp()}", ModbusTCPOptions(timeout=0.5, retries=0))
    try:
        await link.open()
        with pytest.raises(DeviceError) as info:
            await link.read_registers(6, 2, what="nothing (holding 6)")
        assert info.value.device_code == "modbus-exception:2"
        assert "nothing (holding 6) with Modbus exception 2 (illegal data address)" in str(info.value)
        assert not isinstance(info.value, ModbusException) and info.value.__cause__ is None
        with pytest.raises(DeviceError, match="exception 3 .illegal data value."):
            await link.write_register(0, 99, what="command (holding 0)")  # not a command value
        assert link.bytes_out > 0 and link.bytes_in > 0 and link.requests == 2
        assert await link.read_registers(2, 4, what="status block") == [0, 0, 0, 0]
        await link.close()
        with pytest.raises(MachineError):
            await link.read_registers(2, 1, what="status (holding 2)")
    finally:
        await link.close()
        await sim.stop()


def test_a_bad_tcp_location_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="host:port"):
        ModbusTCPLink("127.0.0.1:http")._make_client()
