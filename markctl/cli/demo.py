"""``markctl demo``: what a technician sees first.

Until the controller lands this walks the foundation for real: it loads and validates every
bundled profile and parses and option-checks machine addresses, printing what it found.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from markctl import profiles as prof
from markctl.address import MachineAddress, parse_address
from markctl.errors import AddressError, DriverNotFoundError
from markctl.registry import transport_names, validate_options

EXAMPLE_ADDRESSES = (
    "grbl+serial:///dev/ttyUSB0?baud=115200",
    "grbl+tcp://127.0.0.1:2323",
    "peen+modbus-tcp://127.0.0.1:5020?unit=1",
    "sim://grbl-1.1",
    "grbl+serial:///dev/ttyUSB0?baudrate=115200",
)


def demo() -> int:
    """Run the demo."""
    console = Console()
    console.rule("firmware profiles")
    table = Table("id", "kind", "protocol", "work area (mm)", "buffers / process")
    for info in prof.list_profiles():
        p = prof.load_profile(info.id)
        proto = p.protocol
        if isinstance(proto, prof.GrblProtocol):
            detail = f"RX {proto.rx_buffer_bytes} B, {proto.planner_blocks} blocks, {len(proto.errors)} error texts"
        elif isinstance(proto, prof.TelesisProtocol):
            detail = (
                f"BCC {proto.bcc}/{proto.bcc_encoding}, {proto.retries} tries x {proto.reply_timeout_s:g} s"
            )
        else:
            detail = f"unit {proto.unit}, {proto.registers.text_registers * 2} text chars"
        area = f"{p.machine.work_area_x_mm:g} x {p.machine.work_area_y_mm:g}"
        table.add_row(p.id, p.machine.kind.value, p.family, area, detail)
    console.print(table)

    console.rule("machine addresses")
    known = set(transport_names())
    for text in EXAMPLE_ADDRESSES:
        try:
            address = parse_address(text)
            if address.transport in known:
                # Drivers register as their families land; until then only the transport's options count.
                validate_options(MachineAddress(None, address.transport, address.location, address.options))
                verdict = f"ok: {address.protocol or '(from profile)'} over {address.transport} at {address.location}"
            else:
                verdict = f"parsed; transport {address.transport!r} arrives with its driver issue"
        except (AddressError, DriverNotFoundError) as exc:
            verdict = f"refused: {exc}"
        console.print(f"{text}\n    {verdict}", markup=False)
    return 0


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""
    app.command("demo")(demo)
