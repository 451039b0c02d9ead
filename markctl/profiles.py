"""Firmware profiles: one TOML file per machine/firmware, one pydantic schema, one loader.

The same profile configures the driver and the simulator (ARCHITECTURE.md "Profiles"), so a
technician adds a machine by writing a profile and testing it against the simulator.

File format (``firmware_profiles/<id>.toml``)::

    schema_version = 1
    id = "grblhal"
    extends = "grbl-1.1"        # optional; deep-merged *before* validation
    name = "..."
    [machine]  kind, work area, feeds, accelerations (units in the key names)
    [laser] or [dot_peen]       the process facts of the machine's kind
    [protocol] kind = "grbl" | "telesis" | "peen", then that protocol's keys
    [provenance]                 sources, and which details are verified or assumed

Profiles are found in the directories of ``MARKCTL_PROFILE_PATH`` (``os.pathsep``-separated)
and in the bundled ``markctl.firmware_profiles`` package. An id defined twice is refused rather
than silently shadowed. A broken file is refused with :class:`ProfileError` naming the file, the
key path and the reason.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from markctl.errors import ProfileError

__all__ = [
    "SCHEMA_VERSION",
    "DotPeenSpec",
    "FirmwareProfile",
    "GrblProtocol",
    "LaserSpec",
    "MachineKind",
    "MachineSpec",
    "ModbusFieldBlock",
    "ModbusProtocol",
    "ModbusRegisterMap",
    "ProfileInfo",
    "Provenance",
    "TelesisProtocol",
    "deep_merge",
    "json_schema",
    "list_profiles",
    "load_profile",
    "load_profile_file",
]

SCHEMA_VERSION = 1
PROFILE_ID = r"^[a-z0-9][a-z0-9.-]{0,63}$"
ENV_PROFILE_PATH = "MARKCTL_PROFILE_PATH"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MachineKind(StrEnum):
    """What the machine does to the metal."""

    LASER = "laser"
    DOT_PEEN = "dot-peen"


class Provenance(_Frozen):
    """Where the profile's facts come from, so nobody mistakes a guess for a vendor's spec."""

    sources: tuple[str, ...] = ()
    verified: tuple[str, ...] = Field(
        default=(), description="Details checked against firmware source, a manual or a real machine."
    )
    assumed: tuple[str, ...] = Field(default=(), description="Details no public source confirms.")


class MachineSpec(_Frozen):
    """Mechanical facts of the machine."""

    kind: MachineKind
    vendor: str = ""
    model: str = ""
    work_area_x_mm: float = Field(gt=0, le=5000)
    work_area_y_mm: float = Field(gt=0, le=5000)
    max_feed_mm_min: float = Field(gt=0, le=200_000)
    max_accel_mm_s2: float = Field(gt=0, le=100_000)
    resolution_mm: float = Field(default=0.01, gt=0, le=1)


class LaserSpec(_Frozen):
    """Laser source facts (kind = laser)."""

    source: Literal["diode", "fiber", "co2"]
    power_w: float = Field(gt=0, le=1000)
    wavelength_nm: float = Field(gt=0)
    spot_mm: float = Field(gt=0, le=2)
    pulse_khz_min: float | None = Field(default=None, gt=0)
    pulse_khz_max: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _pulse_range(self) -> LaserSpec:
        if (self.pulse_khz_min is None) != (self.pulse_khz_max is None):
            raise ValueError("pulse_khz_min and pulse_khz_max go together")
        if self.pulse_khz_min is not None and self.pulse_khz_max is not None:
            if self.pulse_khz_min > self.pulse_khz_max:
                raise ValueError("pulse_khz_min exceeds pulse_khz_max")
        return self


class DotPeenSpec(_Frozen):
    """Dot-peen stylus facts (kind = dot-peen)."""

    force_min_n: float = Field(gt=0)
    force_max_n: float = Field(gt=0)
    dot_rate_hz: float = Field(gt=0, le=2000, description="Stylus strikes per second.")
    chars_per_s: float = Field(gt=0, le=100, description="Typical rate for 3 mm 5x7 text.")
    stylus_cone_deg: float = Field(default=90, gt=0, lt=180, description="Included angle of the tip.")
    char_height_min_mm: float = Field(default=1.0, gt=0)
    char_height_max_mm: float = Field(default=25.0, gt=0)
    fonts: tuple[str, ...] = ("5x7", "7x9")
    pattern_origins: tuple[tuple[float, float], ...] = Field(
        default=(),
        description=(
            "Where the pattern stored on the controller puts field 1, 2, ... (mm, machine frame), for "
            "machines that cannot place fields themselves: the layout is composed there. Each "
            "field's origin is its first character's lower-left dot; the field runs along +X."
        ),
    )
    pattern_char_height_mm: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Character height the stored pattern strikes, for machines the host cannot send a "
            "height to (Telesis-style): the layout is composed at it."
        ),
    )
    pattern_font: str | None = Field(
        default=None,
        description=(
            "Font the stored pattern strikes, for machines the host cannot send a font to "
            "(Telesis-style): the layout is composed in it. One of ``fonts``."
        ),
    )
    pattern_force_pct: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description=(
            "Stylus force (% of the range) the stored pattern strikes with, for machines the host "
            "cannot send a force to (Telesis-style): the layout's depth is planned at it."
        ),
    )

    depth_ref_mm: float = Field(
        default=0.45,
        gt=0,
        le=2,
        description=(
            "Depth the maker states for a force setting in a reference material (the TMP4500E data "
            "sheet: 0.45 mm in mild steel). With depth_ref_force_pct and depth_ref_hardness_hv it "
            "calibrates the one depth model the layout check and the simulator share."
        ),
    )
    depth_ref_force_pct: float = Field(
        default=75.0, gt=0, le=100, description="Force setting (% of the range) of depth_ref_mm."
    )
    depth_ref_hardness_hv: float = Field(
        default=157.5,
        gt=0,
        description="Vickers hardness of depth_ref_mm's material (mild steel: 150 HB, about 157.5 HV).",
    )

    def force_n(self, force_pct: float) -> float:
        """Stylus force at a setting (% of the range from force_min_n to force_max_n)."""
        return self.force_min_n + (self.force_max_n - self.force_min_n) * force_pct / 100.0

    def depth_mm(self, force_pct: float, hardness_hv: float) -> float:
        """Dent depth at a force setting in a material of Vickers hardness ``hardness_hv``.

        A cone pressed into a material stops where its contact area carries the load, so depth
        grows as sqrt(force / hardness); the impact of a real stylus makes the constant the
        maker's figure (``depth_ref_*``), not the static formula, which is several times too
        shallow. The layout's depth and wall checks and the simulator's dents both use this.
        """
        ratio = (self.force_n(force_pct) / self.force_n(self.depth_ref_force_pct)) * (
            self.depth_ref_hardness_hv / hardness_hv
        )
        return self.depth_ref_mm * math.sqrt(max(0.0, ratio))

    def force_pct_for(self, depth_mm: float, hardness_hv: float) -> float:
        """The force setting that reaches ``depth_mm`` (the inverse of :meth:`depth_mm`), unclipped."""
        scale = (depth_mm / self.depth_ref_mm) ** 2 * hardness_hv / self.depth_ref_hardness_hv
        force_n = self.force_n(self.depth_ref_force_pct) * scale
        span = self.force_max_n - self.force_min_n
        if span <= 0:  # a stylus with one force: that is its setting
            return 0.0
        return 100.0 * (force_n - self.force_min_n) / span

    @model_validator(mode="after")
    def _ranges(self) -> DotPeenSpec:
        if self.force_min_n > self.force_max_n:
            raise ValueError("force_min_n exceeds force_max_n")
        if self.char_height_min_mm > self.char_height_max_mm:
            raise ValueError("char_height_min_mm exceeds char_height_max_mm")
        if self.pattern_font is not None and self.pattern_font not in self.fonts:
            raise ValueError(f"pattern_font {self.pattern_font!r} is not one of fonts")
        h = self.pattern_char_height_mm
        if h is not None and not self.char_height_min_mm <= h <= self.char_height_max_mm:
            raise ValueError("pattern_char_height_mm lies outside char_height_min_mm..char_height_max_mm")
        return self


def _check_codes(value: Mapping[int, str]) -> Mapping[int, str]:
    for code, text in value.items():
        if code < 0 or not text.strip():
            raise ValueError(f"code {code}: needs a non-negative number and a text")
    return value


class GrblProtocol(_Frozen):
    """GRBL-family line protocol (PROTOCOLS.md §1, §2)."""

    kind: Literal["grbl"]
    dialect: Literal["grbl", "grblhal", "fluidnc"]
    version: str
    banner: str = Field(description="The welcome line, without CR LF, as the firmware prints it.")
    banner_regex: str = Field(description="Matches this dialect's banner and no other dialect's.")
    baud: int = Field(default=115200, gt=0)
    rx_buffer_bytes: int = Field(gt=0, le=65536)
    planner_blocks: int = Field(gt=0, le=1024)
    line_buffer_chars: int = Field(gt=0, le=4096)
    opt_reports_buffers: bool = Field(description="Whether $I's [OPT:] carries planner and RX sizes.")
    status_poll_hz_max: float = Field(default=5.0, gt=0, le=50)
    settings: dict[int, float] = Field(description="Default $n settings, e.g. 30 = 1000 (S max).")
    errors: dict[int, str]
    alarms: dict[int, str]

    _codes = field_validator("errors", "alarms")(_check_codes)

    @field_validator("banner_regex")
    @classmethod
    def _regex_compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _banner_matches(self) -> GrblProtocol:
        if not re.search(self.banner_regex, self.banner):
            raise ValueError(f"banner {self.banner!r} does not match banner_regex {self.banner_regex!r}")
        for key in (30, 31, 32):
            if key not in self.settings:
                raise ValueError(f"settings must give ${key} (laser S range and laser mode)")
        return self


class TelesisProtocol(_Frozen):
    """Telesis-style framed serial protocol: SOH TYPE [nn] STX data ETX BCC CR (PROTOCOLS.md §5.1)."""

    kind: Literal["telesis"]
    baud: int = Field(default=9600, gt=0)
    bcc: Literal["xor", "sum"] = Field(description="Block check: XOR of bytes, or their sum modulo 256.")
    bcc_encoding: Literal["binary", "hex"] = Field(description="One raw byte, or two uppercase hex digits.")
    bcc_span: Literal["type-to-etx", "soh-to-etx", "stx-to-etx"]
    reply_timeout_s: float = Field(default=3.0, gt=0, le=60)
    retries: int = Field(default=3, ge=1, le=10)
    status_poll_hz_max: float = Field(default=4.0, gt=0, le=50)
    text_fields: int = Field(default=8, ge=1, le=99)
    field_chars_max: int = Field(default=64, ge=1, le=255)
    fault_codes: dict[int, str]
    # Framing details no public source confirms (PROTOCOLS.md §5.1 "Not confirmed"): settings with
    # documented defaults, never constants in code. ACK/NAK values are InfoSight's (§5.2).
    ack: int = Field(
        default=0x06, ge=0, le=255, description="Positive acknowledgement byte (InfoSight: 0x06)."
    )
    nak: int = Field(
        default=0x15, ge=0, le=255, description="Negative acknowledgement byte (InfoSight: 0x15)."
    )
    reply_framing: Literal["ack-nak", "echo"] = Field(
        default="ack-nak",
        description="ASSUMED. How the marker accepts a command: one ACK byte, or an echo of the whole frame.",
    )
    set_field_type: Literal["V", "1"] = Field(
        default="V", description="Message type that fills text field nn: V (variable text) or 1 (overwrite)."
    )
    status_format: Literal["io", "io-fault", "io-fault-count"] = Field(
        default="io-fault-count",
        description=(
            "ASSUMED. Data of the I/O status reply: 'O2O1;I2I1' (io), plus ';FF' hex fault code (io-fault), "
            "plus ';CCCC' hex characters marked in the current cycle (io-fault-count)."
        ),
    )
    output_bits: dict[str, int] = Field(
        default_factory=lambda: {"done": 0, "ready": 1, "pause": 2, "busy": 3, "fault": 4},
        description="ASSUMED. Bit number of each output in the status reply's O2O1 byte.",
    )

    abort_when_idle: bool = Field(
        default=False,
        description=(
            "Send O (reset/online) at the end of a job and on close even when the machine is seen "
            "idle. Off by default: a controller may log it, and it clears a fault the operator has "
            "not seen. O is always sent while a cycle may be running, whatever this says."
        ),
    )

    _codes = field_validator("fault_codes")(_check_codes)

    @field_validator("output_bits")
    @classmethod
    def _bits(cls, value: dict[str, int]) -> dict[str, int]:
        missing = {"done", "ready", "busy", "fault"} - value.keys()
        if missing:
            raise ValueError(f"output_bits lacks {sorted(missing)}")
        unknown = value.keys() - {"done", "ready", "pause", "busy", "fault"}
        if unknown:
            raise ValueError(
                f"output_bits: unknown outputs {sorted(unknown)} (done, ready, pause, busy, fault)"
            )
        if any(not 0 <= bit <= 7 for bit in value.values()) or len(set(value.values())) != len(value):
            raise ValueError("output bits must be distinct numbers 0-7")
        return value

    @model_validator(mode="after")
    def _distinct_controls(self) -> TelesisProtocol:
        framing = {0x01, 0x02, 0x03, 0x0D}
        if self.ack == self.nak or {self.ack, self.nak} & framing:
            raise ValueError("ack and nak must differ from each other and from SOH, STX, ETX and CR")
        return self


class ModbusFieldBlock(_Frozen):
    """Per-field registers: block i (field i) starts at ``start + stride x (i - 1)``.

    Offsets within a block; a length (height, x, y) takes ``length_words`` registers. A height of
    0 leaves the job's ``char_height``; unwritten x/y leave the stored pattern's position.
    """

    count: int = Field(ge=1, le=32, description="Fields that have a block.")
    start: int = Field(ge=0, le=65535)
    stride: int = Field(ge=1, le=1000)
    height: int | None = Field(
        default=None, ge=0, description="Offset of the character height (mm x length_scale)."
    )
    angle: int | None = Field(
        default=None, ge=0, description="Offset of the angle (degrees x angle_scale, 0-359)."
    )
    x: int | None = Field(
        default=None, ge=0, description="Offset of the field origin's x (mm x length_scale)."
    )
    y: int | None = Field(
        default=None, ge=0, description="Offset of the field origin's y (mm x length_scale)."
    )
    angle_scale: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _some(self) -> ModbusFieldBlock:
        if (self.x is None) != (self.y is None):
            raise ValueError("field_block: x and y go together")
        if self.height is None and self.angle is None and self.x is None:
            raise ValueError("field_block names no register (height, angle, x/y)")
        return self

    def offsets(self, length_words: int) -> dict[str, range]:
        """Register offsets of each quantity within a block."""
        out: dict[str, range] = {}
        for name, width in (("height", length_words), ("angle", 1), ("x", length_words), ("y", length_words)):
            offset = getattr(self, name)
            if offset is not None:
                out[name] = range(offset, offset + width)
        return out


class ModbusRegisterMap(_Frozen):
    """Registers, coils and discrete inputs of a pattern marker (0-based addresses).

    Vendor maps differ in more than addresses, so these are data too: where the status lives
    (holding or input registers) and whether it is one value per state or a bit field; whether
    the map has progress, job-counter and dot-pitch registers at all; how Go is given (a command
    value, a handshake on the command register, or an edge on a coil); how lengths are carried
    (one register, or 32 bits over two in either word order); how text is packed (two characters
    per register, or one).
    """

    command: int = Field(ge=0, le=65535)
    pattern: int = Field(ge=0, le=65535)
    status: int = Field(ge=0, le=65535)
    fault_code: int = Field(ge=0, le=65535)
    progress_pct: int | None = Field(default=None, ge=0, le=65535, description="None: the map has none.")
    job_counter: int | None = Field(default=None, ge=0, le=65535, description="None: the map has none.")
    text_start: int = Field(ge=0, le=65535)
    text_registers: int = Field(ge=1, le=123, description="Registers of the text block.")
    char_height: int = Field(ge=0, le=65535)
    dot_pitch: int | None = Field(default=None, ge=0, le=65535, description="None: the map has none.")
    force_pct: int = Field(ge=0, le=65535)
    speed_pct: int = Field(ge=0, le=65535)
    length_scale: float = Field(default=100.0, gt=0, description="Register value = mm x length_scale.")
    length_words: Literal[1, 2] = Field(
        default=1, description="Registers per length (char_height, dot_pitch, origins): 2 = 32 bits."
    )
    word_order: Literal["high-first", "low-first"] = Field(
        default="high-first", description="Which word of a 32-bit length comes at the lower address."
    )
    status_table: Literal["holding", "input"] = Field(
        default="holding",
        description="Where status, fault_code, progress_pct and job_counter live (FC3 or FC4).",
    )
    status_bits: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "If set, the status register is a bit field: bit numbers of busy, done, fault (and "
            "optionally ready); states is then not used."
        ),
    )
    start: Literal["command", "handshake", "coil-edge"] = Field(
        default="command",
        description=(
            "command: write commands.start (the register reads 0 once taken); handshake: write "
            "commands.start, wait until the machine shows busy, write 0; coil-edge: coil start on, "
            "wait for busy, coil off (the machine starts on the rising edge)."
        ),
    )
    commands: dict[str, int] = Field(
        description="Command register values: start, abort, reset_fault, load_pattern."
    )
    states: dict[str, int] = Field(
        default_factory=dict, description="Status register values: idle, busy, done, fault."
    )
    coils: dict[str, int] = Field(default_factory=dict, description="start, abort.")
    discrete_inputs: dict[str, int] = Field(default_factory=dict, description="ready, busy, done, fault.")
    text_encoding: Literal["two-per-register", "one-per-register"] = "two-per-register"
    text_byte_order: Literal["high-first", "low-first"] = "high-first"
    text_separator: str = Field(
        default="\r",
        min_length=1,
        max_length=1,
        description="Separates the pattern's text fields inside the text block (the map has one block).",
    )
    field_origin_start: int = Field(
        default=60, ge=0, le=65535, description="First of the (x, y) register pairs of field 1, 2, ..."
    )
    field_origins: int = Field(
        default=8,
        ge=0,
        le=32,
        description=(
            "How many fields have an (x, y) origin (mm x length_scale, length_words each) from "
            "field_origin_start; 0 = the map has none and the stored pattern places every field."
        ),
    )
    field_block: ModbusFieldBlock | None = Field(
        default=None, description="Per-field registers (height, angle, origin per field)."
    )

    @property
    def placeable_fields(self) -> int:
        """How many fields the host can place (0: the stored pattern places them all)."""
        if self.field_block is not None and self.field_block.x is not None:
            return self.field_block.count
        return self.field_origins

    @property
    def text_chars(self) -> int:
        """Characters the text block holds."""
        return self.text_registers * (2 if self.text_encoding == "two-per-register" else 1)

    @property
    def status_names(self) -> tuple[str, ...]:
        """The status-table registers this map has, in address order."""
        names = ("status", "fault_code", "progress_pct", "job_counter")
        present = [n for n in names if getattr(self, n) is not None]
        return tuple(sorted(present, key=lambda n: int(getattr(self, n))))

    def widths(self) -> dict[str, tuple[int, int]]:
        """Holding-register quantities the host writes: name -> (address, registers)."""
        lw = self.length_words
        out = {
            "command": (self.command, 1),
            "pattern": (self.pattern, 1),
            "char_height": (self.char_height, lw),
            "force_pct": (self.force_pct, 1),
            "speed_pct": (self.speed_pct, 1),
        }
        if self.dot_pitch is not None:
            out["dot_pitch"] = (self.dot_pitch, lw)
        return out

    @model_validator(mode="after")
    def _complete(self) -> ModbusRegisterMap:
        needed_states = {"idle", "busy", "done", "fault"}
        if self.status_bits:
            missing = {"busy", "done", "fault"} - self.status_bits.keys()
            unknown = self.status_bits.keys() - {"busy", "done", "fault", "ready"}
            if missing or unknown:
                raise ValueError(
                    f"status_bits needs busy, done, fault (and may give ready); got {sorted(self.status_bits)}"
                )
            bits = list(self.status_bits.values())
            if any(not 0 <= b <= 15 for b in bits) or len(set(bits)) != len(bits):
                raise ValueError("status bits must be distinct numbers 0-15")
        elif needed_states - self.states.keys():
            raise ValueError(
                f"states lacks {sorted(needed_states - self.states.keys())} (or give status_bits)"
            )
        missing = {"start", "abort", "reset_fault", "load_pattern"} - self.commands.keys()
        if missing:
            raise ValueError(f"commands lacks {sorted(missing)}")
        if self.start != "command" and 0 in self.commands.values():
            raise ValueError(
                "with a handshake or coil-edge start, 0 releases the command: no command may be 0"
            )
        if self.start == "coil-edge" and "start" not in self.coils:
            raise ValueError("start = 'coil-edge' needs coils.start")
        spans: dict[str, range] = {
            name: range(address, address + n) for name, (address, n) in self.widths().items()
        }
        if self.status_table == "holding":
            spans.update({n: range(getattr(self, n), getattr(self, n) + 1) for n in self.status_names})
        else:
            inputs = [getattr(self, n) for n in self.status_names]
            if len(set(inputs)) != len(inputs):
                raise ValueError("two status registers share an input register")
        spans["text block"] = range(self.text_start, self.text_start + self.text_registers)
        if self.field_origins:
            size = 2 * self.length_words * self.field_origins
            spans["field origin block"] = range(self.field_origin_start, self.field_origin_start + size)
            if spans["field origin block"][-1] > 65535:
                raise ValueError("the field origin block runs past register 65535")
        block = self.field_block
        if block is not None:
            if block.x is not None and self.field_origins:
                raise ValueError(
                    "field origins come from field_block or field_origins, not both (set field_origins = 0)"
                )
            offsets = block.offsets(self.length_words)
            used = sorted(o for r in offsets.values() for o in r)
            if len(set(used)) != len(used) or used[-1] >= block.stride:
                raise ValueError("field_block: its registers overlap or do not fit in the stride")
            for i in range(block.count):
                for name, r in offsets.items():
                    base = block.start + block.stride * i
                    spans[f"field {i + 1} {name}"] = range(base + r.start, base + r.stop)
        seen: dict[int, str] = {}
        for name, span in spans.items():
            for address in span:
                if address in seen:
                    raise ValueError(f"register {address} is both {seen[address]} and {name}")
                seen[address] = name
        return self


class ModbusProtocol(_Frozen):
    """A pattern marker driven through a Modbus register map (PROTOCOLS.md §5.6, §6)."""

    kind: Literal["peen"]
    unit: int = Field(default=1, ge=1, le=247)
    baud: int = Field(default=19200, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: float = Field(default=1.0, gt=0, le=30)
    retries: int = Field(default=3, ge=0, le=10)
    poll_hz_max: float = Field(default=10.0, gt=0, le=100, description="Never poll faster than this.")
    registers: ModbusRegisterMap
    abort_when_idle: bool = Field(
        default=False,
        description=(
            "Send abort at the end of a job and on close even when the machine is seen idle. Off by "
            "default: a controller may log or alarm on an abort while idle. An abort is always sent "
            "while a cycle may be running, whatever this says."
        ),
    )
    pattern_numbers: dict[str, int] = Field(
        default_factory=lambda: {"*": 1},
        description=(
            "Pattern number to load for a program's pattern name (a name made of digits is its own "
            "number); '*' serves any other name. markctl's generic map loads pattern 1."
        ),
    )
    fault_codes: dict[int, str]

    _codes = field_validator("fault_codes")(_check_codes)


Protocol = Annotated[GrblProtocol | TelesisProtocol | ModbusProtocol, Field(discriminator="kind")]


class FirmwareProfile(_Frozen):
    """One machine/firmware description; see the module docstring for the file layout."""

    schema_version: Literal[1]
    id: str = Field(pattern=PROFILE_ID)
    extends: str | None = Field(default=None, description="Id of the profile this one was merged onto.")
    name: str = Field(min_length=1)
    description: str = ""
    machine: MachineSpec
    laser: LaserSpec | None = None
    dot_peen: DotPeenSpec | None = None
    protocol: Protocol
    provenance: Provenance = Provenance()

    @model_validator(mode="after")
    def _process_matches_kind(self) -> FirmwareProfile:
        if self.machine.kind is MachineKind.LASER and (self.laser is None or self.dot_peen is not None):
            raise ValueError("a laser machine needs a [laser] table and no [dot_peen] table")
        if self.machine.kind is MachineKind.DOT_PEEN and (self.dot_peen is None or self.laser is not None):
            raise ValueError("a dot-peen machine needs a [dot_peen] table and no [laser] table")
        return self

    @property
    def family(self) -> str:
        """The driver family, equal to the protocol part of a machine address."""
        return self.protocol.kind

    @property
    def places_fields(self) -> bool:
        """Whether the host can put text fields where it wants. False for a Telesis-style marker
        (no position message, PROTOCOLS.md §5.1) and a Modbus map without origin registers: the
        pattern stored on the controller decides, and ``[dot_peen] pattern_origins`` says where."""
        if isinstance(self.protocol, TelesisProtocol):
            return False
        if isinstance(self.protocol, ModbusProtocol):
            return self.protocol.registers.placeable_fields > 0
        return True

    @property
    def sends_parameters(self) -> bool:
        """Whether the host can send character height and force. A Telesis-style marker takes only
        text: its stored pattern's ``[dot_peen] pattern_char_height_mm`` and ``pattern_force_pct``
        are what it strikes."""
        return not isinstance(self.protocol, TelesisProtocol)


# Bits on the wire per status poll, for the poll-rate budget (at 10 bits per byte: start, 8, stop).
# GRBL: '?' and a report of up to ~100 bytes (<Run|MPos:...|FS:...|WCO:...>, grbl wiki "Interface").
# Modbus RTU: read 4 holding registers = an 8-byte request and a 13-byte answer, 11 bits per byte
# (with parity or a second stop bit) and 3.5 character times of silence after each frame
# (Modbus over serial line V1.02 §2.5.1.1). Telesis: an 'I' exchange of about 20 bytes.
_POLL_BITS = {"grbl": 101 * 10, "peen": (8 + 13 + 7) * 11, "telesis": 20 * 10}
_POLL_LINE_SHARE = 0.5  # polling may use at most half the line: the rest carries the job


def physical_problems(profile: FirmwareProfile) -> list[str]:
    """Numbers that contradict their neighbours, each naming both keys.

    A profile copied from another machine is the usual mistake: a work area larger than the axes
    travel, a max feed the firmware caps lower, a power scale ($30) that cannot express full power,
    a status poll rate the serial line cannot carry beside the job.
    """
    problems: list[str] = []
    spec = profile.machine
    proto = profile.protocol
    if isinstance(proto, GrblProtocol):
        st = proto.settings
        for axis, travel_key, rate_key, accel_key, steps_key, area in (
            ("x", 130, 110, 120, 100, spec.work_area_x_mm),
            ("y", 131, 111, 121, 101, spec.work_area_y_mm),
        ):
            travel = st.get(travel_key)
            if travel is not None and area > travel + 1e-9:
                problems.append(f"machine.work_area_{axis}_mm = {area:g} is larger than the {axis.upper()} "
                                f"travel protocol.settings.{travel_key} = {travel:g} mm")  # fmt: skip
            rate = st.get(rate_key)
            if rate is not None and spec.max_feed_mm_min > rate + 1e-9:
                problems.append(f"machine.max_feed_mm_min = {spec.max_feed_mm_min:g} exceeds the {axis.upper()} "
                                f"max rate protocol.settings.{rate_key} = {rate:g} mm/min")  # fmt: skip
            accel = st.get(accel_key)
            if accel is not None and spec.max_accel_mm_s2 > accel + 1e-9:
                problems.append(f"machine.max_accel_mm_s2 = {spec.max_accel_mm_s2:g} exceeds the {axis.upper()} "
                                f"acceleration protocol.settings.{accel_key} = {accel:g} mm/s^2")  # fmt: skip
            steps = st.get(steps_key)
            if steps is not None and (steps <= 0 or spec.resolution_mm < 1 / steps - 1e-9):
                problems.append(f"machine.resolution_mm = {spec.resolution_mm:g} is finer than one step: "
                                f"protocol.settings.{steps_key} = {steps:g} steps/mm")  # fmt: skip
        if spec.kind is MachineKind.LASER:
            s_max, s_min = st.get(30), st.get(31, 0.0)
            if s_max is None or s_max <= 0:
                problems.append("protocol.settings.30 (S for full power) must be set above 0 on a laser: "
                                "every power value is scaled by it")  # fmt: skip
            elif s_min >= s_max:
                problems.append(f"protocol.settings.31 = {s_min:g} (minimum power) is not below "
                                f"protocol.settings.30 = {s_max:g} (full power)")  # fmt: skip
            if st.get(32, 1) != 1:
                problems.append("protocol.settings.32 (laser mode) must be 1 on a laser: otherwise the beam "
                                "stays on through rapid moves")  # fmt: skip
        poll, baud = proto.status_poll_hz_max, proto.baud
    elif isinstance(proto, ModbusProtocol):
        poll, baud = proto.poll_hz_max, proto.baud
    else:
        poll, baud = proto.status_poll_hz_max, proto.baud
    limit = _POLL_LINE_SHARE * baud / _POLL_BITS[proto.kind]
    if poll > limit:
        key = "poll_hz_max" if isinstance(proto, ModbusProtocol) else "status_poll_hz_max"
        problems.append(f"protocol.{key} = {poll:g} Hz needs more than half of protocol.baud = {baud} "
                        f"(at most {limit:.1f} Hz)")  # fmt: skip
    return problems


# --- loading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """Where a profile lives, for listings."""

    id: str
    origin: str  # "bundled" or the user directory


def _bundled() -> Traversable:
    return resources.files("markctl.firmware_profiles")


def _search_dirs() -> list[tuple[str, Traversable]]:
    dirs: list[tuple[str, Traversable]] = []
    for entry in os.environ.get(ENV_PROFILE_PATH, "").split(os.pathsep):
        if entry:
            dirs.append((entry, Path(entry)))
    dirs.append(("bundled", _bundled()))
    return dirs


def _profile_files() -> dict[str, tuple[str, Traversable]]:
    found: dict[str, tuple[str, Traversable]] = {}
    for origin, directory in _search_dirs():
        if not directory.is_dir():
            continue
        for item in directory.iterdir():
            if not item.name.endswith(".toml"):
                continue
            pid = item.name.removesuffix(".toml")
            if pid in found:
                raise ProfileError(
                    f"profile id {pid!r} is defined twice (also in {found[pid][0]})",
                    path=_display(origin, item),
                    hint="rename one of them; markctl does not let one profile silently shadow another",
                )
            found[pid] = (origin, item)
    return found


def _display(origin: str, item: Traversable) -> str:
    return f"firmware_profiles/{item.name}" if origin == "bundled" else str(item)


def list_profiles() -> list[ProfileInfo]:
    """Every profile id on the search path, sorted."""
    return [ProfileInfo(pid, origin) for pid, (origin, _) in sorted(_profile_files().items())]


def _read_toml(path: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"not valid TOML: {exc}", path=path) from exc


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; every other value (lists included) is replaced whole."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve(
    raw: dict[str, Any], path: str, files: Mapping[str, tuple[str, Traversable]], chain: tuple[str, ...]
) -> dict[str, Any]:
    parent = raw.get("extends")
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ProfileError("must be a profile id", path=path, loc="extends")
    if parent in chain:
        raise ProfileError(f"cycle: {' -> '.join((*chain, parent))}", path=path, loc="extends")
    if parent not in files:
        raise ProfileError(f"unknown profile {parent!r}", path=path, loc="extends", hint=_known(files))
    origin, item = files[parent]
    parent_path = _display(origin, item)
    parent_raw = _resolve(
        _read_toml(parent_path, item.read_text("utf-8")), parent_path, files, (*chain, parent)
    )
    if parent_raw.get("schema_version") != raw.get("schema_version"):
        raise ProfileError(
            f"schema_version {raw.get('schema_version')!r} differs from {parent!r}'s",
            path=path,
            loc="schema_version",
        )
    child = {k: v for k, v in raw.items() if k != "extends"}
    merged = deep_merge({k: v for k, v in parent_raw.items() if k not in ("extends", "provenance")}, child)
    merged["extends"] = parent
    return merged


def _known(files: Mapping[str, object]) -> str:
    return "known: " + ", ".join(sorted(files))


def _validate(data: dict[str, Any], path: str) -> FirmwareProfile:
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ProfileError(
            f"schema_version {version!r} is not supported (this markctl reads {SCHEMA_VERSION})",
            path=path,
            loc="schema_version",
        )
    try:
        profile = FirmwareProfile.model_validate(data)
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in err["loc"]), err["msg"].removeprefix("Value error, "))
                    for err in exc.errors()]  # fmt: skip
        loc, first = problems[0]
        rest = "".join(f"; {other_loc}: {msg}" for other_loc, msg in problems[1:])
        raise ProfileError(first + rest, path=path, loc=loc) from None
    # Checked on files (what a person writes), not on profiles that code derives for its own use.
    contradictions = physical_problems(profile)
    if contradictions:
        raise ProfileError("; ".join(contradictions), path=path)
    return profile


def load_profile(profile_id: str) -> FirmwareProfile:
    """Load, merge and validate the profile with this id from the search path."""
    files = _profile_files()
    if profile_id not in files:
        raise ProfileError(f"no profile with id {profile_id!r}", path=profile_id, hint=_known(files))
    origin, item = files[profile_id]
    path = _display(origin, item)
    return _load(item.read_text("utf-8"), path, profile_id, files)


def load_profile_file(path: str | os.PathLike[str]) -> FirmwareProfile:
    """Validate one profile file (which may extend profiles on the search path)."""
    file = Path(path)
    try:
        text = file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read: {exc}", path=str(file)) from exc
    return _load(text, str(file), file.stem, _profile_files())


def _load(
    text: str, path: str, file_id: str, files: Mapping[str, tuple[str, Traversable]]
) -> FirmwareProfile:
    raw = _read_toml(path, text)
    if raw.get("id") != file_id:
        raise ProfileError(f"id {raw.get('id')!r} must equal the file name {file_id!r}", path=path, loc="id")
    return _validate(_resolve(raw, path, files, (file_id,)), path)


def iter_profiles() -> Iterator[FirmwareProfile]:
    """Every profile on the search path, validated."""
    for info in list_profiles():
        yield load_profile(info.id)


def json_schema() -> str:
    """The JSON Schema of a profile file, as committed in firmware_profiles/schema.json."""
    return json.dumps(FirmwareProfile.model_json_schema(), indent=2, sort_keys=True) + "\n"
