"""A simulated dot-peen marker behind a Modbus register map, as strict as a real controller (PROTOCOLS.md §5.6, §6).

The machine is a :class:`~markctl.simulator.peen.PeenMarker`; this module exposes it through the
profile's :class:`~markctl.profiles.ModbusRegisterMap` on markctl's own Modbus server
(:mod:`markctl.simulator.peen_modbus_wire`, written from the Modbus specifications), so any
standard Modbus client (``mbpoll``, a PLC, pymodbus) can read and drive it, over TCP
(:meth:`ModbusMarkerSimulator.serve_tcp`), RTU on a pseudo-terminal
(:meth:`ModbusMarkerSimulator.serve_rtu_pty`) or RTU framing over TCP
(:meth:`ModbusMarkerSimulator.serve_rtu_tcp`, like a serial gateway).

Map semantics (the profile's names): writing ``command`` = ``load_pattern`` loads pattern number
``pattern``; ``start`` takes the text block (two ASCII characters per register in
``text_byte_order``, NUL-terminated, fields separated by ``text_separator``), ``char_height`` and
``dot_pitch`` (mm x ``length_scale``, 0 = the pattern's own), ``force_pct`` (0 = the machine's
default) and ``speed_pct``, the (x, y) origin pairs of the ``field_origins`` block (a pair the host
never wrote leaves the pattern's position) and starts the cycle; ``abort`` stops it (fault
"aborted by host"); ``reset_fault`` clears a fault. The command register reads 0 once a command
was taken. Coils ``start`` and ``abort`` do the same as the commands and read back 0; discrete
inputs ``ready``/``busy``/``done``/``fault`` mirror the status.

What the device refuses, with the Modbus exception a controller gives (Application Protocol §7):

* 02 illegal data address: any address of a request that the map does not name (in its own
  table: a coil is not a register), and a write to a read-only register (status, fault code,
  progress, job counter);
* 03 illegal data value: a value outside the profile's limits (force 0-100 %, 0 = default; speed
  1-100 %; character height 0 or ``char_height_min_mm``..``char_height_max_mm``; dot pitch 0 or
  ``resolution_mm``..``char_height_max_mm``; origins inside the marking window; text bytes other
  than printable ASCII, NUL and the separator; an unknown command value), and a Go with no
  character to mark or with a dot outside the window;
* 04 server device failure: Go while faulted, with no pattern, or with a text the pattern cannot
  take (the machine faults "text field overflow");
* 06 server device busy: Go, load pattern, or a write of pattern/text/parameters while a cycle runs.

A refused request changes nothing (every value is checked before any is stored).

Faults, counted over requests (``@msg:N``) besides the machine faults of
:mod:`markctl.simulator.peen`: ``exception@msg:N=CODE`` answer request N with Modbus exception
CODE; ``noreply@msg:N`` never answer request N; ``drop@msg:N`` close the client connections when
request N arrives; ``slow@t:T=S`` from simulated time T every answer waits S simulated seconds.

Map variants, all from the profile (see :class:`~markctl.profiles.ModbusRegisterMap`): status,
fault code, progress and job counter in holding or input registers; the status as one value per
state or as a bit field; progress, job counter, dot pitch and origins may be absent; lengths in
one register or 32 bits over two in either word order; text two characters per register or one.
With ``start = "handshake"`` the command register holds what the host wrote and a command acts on
a change of its value (0 releases it, so the same command can be given again); with
``start = "coil-edge"`` the start coil holds its level and a cycle starts on its rising edge.

Not modelled: RS-485 electrical timing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from markctl.profiles import FirmwareProfile, ModbusProtocol
from markctl.simulator.clock import Clock
from markctl.simulator.peen import MODEL_FAULT_KINDS, MarkerFrontEnd, MarkerStatus, Pattern
from markctl.simulator.peen_modbus_wire import (
    NO_REPLY,
    Answer,
    ExceptionCode,
    ModbusWireServer,
    Request,
    Table,
)
from markctl.simulator.workpiece import Workpiece

__all__ = ["FAULT_KINDS", "ModbusMarkerSimulator", "RequestRecord"]

FAULT_KINDS = frozenset({"exception", "noreply", "drop", "slow"}) | MODEL_FAULT_KINDS

#: Registers the machine writes and the host only reads.
_READ_ONLY = frozenset({"status", "fault_code", "progress_pct", "job_counter"})
#: Quantities in mm x length_scale, one or two registers each (length_words).
_LENGTHS = frozenset({"char_height", "dot_pitch", "origin_x", "origin_y", "field_height"})
#: Registers the host may not change while a cycle runs (the cycle took them at Go).
_JOB_DATA = frozenset(
    {
        "pattern",
        "text",
        "char_height",
        "dot_pitch",
        "force_pct",
        "speed_pct",
        "origin_x",
        "origin_y",
        "field_height",
        "field_angle",
    }
)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the server saw it (wall and simulated time, function code, range)."""

    wall_t: float
    sim_t: float
    function_code: int
    address: int
    count: int
    write: bool
    values: tuple[int, ...] = ()  # what a write carried (registers, or 0/1 per coil)


