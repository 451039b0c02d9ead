"""``markctl machines probe``: does the machine at an address match its firmware profile?

Commissioning a machine means trusting its profile: the work area bounds every layout, ``$30``
scales every power value, the register map is where every command goes. A profile copied from
another machine is the usual mistake, and it only shows when a mark comes out wrong. The probe
connects, runs the driver's own handshake (which already refuses the wrong dialect or a banner the
profile does not match), reads identity and settings, and lists every difference.

It reads and never writes anything that moves an axis or fires: GRBL ``$I`` and ``$$`` (reads);
Modbus reads of every register and discrete input of the map; Telesis status (``I``; the
driver's handshake sends ``O`` reset/online only to clear a fault). Closing the machine sends the
drivers' safe-state commands (beam off, stylus up), which is what every disconnect does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from markctl.errors import MachineError
from markctl.machines import Machine
from markctl.profiles import FirmwareProfile, GrblProtocol, ModbusProtocol

__all__ = ["Check", "probe"]

# GRBL settings a person should read by name (grbl/doc/markdown/settings.md).
GRBL_SETTING_NAMES = {
    20: "soft limits",
    21: "hard limits",
    22: "homing",
    30: "S for 100 % power (spindle max)",
    31: "S for minimum power",
    32: "laser mode",
    110: "X max rate, mm/min",
    111: "Y max rate, mm/min",
    120: "X acceleration, mm/s^2",
    121: "Y acceleration, mm/s^2",
    130: "X max travel, mm",
    131: "Y max travel, mm",
}


@dataclass(frozen=True)
class Check:
    """One fact compared: what, as the device says it, as the profile says it, and whether they agree."""

    what: str
    device: str
    profile: str
    ok: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


async def probe(machine: Machine) -> list[Check]:
    """Compare the connected machine with its profile; reads only (see the module docstring)."""
    profile = machine.profile
    info = machine.info
    checks = [Check("identity", f"{info.dialect} {info.version}" if info else "-", profile.id, True,
                    info.banner if info and info.banner else "")]  # fmt: skip
    if isinstance(profile.protocol, GrblProtocol):
        checks += _grbl(machine, profile, profile.protocol)
    elif isinstance(profile.protocol, ModbusProtocol):
        checks += await _modbus(machine, profile.protocol)
    else:
        checks += await _telesis(machine)
    return checks


def _grbl(machine: Machine, profile: FirmwareProfile, proto: GrblProtocol) -> list[Check]:
    driver: Any = machine.driver
    info = machine.info
    details = info.details if info else {}
    device: dict[int, float] = dict(driver.settings)
    out: list[Check] = []
    if info is not None:
        # grbl's $I says 1.1h.20190830 (version and build date): the profile names the version.
        same = info.version == proto.version or info.version.startswith(proto.version + ".")
        out.append(Check("firmware version", info.version, proto.version, same))
    sizes: tuple[tuple[str, str, float], ...] = (("RX buffer, bytes", "rx_buffer_bytes", proto.rx_buffer_bytes),
                                                 ("planner blocks", "planner_blocks", proto.planner_blocks))  # fmt: skip
    for what, key, expected in sizes:
        got = details.get(key)
        out.append(Check(what, _num(got), _num(expected), got == expected))
    for number, expected in sorted(proto.settings.items()):
        got = device.get(number)
        name = GRBL_SETTING_NAMES.get(number, "")
        label = f"${number}" + (f" ({name})" if name else "")
        out.append(Check(label, _num(got), _num(expected), got is not None and abs(got - expected) < 1e-6))
    spec = profile.machine
    for axis, number, area in (("X", 130, spec.work_area_x_mm), ("Y", 131, spec.work_area_y_mm)):
        travel = device.get(number)
        ok = travel is not None and area <= travel + 1e-6
        note = (
            ""
            if ok
            else "the profile's work area is larger than the machine's travel: marks would hit the limits"
        )
        out.append(
            Check(f"{axis} travel (${number}) covers the work area", _num(travel), f"{area:g}", ok, note)
        )
    if spec.kind.value == "laser":
        laser = device.get(32)
        out.append(Check("$32 laser mode on a laser", _num(laser), "1", laser == 1,
                         "" if laser == 1 else "without laser mode the beam stays on between moves (burns)"))  # fmt: skip
    soft, homing = device.get(20), device.get(22)
    if soft == 1 and homing != 1:
        out.append(Check("$20 soft limits need $22 homing", f"$20={_num(soft)} $22={_num(homing)}", "$22=1",
                         False, "GRBL refuses soft limits without homing (error:10)"))  # fmt: skip
    return out


async def _modbus(machine: Machine, proto: ModbusProtocol) -> list[Check]:
    driver: Any = machine.driver
    link = driver.link
    m = proto.registers
    out: list[Check] = []
    named = [(n, getattr(m, n)) for n in ("command", "pattern", "status", "fault_code", "progress_pct",
                                          "job_counter", "char_height", "dot_pitch", "force_pct", "speed_pct")]  # fmt: skip
    named.append(("text (first register)", m.text_start))
    for name, address in sorted(named, key=lambda item: item[1]):
        try:
            (value,) = await link.read_registers(address, 1, what=f"{name} (holding {address})")
        except MachineError as exc:
            out.append(Check(f"holding {address} ({name})", "unreadable", "readable", False, str(exc)))
            continue
        ok, note = True, ""
        if name == "status" and value not in m.states.values():
            ok, note = False, f"not one of the profile's states {dict(m.states)}"
        if name == "fault_code" and value and value not in proto.fault_codes:
            ok, note = False, "a fault code the profile's table does not name"
        out.append(Check(f"holding {address} ({name})", str(value), "readable", ok, note))
    for name, address in sorted(m.discrete_inputs.items(), key=lambda item: item[1]):
        try:
            (bit,) = await link.read_discrete_inputs(address, 1, what=f"{name} (discrete input {address})")
        except MachineError as exc:
            out.append(Check(f"discrete input {address} ({name})", "unreadable", "readable", False, str(exc)))
            continue
        out.append(Check(f"discrete input {address} ({name})", str(int(bool(bit))), "readable", True))
    return out


async def _telesis(machine: Machine) -> list[Check]:
    driver: Any = machine.driver
    status = await driver.read_status()
    ok = not status.fault and status.ready
    note = "" if ok else ("fault: " + driver.fault_text(status.fault_code) if status.fault else "not ready")
    return [Check("status (I)", status.describe(), "ready, no fault", ok, note)]


def differences(checks: Iterable[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]
