"""A simulated dot-peen marker behind a Modbus register map, on a real pymodbus server (PROTOCOLS.md §5.6, §6).

The machine is a :class:`~markctl.simulator.peen.PeenMarker`; this module exposes it through the
profile's :class:`~markctl.profiles.ModbusRegisterMap` (markctl's own map, §5.6) on a real
``pymodbus`` server, so any standard Modbus client (``mbpoll``, a PLC, pymodbus) can read and
drive it, over TCP (:meth:`ModbusMarkerSimulator.serve_tcp`), RTU on a pseudo-terminal
(:meth:`ModbusMarkerSimulator.serve_rtu_pty`, a pty pair bridged like a null-modem cable, §6.3) or
RTU framing over TCP (:meth:`ModbusMarkerSimulator.serve_rtu_tcp`, like a serial gateway).

Built on the 3.12+ datastore (``SimDevice`` + ``SimData`` with an ``action`` coroutine, §6.2), not
the legacy ``ModbusDeviceContext`` whose application-side get/set silently returns "device busy"
in 3.16. Verified by experiment with pymodbus 3.16.1: the action runs *before* a write is stored,
with the written values and the whole register block; a read is answered from the block after the
action returns, so the action refreshes status, fault code, progress and job counter on every read.

Map semantics (the profile's names): writing ``command`` = ``load_pattern`` loads pattern number
``pattern``; ``start`` takes the text block (two ASCII characters per register in
``text_byte_order``, NUL-terminated, fields separated by ``text_separator``), ``char_height`` and
``dot_pitch`` (mm x ``length_scale``, 0 = the pattern's own), ``force_pct`` and ``speed_pct``
(0 = default), the (x, y) origin pairs of the ``field_origins`` block (markctl's extension of the
§5.6 map; a pair the host never wrote leaves the pattern's position) and starts the cycle; ``abort`` stops it (fault "aborted by host"); ``reset_fault``
clears a fault. The command register reads back 0 once a command was taken. Coils ``start`` and
``abort`` do the same as the commands; discrete inputs ``ready``/``busy``/``done``/``fault`` mirror
the status. A start refused while busy answers exception 6 (device busy), while faulted or with
no pattern exception 4 (device failure); an unknown command value exception 3.

Faults, counted over requests (``@msg:N``) besides the machine faults of
:mod:`markctl.simulator.peen`: ``exception@msg:N=CODE`` answer request N with Modbus exception
CODE; ``noreply@msg:N`` never answer request N; ``drop@msg:N`` close the client connections when
request N arrives; ``slow@t:T=S`` from simulated time T every answer waits S simulated seconds.

Not modelled: input registers, broadcast, RS-485 multi-drop, inter-frame timing of RTU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import cast

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from markctl.profiles import FirmwareProfile, ModbusProtocol
from markctl.simulator.clock import Clock
from markctl.simulator.peen import MODEL_FAULT_KINDS, MarkerFrontEnd, MarkerStatus, Pattern
from markctl.simulator.workpiece import Workpiece

__all__ = ["FAULT_KINDS", "ModbusMarkerSimulator", "RequestRecord"]

FAULT_KINDS = frozenset({"exception", "noreply", "drop", "slow"}) | MODEL_FAULT_KINDS

_READ_REGS, _WRITE_REG, _WRITE_REGS = 3, 6, 16
_READ_COILS, _READ_INPUTS, _WRITE_COIL, _WRITE_COILS = 1, 2, 5, 15


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the server saw it (wall and simulated time, function code, range)."""

    wall_t: float
    sim_t: float
    function_code: int
    address: int
    count: int
    write: bool


def _runs(addresses: set[int]) -> list[tuple[int, int]]:
    """Contiguous (start, count) runs of a set of addresses."""
    runs: list[tuple[int, int]] = []
    for a in sorted(addresses):
        if runs and runs[-1][0] + runs[-1][1] == a:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((a, 1))
    return runs


