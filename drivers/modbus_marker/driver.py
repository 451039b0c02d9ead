"""Driver for dot-peen pattern markers behind a Modbus register map, RTU or TCP (PROTOCOLS.md §5.6, §6).

No vendor publishes a dot-peen Modbus map (§5); the shipped ``peen-modbus`` profile is markctl's own
map (§5.6), and a vendor's map is a new profile with the same keys, no code: every register, coil,
discrete input, command value, status value and scaling used here comes from
:class:`~markctl.profiles.ModbusRegisterMap`.

A :class:`~markctl.layouts.program.PatternProgram` becomes: reset a pending fault; ``pattern`` =
the pattern number (digits are their own number, other names go through the profile's
``pattern_numbers``) and ``command`` = ``load_pattern``; the text block (two ASCII characters per
register in ``text_byte_order``, fields joined by ``text_separator``, NUL-padded); ``char_height``
and ``dot_pitch`` (mm x ``length_scale``), ``force_pct``, ``speed_pct``; each field's (x, y)
origin when the map has ``field_origins`` (markctl's extension of the §5.6 map: registers 60-75
for fields 1-8 by default) or each field's own block (``field_block``: height, angle, origin);
then Go as the map gives it (``start``: the command value, a handshake on the command register,
or a coil edge, both held until the machine shows busy, then released); then status / fault code
and, when the map has them, progress / job counter polled, never faster than the profile's
``poll_hz_max`` (the next poll leaves a whole period after the previous answer), until Done or
Fault. Map variants are data too: status in input registers or as a bit field, lengths over two
registers in either word order, one character per register. Without a progress register the
progress is estimated from the profile's rate and reported as such; without a job counter a Done
counts when busy was seen after Go or the status was not Done before it.

Safe state: ``command`` = ``abort`` (or the ``abort`` coil), confirmed by a status that is not Busy
and, when the map has one, a ``busy`` discrete input that is off. The abort is sent whenever a
cycle may be running: a start was sent and its end (Done with a new job count, or Fault) was not
seen, or the status says Busy. When no cycle of ours can be running, the profile's
``abort_when_idle`` (default false) decides: a real controller may log or alarm on an abort while
idle, so by default the idle state is only confirmed by reading it. The map has no pause.

Errors come from :mod:`markctl.drivers.transports.modbus` already named by register (Modbus
exception -> DeviceError, no answer -> MachineTimeoutError, lost link -> MachineConnectionError).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from markctl.drivers.base import DeviceInfo, Driver, DriverOptions, JobHandle, JobResult, Outcome, State
from markctl.drivers.pattern import PatternOptions, expected_marking_s, poll_delay
from markctl.drivers.transports.modbus import ModbusLink
from markctl.errors import DeviceError, MachineTimeoutError, ProtocolError, SafetyError
from markctl.layouts.program import PatternProgram, Program
from markctl.profiles import FirmwareProfile, ModbusProtocol, ModbusRegisterMap

__all__ = [
    "MarkerStatus",
    "ModbusMarkerDriver",
    "ModbusMarkerOptions",
    "pack_text",
    "unpack_text",
]


class ModbusMarkerOptions(PatternOptions):
    """Address options (``peen+modbus-tcp://host:502?unit=1&use_coils=true``)."""

    use_coils: bool = Field(
        default=False, description="Start and abort through the coils, not the command register."
    )
    speed_pct: int = Field(default=100, ge=1, le=100, description="Head speed written to speed_pct.")


@dataclass(frozen=True, slots=True)
class MarkerStatus:
    """One poll: the status register decoded by the profile's ``states`` table."""

    state: str  # idle | busy | done | fault
    raw: int
    fault_code: int
    progress_pct: int | None  # None: the map has no progress register
    job_counter: int | None  # None: the map has no job counter


def pack_text(text: str, registers: int, byte_order: str, encoding: str = "two-per-register") -> list[int]:
    """ASCII, two characters per register (or one), NUL-padded to ``registers``; ValueError if too long."""
    data = text.encode("ascii")
    per = 2 if encoding == "two-per-register" else 1
    if len(data) > registers * per:
        raise ValueError(f"{len(data)} characters do not fit in {registers} registers")
    if per == 1:
        return list(data.ljust(registers, b"\0"))
    data = data.ljust(registers * 2, b"\0")
    words = []
    for i in range(0, len(data), 2):
        a, b = data[i], data[i + 1]
        words.append(a << 8 | b if byte_order == "high-first" else b << 8 | a)
    return words


def unpack_text(words: list[int], byte_order: str) -> str:
    """Inverse of :func:`pack_text` (stops at the first NUL)."""
    out = bytearray()
    for w in words:
        pair = (w >> 8, w & 0xFF) if byte_order == "high-first" else (w & 0xFF, w >> 8)
        for byte in pair:
            if byte == 0:
                return out.decode("ascii", errors="replace")
            out.append(byte)
    return out.decode("ascii", errors="replace")


def _runs(items: dict[int, int]) -> list[tuple[int, list[int]]]:
    """Contiguous (start, values) runs of {address: value}, for multi-register writes."""
    runs: list[tuple[int, list[int]]] = []
    for address in sorted(items):
        if runs and runs[-1][0] + len(runs[-1][1]) == address:
            runs[-1][1].append(items[address])
        else:
            runs.append((address, [items[address]]))
    return runs


class ModbusMarkerDriver(Driver):
    """A pattern marker on a :class:`ModbusLink` (TCP, RTU, or the simulator's pymodbus server)."""

    family: ClassVar[str] = "peen"
    transports: ClassVar[frozenset[str]] = frozenset({"modbus-tcp", "modbus-rtu", "sim"})
    options_model: ClassVar[type[DriverOptions]] = ModbusMarkerOptions
    # abort + confirming polls, with one request lost at the profile's 1 s timeout and retries
    safe_state_timeout_s: ClassVar[float] = 8.0

    def __init__(
        self,
        transport: ModbusLink,
        profile: FirmwareProfile,
        options: DriverOptions | None = None,
        *,
        name: str = "",
    ) -> None:
        if not isinstance(profile.protocol, ModbusProtocol):
            raise ValueError(
                f"profile {profile.id} is not a Modbus marker profile (protocol {profile.family})"
            )
        super().__init__(transport, profile, options, name=name)
        self.link: ModbusLink = transport
        self.proto: ModbusProtocol = profile.protocol
        self.map: ModbusRegisterMap = profile.protocol.registers
        transport.use_profile_defaults(
            unit=self.proto.unit,
            timeout=self.proto.timeout_s,
            retries=self.proto.retries,
            baud=self.proto.baud,
            parity=self.proto.parity,
            stopbits=self.proto.stopbits,
        )
        opts = self.options if isinstance(self.options, ModbusMarkerOptions) else ModbusMarkerOptions()
        self.opts = opts
        self.poll_hz = min(opts.poll_hz or self.proto.poll_hz_max, self.proto.poll_hz_max)
        self._next_poll = 0.0
        self.last_status: MarkerStatus | None = None
        self._last_status_at = -1e9
        self.status_polls = 0
        self._poll_times: list[float] = []  # monotonic time each poll was sent (benchmarks)
        self._cycle_open = False  # a start was sent and the cycle's end not yet seen

    # --- register access -------------------------------------------------------------------

    def _what(self, name: str, address: int, table: str = "holding") -> str:
        return f"{name} ({table} {address})"

    def _words(self, value: int, n: int) -> list[int]:
        """A length value as ``n`` registers in the map's word order."""
        if n == 1:
            return [value & 0xFFFF]
        high, low = (value >> 16) & 0xFFFF, value & 0xFFFF
        return [high, low] if self.map.word_order == "high-first" else [low, high]

    async def _write(self, values: dict[str, int]) -> None:
        """Write named holding quantities, one request per contiguous run."""
        widths = self.map.widths()
        by_address: dict[int, int] = {}
        names: dict[int, str] = {}
        for name, value in values.items():
            address, n = widths[name]
            for k, word in enumerate(self._words(value, n)):
                by_address[address + k], names[address + k] = word, name
        for start, run in _runs(by_address):
            label = "+".join(dict.fromkeys(names[a] for a in range(start, start + len(run))))
            if len(run) == 1:
                await self.link.write_register(start, run[0], what=self._what(label, start))
            else:
                await self.link.write_registers(start, run, what=self._what(label, start))

    async def _last_resort(self) -> str:
        await self._command("abort")  # the register write is acknowledged, the stop is not confirmed
        return "abort command written; stop not confirmed"

    async def _command(self, name: str) -> None:
        if self.opts.use_coils and name in ("start", "abort") and name in self.map.coils:
            address = self.map.coils[name]
            await self.link.write_coil(address, True, what=self._what(f"{name} coil", address, "coil"))
            return
        await self._write({"command": self.map.commands[name]})
        if self.map.start != "command":
            await self._write({"command": 0})  # handshake: release, so the next command is an edge

    async def _start(self) -> None:
        """Go, as the map gives it: a command, or a handshake / coil edge held until the machine shows busy."""
        m = self.map
        if m.start == "command":
            await self._command("start")
            return
        if m.start == "coil-edge":
            address = m.coils["start"]
            what = self._what("start coil", address, "coil")
            await self.link.write_coil(address, True, what=what)
        else:
            await self._write({"command": m.commands["start"]})
        try:
            for _ in range(max(5, round(self.poll_hz * 5))):
                st = await self.read_status()
                if st.state != "idle":  # busy, or already done or faulted: the start was taken
                    return
            raise MachineTimeoutError(
                f"{self.name}: the machine did not show busy after the start {m.start}",
                address=self.name,
                code="start-handshake",
            )
        finally:
            if m.start == "coil-edge":
                await self.link.write_coil(m.coils["start"], False, what=what)
            else:
                await self._write({"command": 0})

    async def _pace(self) -> None:
        """Wait so that no two polls are closer than 1/poll_hz (measured from the previous answer)."""
        loop = asyncio.get_running_loop()
        wait = self._next_poll - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)

    def _decode_state(self, raw: int) -> str | None:
        bits = self.map.status_bits
        if not bits:
            return {v: k for k, v in self.map.states.items()}.get(raw)
        for name in ("fault", "busy", "done"):  # a fault outranks busy, busy outranks done
            if raw >> bits[name] & 1:
                return name
        return "idle"

    async def read_status(self) -> MarkerStatus:
        """One status poll (status, fault code and, when the map has them, progress and job counter)."""
        await self._pace()
        m = self.map
        addresses = {int(getattr(m, n)): n for n in m.status_names}
        table = m.status_table
        read = self.link.read_registers if table == "holding" else self.link.read_input_registers
        values: dict[str, int] = {}
        self._poll_times.append(time.monotonic())
        try:
            for start, run in _runs({a: 0 for a in addresses}):
                label = "+".join(addresses[a] for a in range(start, start + len(run)))
                words = await read(start, len(run), what=self._what(label, start, table))
                for offset, word in enumerate(words):
                    values[addresses[start + offset]] = word
        finally:
            self._next_poll = asyncio.get_running_loop().time() + 1.0 / self.poll_hz
        self.status_polls += 1
        self._last_status_at = asyncio.get_running_loop().time()
        state = self._decode_state(values["status"])
        if state is None:
            raise ProtocolError(
                f"{self.name}: status ({table} {m.status}) = {values['status']}, not one of the profile's "
                f"states {dict(m.states)}",
                raw=values["status"].to_bytes(2, "big"),
                address=self.name,
            )
        self.last_status = MarkerStatus(
            state,
            values["status"],
            values["fault_code"],
            values.get("progress_pct"),
            values.get("job_counter"),
        )
        return self.last_status

    async def read_inputs(self) -> dict[str, bool]:
        """The discrete inputs the map names (ready, busy, done, fault)."""
        result: dict[str, bool] = {}
        for name, address in sorted(self.map.discrete_inputs.items(), key=lambda kv: kv[1]):
            bits = await self.link.read_discrete_inputs(
                address, 1, what=self._what(name, address, "discrete input")
            )
            result[name] = bits[0]
        return result

    def _fresh_status(self) -> MarkerStatus | None:
        """The last status if it is under a second old and not busy or faulted (saves a poll period
        at the start of a job; a fault since then shows in the status read after loading)."""
        st = self.last_status
        age = asyncio.get_running_loop().time() - self._last_status_at
        return st if st is not None and age <= 1.0 and st.state in ("idle", "done") else None

    def fault_text(self, code: int) -> str:
        return self.proto.fault_codes.get(code, f"fault code {code} (not in the profile's table)")

    # --- Driver ----------------------------------------------------------------------------

    async def _handshake(self) -> DeviceInfo:
        st = await self.read_status()
        inputs = await self.read_inputs() if self.map.discrete_inputs else {}
        self.set_state(State.FAULT if st.state == "fault" else State.IDLE, raw=st.state)
        return DeviceInfo(
            family=self.family,
            dialect="modbus register map",
            version="unknown (the map has no version register)",
            details={
                "unit": self.link.unit,
                "status": st.state,
                "fault_code": st.fault_code,
                "job_counter": st.job_counter,
                "inputs": inputs,
            },
        )

    def pattern_number(self, name: str) -> int:
        """The number to write to ``pattern``: digits are their own number, else the profile's table."""
        table = self.proto.pattern_numbers
        number = int(name) if name.isdigit() else table.get(name, table.get("*"))
        if number is None:
            raise ValueError(
                f"{self.name}: pattern {name!r} has no number; add it to [protocol.pattern_numbers] "
                f"of profile {self.profile.id}"
            )
        if not 0 <= number <= 0xFFFF:
            raise ValueError(f"{self.name}: pattern number {number} does not fit a register")
        return number

    def _check_program(self, program: Program) -> None:
        m = self.map
        if not isinstance(program, PatternProgram):
            raise ValueError(
                f"{self.name}: a Modbus pattern marker runs pattern programs, not {program.kind} programs"
            )
        self.pattern_number(program.pattern)
        first = program.fields[0]
        limit = 0xFFFF if m.length_words == 1 else 0xFFFFFFFF
        placeable = m.placeable_fields
        if placeable and len(program.fields) > placeable:
            raise ValueError(f"{len(program.fields)} fields, the map has origins for {placeable}")
        block = m.field_block
        own_height = block is not None and block.height is not None
        if block is not None and len(program.fields) > block.count:
            raise ValueError(f"{len(program.fields)} fields, the map has registers for {block.count}")
        fonts = self.profile.dot_peen.fonts if self.profile.dot_peen else ()
        for i, f in enumerate(program.fields, 1):
            if fonts and f.font not in fonts:
                raise ValueError(f"field {i}: font {f.font!r} is not one of this machine's fonts {fonts}")
            if (f.height_mm if not own_height else first.height_mm, f.dot_pitch_mm, f.force_pct) != (
                first.height_mm,
                first.dot_pitch_mm,
                first.force_pct,
            ):
                raise ValueError(
                    f"field {i}: the map has one char_height/dot_pitch/force_pct for the whole job; "
                    "every field must share them"
                )
            if m.text_separator in f.text or not all(0x20 <= ord(c) <= 0x7E for c in f.text):
                raise ValueError(f"field {i}: {f.text!r} must be printable ASCII without the text separator")
            if own_height and not 0 <= round(f.height_mm * m.length_scale) <= limit:
                raise ValueError(f"field {i}: height {f.height_mm} mm does not fit a register")
            for value, axis in ((f.x_mm, "x"), (f.y_mm, "y")):
                if placeable and not 0 <= round(value * m.length_scale) <= limit:
                    raise ValueError(f"field {i}: {axis} = {value} mm does not fit an unsigned register")
        text = m.text_separator.join(f.text for f in program.fields)
        if len(text) > m.text_chars:
            raise ValueError(f"{len(text)} characters of text, the map holds {m.text_chars}")
        for name, value in (("char_height", first.height_mm), ("dot_pitch", first.dot_pitch_mm or 0.0)):
            if not 0 <= round(value * m.length_scale) <= limit:
                raise ValueError(f"{name} {value} mm does not fit a register at scale {m.length_scale:g}")

    async def _write_field_blocks(self, program: PatternProgram) -> None:
        """Each field's own registers (height, angle, origin), one request per contiguous run."""
        m, block = self.map, self.map.field_block
        assert block is not None
        for i, f in enumerate(program.fields, 1):
            base = block.start + block.stride * (i - 1)
            values = {
                "height": round(f.height_mm * m.length_scale),
                "angle": round((f.angle_deg % 360.0) * block.angle_scale),
                "x": round(f.x_mm * m.length_scale),
                "y": round(f.y_mm * m.length_scale),
            }
            words: dict[int, int] = {}
            for name, offsets in block.offsets(m.length_words).items():
                for k, word in enumerate(self._words(values[name], len(offsets))):
                    words[base + offsets.start + k] = word
            for start, run in _runs(words):
                await self.link.write_registers(start, run, what=self._what(f"field {i} block", start))

    def _expected_s(self, program: PatternProgram) -> float:
        return expected_marking_s(self.profile, program)

    async def _execute(self, program: Program, job: JobHandle) -> JobResult:
        assert isinstance(program, PatternProgram)
        total = program.char_count
        m = self.map
        job.report(0, total, "checking the marker")
        st = self._fresh_status() or await self.read_status()
        if st.state == "busy":
            raise DeviceError(
                f"{self.name}: the marker is already busy", device_code="busy", address=self.name
            )
        if st.state == "fault":
            await self._command("reset_fault")
            st = await self.read_status()
            if st.state == "fault":
                raise DeviceError(
                    f"{self.name}: fault {st.fault_code} persists after reset: {self.fault_text(st.fault_code)}",
                    device_code=f"fault:{st.fault_code}",
                    address=self.name,
                )
        number = self.pattern_number(program.pattern)
        await self._write({"pattern": number})
        await self._command("load_pattern")
        st = await self.read_status()
        if st.state == "fault":
            raise DeviceError(
                f"{self.name}: loading pattern {number}"
                f"{'' if str(number) == program.pattern else f' ({program.pattern})'} failed: "
                f"{self.fault_text(st.fault_code)}",
                device_code=f"fault:{st.fault_code}",
                address=self.name,
            )
        job.report(0, total, f"pattern {program.pattern} loaded")
        text = m.text_separator.join(f.text for f in program.fields)
        words = pack_text(text, m.text_registers, m.text_byte_order, m.text_encoding)
        await self.link.write_registers(
            m.text_start, words, what=self._what(f"text[{m.text_registers}]", m.text_start)
        )
        first = program.fields[0]
        force = round(first.force_pct) if first.force_pct is not None else 0  # 0 = the machine's default
        parameters = {
            "char_height": round(first.height_mm * m.length_scale),
            "force_pct": force,
            "speed_pct": self.opts.speed_pct,
        }
        if m.dot_pitch is not None:  # a map without one marks at the pattern's own pitch
            parameters["dot_pitch"] = round((first.dot_pitch_mm or 0.0) * m.length_scale)
        await self._write(parameters)
        if m.field_origins:
            origins = [
                word
                for f in program.fields
                for v in (f.x_mm, f.y_mm)
                for word in self._words(round(v * m.length_scale), m.length_words)
            ]
            await self.link.write_registers(
                m.field_origin_start,
                origins,
                what=self._what(f"field origins[{len(program.fields)}]", m.field_origin_start),
            )
        if m.field_block is not None:
            await self._write_field_blocks(program)
        job.report(0, total, f"{len(program.fields)} field(s) and parameters written")
        job.begin_cycle()  # Start sets the stylus going
        self._cycle_open = True  # from here until its end is seen, the safe state sends abort
        await self._start()
        self.set_state(State.RUN, raw="busy")
        return await self._watch_cycle(program, job, total, st)

    async def _watch_cycle(
        self, program: PatternProgram, job: JobHandle, total: int, before: MarkerStatus
    ) -> JobResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        expected = self._expected_s(program)
        limit = expected * self.opts.cycle_margin + 10.0
        seen_busy = False
        while True:
            st = await self.read_status()
            elapsed = loop.time() - started
            seen_busy = seen_busy or st.state == "busy"
            if st.progress_pct is not None:
                pct, how = st.progress_pct, "reported"
            else:  # no progress register: estimate from the profile's rate, and say so
                pct, how = (min(99, round(100 * elapsed / expected)) if expected else 0), "estimated"
            done = min(total, pct * total // 100)
            if st.state == "fault":
                self._cycle_open = False  # the controller stopped the cycle itself
                self.set_state(State.FAULT, raw=f"fault {st.fault_code}")
                return JobResult(
                    Outcome.FAULT,
                    f"{self.name}: marker fault during the cycle: {st.fault_code} {self.fault_text(st.fault_code)}; "
                    f"progress {pct} % {how} (~{done} of {total} characters)",
                    code=str(st.fault_code),
                    done=done,
                    total=total,
                )
            if st.job_counter is not None and before.job_counter is not None:
                ours = st.job_counter != before.job_counter  # a new job count: this cycle's Done
            else:  # no counter: a Done not left over from before the start
                ours = seen_busy or before.state != "done"
            if st.state == "done" and ours:
                self._cycle_open = False
                job.report(total, total, "done")
                self.set_state(State.IDLE, raw="done")
                return JobResult(Outcome.DONE, f"{total} characters marked", done=total, total=total)
            job.report(done, total, f"marking, {pct} % ({how})")
            wait = poll_delay(elapsed, pct / 100, expected, 1.0 / self.poll_hz, self.opts.slow_poll_s)
            self._next_poll = max(self._next_poll, loop.time() + wait)
            if elapsed > limit:
                raise MachineTimeoutError(
                    f"{self.name}: cycle not done after {elapsed:.1f} s (expected {expected:.1f} s); "
                    f"status {st.state}, progress {pct} % ({how})",
                    address=self.name,
                    code="cycle-timeout",
                )

    async def _not_busy(self, st: MarkerStatus) -> str | None:
        """How the machine shows it is not in a cycle (status, and the busy input if mapped), or None."""
        if st.state == "busy":
            return None
        confirm = f"status {st.state}"
        if "busy" in self.map.discrete_inputs:
            # A second, independent signal: the busy output as a discrete input.
            address = self.map.discrete_inputs["busy"]
            bits = await self.link.read_discrete_inputs(
                address, 1, what=self._what("busy", address, "discrete input")
            )
            if bits[0]:
                return None
            confirm += ", busy input off"
        return confirm

    async def _make_safe(self, reason: str) -> str:
        if not self.proto.abort_when_idle and not self._cycle_open:
            # No cycle of ours can be running (none was started, or its end was seen): confirm the
            # machine is idle without an abort, which a controller may log or alarm on.
            st = await self.read_status()
            confirm = await self._not_busy(st)
            if confirm is not None:
                self.set_state(State.FAULT if st.state == "fault" else State.IDLE, raw=st.state)
                return f"no abort needed: {confirm}"
        await self._command("abort")
        # The cycle's adaptive schedule may have set the next poll up to slow_poll_s away; confirming
        # the stop must wait only for the poll limit, counted from the last answer.
        self._next_poll = self._last_status_at + 1.0 / self.poll_hz
        how = "abort coil" if self.opts.use_coils and "abort" in self.map.coils else "command=abort"
        for _ in range(max(3, round(self.poll_hz * 3))):
            st = await self.read_status()
            confirm = await self._not_busy(st)
            if confirm is not None:
                self._cycle_open = False
                self.set_state(State.FAULT if st.state == "fault" else State.IDLE, raw=st.state)
                return f"{how} written; {confirm}"
        raise SafetyError(f"{self.name}: still busy after {how}", address=self.name)
