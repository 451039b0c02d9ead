"""Names of drivers and transports, resolved lazily to classes.

A built-in table maps each name to ``"module:attribute"``; nothing is imported until a name is
used, so pymodbus loads only for Modbus machines. External packs add names through the entry-point
groups ``markctl.drivers`` and ``markctl.transports``. Adding an in-tree driver family touches:
``drivers/<family>/``, one line in :data:`BUILTIN_DRIVERS`, at least one profile TOML and
``tests/drivers/<family>/``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from markctl.address import MachineAddress
from markctl.errors import AddressError, DriverNotFoundError

__all__ = [
    "BUILTIN_DRIVERS",
    "BUILTIN_TRANSPORTS",
    "ValidatedOptions",
    "driver_names",
    "resolve_driver",
    "resolve_transport",
    "transport_names",
    "validate_options",
]

DRIVER_GROUP = "markctl.drivers"
TRANSPORT_GROUP = "markctl.transports"

BUILTIN_TRANSPORTS: Mapping[str, str] = {
    "serial": "markctl.drivers.transports.serial:SerialTransport",
    "tcp": "markctl.drivers.transports.serial:TCPTransport",
    "rfc2217": "markctl.drivers.transports.serial:RFC2217Transport",
    "modbus-tcp": "markctl.drivers.transports.modbus:ModbusTCPLink",
    "modbus-rtu": "markctl.drivers.transports.modbus:ModbusRTULink",
}

BUILTIN_DRIVERS: Mapping[str, str] = {
    "telesis": "markctl.drivers.telesis:TelesisDriver",
    "peen": "markctl.drivers.modbus_marker:ModbusMarkerDriver",
    "grbl": "markctl.drivers.grbl:GRBLDriver",
}


def _entry_point_table(group: str) -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=group)}


def _table(kind: str) -> dict[str, str]:
    if kind == "driver":
        return {**_entry_point_table(DRIVER_GROUP), **BUILTIN_DRIVERS}
    return {**_entry_point_table(TRANSPORT_GROUP), **BUILTIN_TRANSPORTS}


def driver_names() -> list[str]:
    """Every driver name, built-in and from entry points."""
    return sorted(_table("driver"))


def transport_names() -> list[str]:
    """Every transport name, built-in and from entry points."""
    return sorted(_table("transport"))


def _resolve(kind: str, name: str) -> Any:
    table = _table(kind)
    target = table.get(name)
    if target is None:
        close = difflib.get_close_matches(name, table, n=3)
        suggestion = f"; did you mean {' or '.join(close)}?" if close else ""
        known = ", ".join(sorted(table)) or "none"
        raise DriverNotFoundError(f"no {kind} named {name!r} (known: {known}){suggestion}", code="not-found")
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute)


def resolve_driver(name: str) -> Any:
    """The driver class registered under ``name``; DriverNotFoundError lists the known names."""
    return _resolve("driver", name)


def resolve_transport(name: str) -> Any:
    """The transport class registered under ``name``; DriverNotFoundError lists the known names."""
    return _resolve("transport", name)


@dataclass(frozen=True, slots=True)
class ValidatedOptions:
    """An address's options split between the driver and the transport, parsed by their models."""

    driver: BaseModel | None
    transport: BaseModel


def validate_options(
    address: MachineAddress, *, transport_model: type[BaseModel] | None = None
) -> ValidatedOptions:
    """Check every option of ``address`` against its driver's and transport's option models.

    An unknown or misspelt option raises AddressError naming it, with the closest known names.
    """
    if transport_model is None:
        transport_model = resolve_transport(address.transport).options_model
    driver_model: type[BaseModel] | None = None
    if address.protocol is not None:
        driver_model = resolve_driver(address.protocol).options_model
    known_driver = set(driver_model.model_fields) if driver_model else set()
    known_transport = set(transport_model.model_fields)
    given = address.option_map
    for key in given:
        if key not in known_driver and key not in known_transport:
            close = difflib.get_close_matches(key, known_driver | known_transport, n=2)
            hint = f"did you mean {' or '.join(close)}?" if close else None
            known = ", ".join(sorted(known_driver | known_transport)) or "none"
            raise AddressError(
                f"unknown option (known: {known})", address=str(address), part=f"option {key}", hint=hint
            )
    driver_opts = _build(driver_model, {k: v for k, v in given.items() if k in known_driver}, address)
    transport_opts = _build(
        transport_model, {k: v for k, v in given.items() if k in known_transport}, address
    )
    assert transport_opts is not None
    return ValidatedOptions(driver_opts, transport_opts)


def _build(
    model: type[BaseModel] | None, values: dict[str, str], address: MachineAddress
) -> BaseModel | None:
    if model is None:
        return None
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "options"
        raise AddressError(err["msg"], address=str(address), part=f"option {key}") from None