class ModbusMarkerSimulator(MarkerFrontEnd):
    """The register map of a ``protocol.kind = "peen"`` profile, served by pymodbus."""

    def __init__(
        self,
        profile: FirmwareProfile,
        *,
        clock: Clock,
        faults: str = "",
        workpiece: Workpiece | None = None,
        patterns: Mapping[str, Pattern] | None = None,
        hardness_hb: float = 150.0,
    ) -> None:
        if not isinstance(profile.protocol, ModbusProtocol):
            raise ValueError(f"profile {profile.id} does not describe a Modbus marker")
        super().__init__(profile, clock=clock, faults=faults, fault_kinds=FAULT_KINDS, workpiece=workpiece,
                         patterns=patterns, hardness_hb=hardness_hb)  # fmt: skip
        self.proto: ModbusProtocol = profile.protocol
        self.map = profile.protocol.registers
        known = {int(code) for code in ExcCodes}
        for fault in self.faults:
            if fault.kind == "exception" and fault.arg_int(int(ExcCodes.DEVICE_FAILURE)) not in known:
                raise ValueError(f"fault {fault}: not a Modbus exception code ({sorted(known)})")
        self.marker.on_drop = self._drop
        self.requests: list[RequestRecord] = []
        self.device = SimDevice(self.proto.unit, simdata=self._blocks(), action=self._action)
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._ptys: list[int] = []
        self._command_taken = False
        self._stalled: list[asyncio.Event] = []
        # What the host wrote, by address: pymodbus stores a write only after the action returns,
        # and a coil request has no view of the register block, so the model keeps its own copy.
        self._written: dict[int, int] = {}

    # --- the datastore ---------------------------------------------------------------------

    def _holding(self) -> set[int]:
        m = self.map
        singles = {
            m.command,
            m.pattern,
            m.status,
            m.fault_code,
            m.progress_pct,
            m.job_counter,
            m.char_height,
            m.dot_pitch,
            m.force_pct,
            m.speed_pct,
        }
        origins = set(range(m.field_origin_start, m.field_origin_start + 2 * m.field_origins))
        return singles | set(range(m.text_start, m.text_start + m.text_registers)) | origins

    def _blocks(self) -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
        def block(addresses: set[int], datatype: DataType) -> list[SimData]:
            if not addresses:  # pymodbus wants every table; an unused one is one register at 0
                return [SimData(0, count=1, values=0, datatype=datatype)]
            values: bool | int = False if datatype is DataType.BITS else 0
            return [SimData(a, count=n, values=values, datatype=datatype) for a, n in _runs(addresses)]

        coils = block(set(self.map.coils.values()), DataType.BITS)
        inputs = block(set(self.map.discrete_inputs.values()), DataType.BITS)
        holding = block(self._holding(), DataType.REGISTERS)
        return coils, inputs, holding, block(set(), DataType.REGISTERS)

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if values is None and function_code in (_WRITE_REG, _WRITE_REGS, _WRITE_COIL, _WRITE_COILS):
            # pymodbus 3.16 calls the action a second time, without values, to build the answer
            # to a write: that is not another request.
            return None
        self.requests.append(
            RequestRecord(
                time.monotonic(), self.clock.now(), function_code, address, count, values is not None
            )
        )
        n = len(self.requests)
        for fault in self.faults:
            if fault.trigger != "msg" or int(fault.at) != n:
                continue
            if fault.kind == "exception":
                return ExcCodes(fault.arg_int(int(ExcCodes.DEVICE_FAILURE)))
            if fault.kind == "noreply":
                stall = asyncio.Event()  # released by stop(), so the server can shut down
                self._stalled.append(stall)
                await stall.wait()
                return ExcCodes.DEVICE_FAILURE
            if fault.kind == "drop":
                self._drop(f"injected drop at request {n}")
                return ExcCodes.DEVICE_FAILURE
        delay = self._latency()
        if delay > 0:
            await self.clock.sleep(delay)
        if function_code in (_WRITE_REG, _WRITE_REGS) and values is not None:
            return self._on_write(address, [int(v) for v in values])
        if function_code in (_WRITE_COIL, _WRITE_COILS) and values is not None:
            return self._on_coils(address, [bool(v) for v in values])
        if function_code == _READ_REGS:
            self._refresh(registers, start_address)
        elif function_code == _READ_INPUTS:
            self._refresh_inputs(address, count, registers, start_address)
        return None

    def _latency(self) -> float:
        delay = 0.0
        for fault in self.faults:
            if fault.kind == "slow" and fault.trigger == "t" and self.clock.now() >= fault.at:
                delay = max(delay, fault.arg_float(0.5))
        return delay

    def _refresh(self, registers: list[int], start: int) -> None:
        m, mk = self.map, self.marker
        state = {
            MarkerStatus.IDLE: "idle",
            MarkerStatus.BUSY: "busy",
            MarkerStatus.DONE: "done",
            MarkerStatus.FAULT: "fault",
        }[mk.status]
        registers[m.status - start] = self.map.states[state]
        registers[m.fault_code - start] = mk.fault_code
        registers[m.progress_pct - start] = mk.progress_pct
        registers[m.job_counter - start] = mk.job_counter
        if self._command_taken:
            registers[m.command - start] = 0
            self._command_taken = False

    def _refresh_inputs(self, address: int, count: int, registers: list[int], start: int) -> None:
        # pymodbus 3.16 (non-shared blocks) answers discrete input ``address + k`` from bit
        # ``address % 16 + k`` of the registers from index ``address - start`` on (LSB first).
        mk = self.marker
        level = {
            "ready": mk.ready,
            "busy": mk.busy,
            "done": mk.status is MarkerStatus.DONE,
            "fault": mk.status is MarkerStatus.FAULT,
        }
        by_address = {addr: level.get(name, False) for name, addr in self.map.discrete_inputs.items()}
        offset, first_bit = address - start, address % 16
        for r in range(count):
            word = 0
            for bit in range(16):
                k = r * 16 + bit - first_bit
                if k >= 0 and by_address.get(address + k, False):
                    word |= 1 << bit
            if 0 <= offset + r < len(registers):
                registers[offset + r] = word

    def _text(self) -> list[str]:
        m = self.map
        chars: list[str] = []
        for i in range(m.text_registers):
            word = self._written.get(m.text_start + i, 0)
            pair = (word >> 8, word & 0xFF) if m.text_byte_order == "high-first" else (word & 0xFF, word >> 8)
            if 0 in pair:
                chars.extend(chr(b) for b in pair[: pair.index(0)])
                break
            chars.extend(chr(b) for b in pair)
        return "".join(chars).split(m.text_separator) if chars else []

    def _on_write(self, address: int, values: list[int]) -> ExcCodes | None:
        for i, value in enumerate(values):
            self._written[address + i] = value
        if address <= self.map.command < address + len(values):
            return self._command(values[self.map.command - address])
        return None

    def _command(self, value: int) -> ExcCodes | None:
        m, mk = self.map, self.marker
        name = {v: k for k, v in m.commands.items()}.get(value)
        if name is None:
            return ExcCodes.ILLEGAL_VALUE
        self._command_taken = True
        if name == "load_pattern":
            mk.load_pattern(str(self._written.get(m.pattern, 0)))
        elif name == "start":
            return self._start()
        elif name == "abort":
            mk.abort()
        elif name == "reset_fault":
            mk.reset()
        return None

    def _start(self) -> ExcCodes | None:
        m, mk = self.map, self.marker
        if mk.busy:
            return ExcCodes.DEVICE_BUSY
        reg = self._written.get
        mk.texts = {i: text for i, text in enumerate(self._text(), 1) if text}
        mk.char_height_mm = reg(m.char_height, 0) / m.length_scale or None
        mk.dot_pitch_mm = reg(m.dot_pitch, 0) / m.length_scale or None
        mk.force_pct = float(reg(m.force_pct, 0) or 75)
        mk.speed_pct = float(reg(m.speed_pct, 0) or 100)
        # Field origins the host wrote override the stored pattern's; unwritten ones keep it.
        mk.origins = {}
        for i in range(1, m.field_origins + 1):
            x_reg = m.field_origin_start + 2 * (i - 1)
            if x_reg in self._written and x_reg + 1 in self._written:
                mk.origins[i] = (
                    self._written[x_reg] / m.length_scale,
                    self._written[x_reg + 1] / m.length_scale,
                )
        if not mk.start():
            return ExcCodes.DEVICE_FAILURE
        return None

    def _on_coils(self, address: int, values: list[bool]) -> ExcCodes | None:
        coils = self.map.coils
        for i, on in enumerate(values):
            if on and address + i == coils.get("abort"):
                self.marker.abort()
            elif on and address + i == coils.get("start"):
                return self._start()
        return None

    # --- serving ---------------------------------------------------------------------------

    async def _serve(self, server: ModbusTcpServer | ModbusSerialServer) -> None:
        self._server = server
        await self.marker.start_background()
        self._serve_task = asyncio.get_running_loop().create_task(
            server.serve_forever(), name="peen modbus server"
        )
        for _ in range(500):
            if server.transport is not None or self._serve_task.done():
                break
            await asyncio.sleep(0.01)
        if self._serve_task.done():
            self._serve_task.result()  # re-raise why it could not listen
        if server.transport is None:
            raise OSError("the pymodbus server did not start listening")

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve Modbus TCP; returns the bound port (``port=0`` picks a free one)."""
        server = ModbusTcpServer(self.device, address=(host, port), framer=FramerType.SOCKET)
        await self._serve(server)
        sockets = getattr(server.transport, "sockets", None)
        if not sockets:
            raise OSError("the pymodbus server has no listening socket")
        return int(sockets[0].getsockname()[1])

    async def serve_rtu_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve Modbus RTU framing over TCP (a serial-to-Ethernet gateway, §6.3); returns the port.

        A client reaches it as ``peen+modbus-rtu://socket://host:port`` (pyserial's socket URL).
        """
        server = ModbusSerialServer(
            self.device, framer=FramerType.RTU, port=f"socket://{host}:{port}", baudrate=self.proto.baud
        )
        await self._serve(server)
        sockets = getattr(server.transport, "sockets", None)
        if not sockets:
            raise OSError("the pymodbus server has no listening socket")
        return int(sockets[0].getsockname()[1])

    async def serve_rtu_pty(self) -> str:
        """Serve Modbus RTU on one end of a pty pair bridged to another; returns the host's pty path."""
        loop = asyncio.get_running_loop()
        m_server, s_server = os.openpty()
        m_host, s_host = os.openpty()
        for fd in (s_server, s_host):
            tty.setraw(fd)
        for fd in (m_server, m_host):
            os.set_blocking(fd, False)
        self._ptys = [m_server, s_server, m_host, s_host]
        loop.add_reader(m_server, self._shuttle, m_server, m_host)
        loop.add_reader(m_host, self._shuttle, m_host, m_server)
        server = ModbusSerialServer(
            self.device,
            framer=FramerType.RTU,
            port=os.ttyname(s_server),
            baudrate=self.proto.baud,
            parity=self.proto.parity,
            stopbits=self.proto.stopbits,
        )
        await self._serve(server)
        return os.ttyname(s_host)

    @staticmethod
    def _shuttle(source: int, sink: int) -> None:
        # The null-modem cable: whatever one side's line discipline delivers goes to the other.
        try:
            data = os.read(source, 4096)
        except (BlockingIOError, OSError):
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(sink, view) :]
            except BlockingIOError:
                continue
            except OSError:
                return

    def _drop(self, reason: str) -> None:
        server = self._server
        transport = getattr(server, "transport", None) if server is not None else None
        if transport is None:
            return
        connections = getattr(server, "active_connections", {})
        for connection in list(connections.values()):
            with contextlib.suppress(Exception):
                connection.close()

    async def stop(self) -> None:
        """Stop serving, stop the machine, release the pty pair."""
        for stall in self._stalled:
            stall.set()
        server, self._server = self._server, None
        if server is not None:
            # pymodbus leaves shutdown() unannotated; the cast is the typed adapter (STYLE.md §8).
            shutdown = cast(Callable[[], Awaitable[None]], server.shutdown)
            with contextlib.suppress(Exception):
                await shutdown()
        task, self._serve_task = self._serve_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.marker.stop_background()
        if self._ptys:
            loop = asyncio.get_running_loop()
            for fd in (self._ptys[0], self._ptys[2]):
                loop.remove_reader(fd)
            for fd in self._ptys:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._ptys = []
