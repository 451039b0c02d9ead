"""Dot-peen pattern markers behind a Modbus register map, RTU or TCP (PROTOCOLS.md §5.6, §6)."""

from markctl.drivers.modbus_marker.driver import ModbusMarkerDriver, ModbusMarkerOptions

__all__ = ["ModbusMarkerDriver", "ModbusMarkerOptions"]
