"""``markctl sim serve PROFILE``: a simulated machine that any program can talk to.

Byte-protocol machines (GRBL, Telesis) are served on a pseudo-terminal (``--pty``, prints
``/dev/pts/N``) or a TCP port (``--tcp HOST:PORT``, port 0 picks a free one); Modbus markers on a
real pymodbus server (``--modbus-tcp HOST:PORT``, ``--modbus-rtu-pty``). The process runs until
interrupted; ``--png FILE`` then saves what was marked.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from markctl.address import parse_address
from markctl.errors import ConfigError
from markctl.machines import SIMULATORS
from markctl.profiles import load_profile
from markctl.simulator.clock import make_clock

sim_app = typer.Typer(help="Run simulated machines for external tools and training.", no_args_is_help=True)


def _host_port(text: str, option: str) -> tuple[str, int]:
    try:
        return parse_address(f"x+tcp://{text}").host_port
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r}: expected HOST:PORT") from exc


@sim_app.command("serve")
def serve(
    profile_id: Annotated[
        str, typer.Argument(metavar="PROFILE", help="Firmware profile the simulator is built from.")
    ],
    pty: Annotated[bool, typer.Option("--pty", help="Serve on a pseudo-terminal.")] = False,
    tcp: Annotated[str | None, typer.Option("--tcp", help="Serve on HOST:PORT (byte protocols).")] = None,
    modbus_tcp: Annotated[
        str | None, typer.Option("--modbus-tcp", help="Modbus/TCP server on HOST:PORT.")
    ] = None,
    modbus_rtu_pty: Annotated[
        bool, typer.Option("--modbus-rtu-pty", help="Modbus RTU on a pseudo-terminal.")
    ] = False,
    clock: Annotated[str, typer.Option(help="realtime, scaled:FACTOR or instant.")] = "realtime",
    faults: Annotated[str, typer.Option(help="Fault spec, e.g. disconnect@line:40.")] = "",
    png: Annotated[Path | None, typer.Option(help="Save the workpiece here on exit.")] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: on Ctrl-C).")
    ] = None,
) -> int:
    """Serve one simulated machine until interrupted."""
    profile = load_profile(profile_id)
    byte_protocol = profile.family in ("grbl", "telesis")
    chosen = [name for name, on in (("--pty", pty), ("--tcp", tcp), ("--modbus-tcp", modbus_tcp),
                                    ("--modbus-rtu-pty", modbus_rtu_pty)) if on]  # fmt: skip
    if len(chosen) != 1:
        raise ConfigError("choose exactly one of --pty, --tcp, --modbus-tcp, --modbus-rtu-pty")
    if byte_protocol and chosen[0].startswith("--modbus"):
        raise ConfigError(f"{profile.id} speaks {profile.family}, not Modbus: use --pty or --tcp")
    if not byte_protocol and not chosen[0].startswith("--modbus"):
        raise ConfigError(f"{profile.id} is a Modbus marker: use --modbus-tcp or --modbus-rtu-pty")
    module, _, name = SIMULATORS[profile.family].partition(":")
    sim_cls = getattr(importlib.import_module(module), name)
    try:
        sim_clock = make_clock(clock)
    except ValueError as exc:
        raise ConfigError(f"--clock {clock!r}: {exc}") from None
    if png is not None and not png.parent.is_dir():
        raise ConfigError(f"--png {png}: the folder {png.parent} does not exist")
    try:
        sim = sim_cls(profile, clock=sim_clock, faults=faults)
    except ValueError as exc:
        raise ConfigError(f"--faults {faults!r}: {exc}") from None

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        cleanup: list[Any] = []
        try:
            where = await _listen(cleanup)
        except (OSError, RuntimeError) as exc:  # pymodbus says RuntimeError("Could not start listen")
            await sim.stop()
            option, text = (
                ("--tcp", tcp) if tcp else ("--modbus-tcp", modbus_tcp) if modbus_tcp else (chosen[0], "")
            )
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                f"{option} {text}: cannot listen there: {reason.rstrip('.')}",
                hint="is another program or simulator using the port? pick another, or port 0 for a free one",
            ) from exc
        typer.echo(f"serving {profile.id} ({profile.family}) on {where}", err=False)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()
        for close in cleanup:
            close()
        await sim.stop()
        if png is not None:
            sim.workpiece.save_png(png)
            typer.echo(f"workpiece saved to {png}")

    async def _listen(cleanup: list[Any]) -> str:
        from markctl.simulator.serve import PtyBridge, serve_tcp

        if pty:
            bridge = PtyBridge(sim)
            bridge.start()
            await sim.start()
            cleanup.append(bridge.close)
            where = bridge.path
        elif tcp:
            host, port = _host_port(tcp, "--tcp")
            server, bound = await serve_tcp(sim, host, port)
            await sim.start()
            cleanup.append(server.close)
            where = f"{host}:{bound}"
        elif modbus_tcp:
            host, port = _host_port(modbus_tcp, "--modbus-tcp")
            where = f"{host}:{await sim.serve_tcp(host, port)}"
        else:
            where = await sim.serve_rtu_pty()
        return str(where)

    asyncio.run(run())
    return 0


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")