class ModbusMarkerSimulator(MarkerFrontEnd):
    """The register map of a ``protocol.kind = "peen"`` profile, served over Modbus TCP or RTU."""

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
        known = {int(code) for code in ExceptionCode} | {5, 7, 8, 10}
        for fault in self.faults:
            if fault.kind == "exception" and fault.arg_int(int(ExceptionCode.DEVICE_FAILURE)) not in known:
                raise ValueError(f"fault {fault}: not a Modbus exception code ({sorted(known)})")
        self.marker.on_drop = self._drop
        self.requests: list[RequestRecord] = []
        self.holding, self.input_registers = self._roles()
        self.coils = {address: name for name, address in self.map.coils.items()}
        self._coil_levels: dict[int, bool] = {}
        self.inputs = {address: name for name, address in self.map.discrete_inputs.items()}
        self._wire = ModbusWireServer(self, self.proto.unit, baud=self.proto.baud)
        self._serving = False
        # What the host wrote and the machine keeps, by holding register address.
        self._written: dict[int, int] = {}

    # --- the map ---------------------------------------------------------------------------

    def _roles(self) -> tuple[dict[int, tuple[str, int]], dict[int, tuple[str, int]]]:
        """Holding and input registers: address -> (role, address of the quantity's first word)."""
        m = self.map
        holding: dict[int, tuple[str, int]] = {}
        inputs: dict[int, tuple[str, int]] = {}
        for name, (address, n) in m.widths().items():
            for a in range(address, address + n):
                holding[a] = (name, address)
        status_table = holding if m.status_table == "holding" else inputs
        for name in m.status_names:
            address = int(getattr(m, name))
            status_table[address] = (name, address)
        for a in range(m.text_start, m.text_start + m.text_registers):
            holding[a] = ("text", a)
        lw = m.length_words
        for i in range(m.field_origins):
            x = m.field_origin_start + 2 * lw * i
            for k in range(lw):
                holding[x + k] = ("origin_x", x)
                holding[x + lw + k] = ("origin_y", x + lw)
        block = m.field_block
        if block is not None:
            roles = {"height": "field_height", "angle": "field_angle", "x": "origin_x", "y": "origin_y"}
            for i in range(block.count):
                base = block.start + block.stride * i
                for name, offsets in block.offsets(lw).items():
                    for o in offsets:
                        holding[base + o] = (roles[name], base + offsets.start)
        return holding, inputs

    def _length(self, base: int, words: Mapping[int, int]) -> int:
        """The (16- or 32-bit) length value whose first register is ``base``."""
        if self.map.length_words == 1:
            return words.get(base, 0)
        first, second = words.get(base, 0), words.get(base + 1, 0)
        return first << 16 | second if self.map.word_order == "high-first" else second << 16 | first

    def _value_ok(self, role: str, value: int) -> bool:
        """Whether the machine accepts ``value`` for a quantity of this role (the profile's limits)."""
        m, spec, machine = self.map, self.marker.spec, self.profile.machine
        mm = value / m.length_scale
        if role == "force_pct":
            return 0 <= value <= 100
        if role == "speed_pct":
            return 1 <= value <= 100
        if role == "field_angle":
            assert m.field_block is not None
            return value / m.field_block.angle_scale < 360.0
        if role in ("char_height", "field_height"):
            return value == 0 or spec.char_height_min_mm - 1e-9 <= mm <= spec.char_height_max_mm + 1e-9
        if role == "dot_pitch":
            return value == 0 or machine.resolution_mm - 1e-9 <= mm <= spec.char_height_max_mm
        if role == "origin_x":
            return mm <= machine.work_area_x_mm
        if role == "origin_y":
            return mm <= machine.work_area_y_mm
        if role == "text":
            allowed = set(range(0x20, 0x7F)) | {0, ord(m.text_separator)}
            if m.text_encoding == "one-per-register":
                return value in allowed
            return value >> 8 in allowed and value & 0xFF in allowed
        if role == "command":
            return value in m.commands.values() or (m.start != "command" and value == 0)
        return True

    # --- requests --------------------------------------------------------------------------

    async def execute(self, request: Request) -> Answer:
        """Carry out one well-formed request (the wire server checked function and quantity)."""
        address = request.write_address if request.write_address is not None else request.address
        self.requests.append(
            RequestRecord(
                time.monotonic(), self.clock.now(), request.function_code, address,
                len(request.values) if request.write else request.count, request.write, request.values,
            )
        )  # fmt: skip
        n = len(self.requests)
        for fault in self.faults:
            if fault.trigger != "msg" or int(fault.at) != n:
                continue
            if fault.kind == "exception":
                return ExceptionCode(fault.arg_int(int(ExceptionCode.DEVICE_FAILURE)))
            if fault.kind == "noreply":
                return NO_REPLY  # lost: not acted on, never answered; the next request is served
            if fault.kind == "drop":
                self._drop(f"injected drop at request {n}")
                return NO_REPLY
        delay = self._latency()
        if delay > 0:
            await self.clock.sleep(delay)
        fc = request.function_code
        if fc in (1, 2, 3, 4):
            return self._read(request.table, request.address, request.count)
        if fc in (5, 15):
            return self._write_coils(request.address, request.values)
        if fc in (6, 16):
            return self._write_holding(request.address, request.values)
        if fc == 22:
            # Mask write (Application Protocol §6.16): (current AND and) OR (or AND NOT and).
            role = self.holding.get(request.address)
            current = self._register_value(role[0], request.address) if role else 0
            value = (current & request.and_mask) | (request.or_mask & ~request.and_mask & 0xFFFF)
            return self._write_holding(request.address, (value,))
        # 23: the write is performed before the read (Application Protocol §6.17).
        assert request.write_address is not None
        refused = self._write_holding(request.write_address, request.values)
        if refused is not None:
            return refused
        return self._read(Table.HOLDING, request.address, request.count)

    def _latency(self) -> float:
        delay = 0.0
        for fault in self.faults:
            if fault.kind == "slow" and fault.trigger == "t" and self.clock.now() >= fault.at:
                delay = max(delay, fault.arg_float(0.5))
        return delay

    def _read(self, table: Table, address: int, count: int) -> list[int] | ExceptionCode:
        span = range(address, address + count)
        if table in (Table.COILS, Table.DISCRETE_INPUTS):
            bits = self.coils if table is Table.COILS else self.inputs
            if any(a not in bits for a in span):
                return ExceptionCode.ILLEGAL_ADDRESS
            if table is Table.COILS:
                # Momentary coils read back off; with a coil-edge start the start coil holds its level.
                return [int(self._coil_levels.get(a, False)) for a in span]
            return [int(self._input(bits[a])) for a in span]
        roles = self.holding if table is Table.HOLDING else self.input_registers
        if any(a not in roles for a in span):
            return ExceptionCode.ILLEGAL_ADDRESS
        return [self._register_value(roles[a][0], a) for a in span]

    def _input(self, name: str) -> bool:
        mk = self.marker
        return {
            "ready": mk.ready,
            "busy": mk.busy,
            "done": mk.status is MarkerStatus.DONE,
            "fault": mk.status is MarkerStatus.FAULT,
        }.get(name, False)

    def _register_value(self, role: str, address: int) -> int:
        mk, m = self.marker, self.map
        if role == "status":
            if m.status_bits:
                levels = {
                    "busy": mk.busy,
                    "done": mk.status is MarkerStatus.DONE,
                    "fault": mk.status is MarkerStatus.FAULT,
                    "ready": mk.ready,
                }
                return sum(1 << bit for name, bit in m.status_bits.items() if levels[name])
            return m.states[mk.status.value]
        if role == "fault_code":
            return mk.fault_code
        if role == "progress_pct":
            return mk.progress_pct
        if role == "job_counter":
            return mk.job_counter
        if role == "command" and m.start == "command":
            return 0  # a command reads back 0 once taken (a refused one was never stored)
        return self._written.get(address, 0)

    def _write_holding(self, address: int, values: tuple[int, ...]) -> ExceptionCode | None:
        m = self.map
        span = range(address, address + len(values))
        roles = [self.holding.get(a) for a in span]
        if any(role is None or role[0] in _READ_ONLY for role in roles):
            return ExceptionCode.ILLEGAL_ADDRESS
        names = {role[0] for role in roles if role is not None}
        if self.marker.busy and names & _JOB_DATA:
            return ExceptionCode.DEVICE_BUSY
        tentative = dict(self._written)
        tentative.update(zip(span, values, strict=True))
        touched = {role for role in roles if role is not None}
        for name, base in touched:
            value = self._length(base, tentative) if name in _LENGTHS else tentative[base]
            if not self._value_ok(name, value):
                return ExceptionCode.ILLEGAL_VALUE
        held = self._written.get(m.command, 0)
        self._written = tentative
        if "command" not in names:
            return None
        value = tentative[m.command]
        if m.start != "command":
            # Handshake: a command acts on the change of the register's value; 0 releases it.
            if value == held or value == 0:
                return None
        else:
            self._written.pop(m.command, None)
        refused = self._command(value)
        if refused is not None and m.start != "command":
            self._written[m.command] = held  # a refused command was not taken
        return refused

    def _command(self, value: int) -> ExceptionCode | None:
        m, mk = self.map, self.marker
        name = {v: k for k, v in m.commands.items()}[value]
        if name == "load_pattern":
            if mk.busy:
                return ExceptionCode.DEVICE_BUSY
            mk.load_pattern(str(self._written.get(m.pattern, 0)))  # an unknown number faults the machine
        elif name == "start":
            return self._start()
        elif name == "abort":
            mk.abort()
        elif name == "reset_fault":
            mk.reset()
        return None

    def _write_coils(self, address: int, values: tuple[int, ...]) -> ExceptionCode | None:
        names = [self.coils.get(address + i) for i in range(len(values))]
        if any(name is None for name in names):
            return ExceptionCode.ILLEGAL_ADDRESS
        for i, (name, on) in enumerate(zip(names, values, strict=True)):
            if name == "start" and self.map.start == "coil-edge":
                rising = bool(on) and not self._coil_levels.get(address + i, False)
                if rising and self.marker.busy:
                    return ExceptionCode.DEVICE_BUSY
                self._coil_levels[address + i] = bool(on)
                if rising:
                    refused = self._start()
                    if refused is not None:
                        self._coil_levels[address + i] = False
                        return refused
            elif on and name == "abort":
                self.marker.abort()
            elif on and name == "start":
                refused = self._start()
                if refused is not None:
                    return refused
        return None

    def _text(self) -> list[str]:
        m = self.map
        chars: list[str] = []
        for i in range(m.text_registers):
            word = self._written.get(m.text_start + i, 0)
            if m.text_encoding == "one-per-register":
                pair: tuple[int, ...] = (word & 0xFF,)
            elif m.text_byte_order == "high-first":
                pair = (word >> 8, word & 0xFF)
            else:
                pair = (word & 0xFF, word >> 8)
            if 0 in pair:
                chars.extend(chr(b) for b in pair[: pair.index(0)])
                break
            chars.extend(chr(b) for b in pair)
        return "".join(chars).split(m.text_separator) if chars else []

    def _start(self) -> ExceptionCode | None:
        m, mk = self.map, self.marker
        if mk.busy:
            return ExceptionCode.DEVICE_BUSY
        reg, words = self._written.get, self._written
        mk.texts = {i: text for i, text in enumerate(self._text(), 1) if text}
        mk.char_height_mm = self._length(m.char_height, words) / m.length_scale or None
        pitch = self._length(m.dot_pitch, words) if m.dot_pitch is not None else 0
        mk.dot_pitch_mm = pitch / m.length_scale or None
        mk.force_pct = float(reg(m.force_pct, 0) or 75)
        mk.speed_pct = float(reg(m.speed_pct, 0) or 100)
        # Field origins the host wrote override the stored pattern's; unwritten ones keep it.
        mk.origins = {}
        lw = m.length_words
        for i in range(1, m.field_origins + 1):
            x_reg = m.field_origin_start + 2 * lw * (i - 1)
            if all(a in words for a in range(x_reg, x_reg + 2 * lw)):
                mk.origins[i] = (
                    self._length(x_reg, words) / m.length_scale,
                    self._length(x_reg + lw, words) / m.length_scale,
                )
        mk.field_heights, mk.field_angles = {}, {}
        block = m.field_block
        if block is not None:
            for i in range(1, block.count + 1):
                base = block.start + block.stride * (i - 1)
                if block.height is not None and self._length(base + block.height, words):
                    mk.field_heights[i] = self._length(base + block.height, words) / m.length_scale
                if block.angle is not None and base + block.angle in words:
                    mk.field_angles[i] = words[base + block.angle] / block.angle_scale
                if block.x is not None and block.y is not None:
                    x, y = base + block.x, base + block.y
                    if all(a in words for a in (*range(x, x + lw), *range(y, y + lw))):
                        mk.origins[i] = (
                            self._length(x, words) / m.length_scale,
                            self._length(y, words) / m.length_scale,
                        )
        refusal = mk.start_refusal()
        if refusal is not None:
            mk.start()  # lets the model fault where a controller would (text overflow)
            kind = refusal[0]
            if kind == "busy":
                return ExceptionCode.DEVICE_BUSY
            if kind in ("empty", "window"):
                return ExceptionCode.ILLEGAL_VALUE
            return ExceptionCode.DEVICE_FAILURE
        mk.start()
        return None

    # --- serving ---------------------------------------------------------------------------

    async def _begin(self) -> None:
        if not self._serving:
            self._serving = True
            await self.marker.start_background()

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve Modbus TCP; returns the bound port (``port=0`` picks a free one)."""
        await self._begin()
        return await self._wire.serve_tcp(host, port)

    async def serve_rtu_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve Modbus RTU framing over TCP (a serial-to-Ethernet gateway, §6.3); returns the port.

        A client reaches it as ``peen+modbus-rtu://socket://host:port`` (pyserial's socket URL).
        """
        await self._begin()
        return await self._wire.serve_tcp(host, port, rtu=True)

    async def serve_rtu_pty(self) -> str:
        """Serve Modbus RTU on a pseudo-terminal in raw mode; returns the path the host opens."""
        await self._begin()
        return self._wire.serve_rtu_pty()

    def _drop(self, reason: str) -> None:
        self._wire.drop_clients()

    async def stop(self) -> None:
        """Stop serving, stop the machine, release the pty."""
        await self._wire.stop()
        await self.marker.stop_background()
        self._serving = False
