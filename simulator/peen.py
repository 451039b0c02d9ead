"""The shared model of a simulated dot-peen pattern marker (PROTOCOLS.md §5.1, §5.6, §9.4).

One :class:`PeenMarker` is the machine behind both protocol front ends: the Telesis-style framed
serial protocol (:mod:`markctl.simulator.telesis`) and the Modbus register map
(:mod:`markctl.simulator.peen_modbus`). Like a real pattern machine it owns its fonts and motion:
the host loads a pattern from the store, fills variable text fields, starts the cycle and waits for
Done. The cycle strikes each dot of each character into the :class:`Workpiece` height map at the
profile's rate, goes Busy -> Done, or Busy -> Fault with a code from the profile's fault table.

What is modelled, and from where:

* Rate: ``profile.dot_peen.chars_per_s`` is the rate for 3.175 mm 5x7 text (TMP4500E data sheet,
  ~2 characters/s, §5.1) and ``dot_rate_hz`` the stylus strike rate; each dot costs one strike plus
  the travel that makes an average 3.175 mm 5x7 character take ``1/chars_per_s``. Travel scales with
  character height and with the speed percentage. This is a model, not a measured machine.
* Depth: the profile's model (``DotPeenSpec.depth_mm``, which the layout check also plans with):
  sqrt(force / hardness) through the maker's figure (TMP4500E: 0.45 mm in mild steel), capped at
  1 mm; the dent is a cone of the profile's stylus angle. Workpiece hardness is in Brinell (HB),
  converted with HV ~ 1.05 HB (steels below ~300 HB).
* Fonts: the 5x7 and 7x9 dot matrices markctl composes with (below); ``height_mm`` is the distance between
  the bottom and top dot centres, and (x, y) is the centre of the lower-left dot of the first character.
  The dot pitch is height/(rows-1) unless the host sets one (horizontal pitch).
* Patterns: a :class:`Pattern` is a list of field slots (position, height, angle, font) as a
  technician would design it on the controller; the host cannot send geometry over these protocols.
  The key ``"*"`` serves any pattern name (the default store); without it an unknown name faults.
* Faults (``simulator.faults`` grammar), handled here: ``fault@cycle:N=CODE`` (code CODE half-way
  through cycle N), ``estop@cycle:N`` / ``estop@t:T``, ``jam@cycle:N`` / ``jam@t:T`` (the profile's
  e-stop and stylus-jam codes), ``drop@cycle:N`` (the link drops half-way through cycle N; the
  machine, like a real one, goes on marking). Fault codes for e-stop, jam, unknown pattern, text
  overflow and host abort are found in the profile's fault table by their text.

Not modelled: acceleration, axis errors other than injected ones, stylus wear, material spring-back,
dots that overlap deepening each other (the deepest dent wins), pause/resume of a cycle by I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources

from markctl.profiles import FirmwareProfile
from markctl.simulator.clock import Clock
from markctl.simulator.faults import Fault, parse_faults
from markctl.simulator.workpiece import Workpiece

__all__ = [
    "FONTS",
    "DotFont",
    "FieldSlot",
    "MarkerFrontEnd",
    "MarkerStatus",
    "Pattern",
    "PeenMarker",
    "default_pattern",
    "glyph_dots",
]

# --- fonts ----------------------------------------------------------------------------------
# The 5x7 and 7x9 matrices markctl composes with (``layouts/data/dotfont_*.toml``, drawn for
# markctl, no vendor font copied): one source, so the dots the simulated controller strikes are the
# dots the layout shows and verification judges. A real controller's font may differ in detail;
# that difference is the controller's, not the simulator's. Lower-case text is marked in capitals,
# as on most dot-peen controllers.


@dataclass(frozen=True, slots=True)
class DotFont:
    """A dot-matrix font: ``cols`` x ``rows`` cells, one blank column between characters."""

    name: str
    cols: int
    rows: int
    glyphs: dict[str, tuple[tuple[int, int], ...]]  # char -> (col, row-from-bottom) of each dot

    def supports(self, text: str) -> bool:
        return all(c in self.glyphs for c in text.upper())

    def dots(self, char: str) -> tuple[tuple[int, int], ...]:
        """Dot cells of ``char`` (upper-cased), in marking order: row by row from the top."""
        return self.glyphs[char.upper()]

    @property
    def mean_dots(self) -> float:
        """Mean dot count of the letters and digits (used to calibrate the cycle rate)."""
        counted = [len(d) for c, d in self.glyphs.items() if c.isalnum()]
        return sum(counted) / len(counted)


def _load(name: str) -> DotFont:
    data = tomllib.loads(
        (resources.files("markctl.layouts.data") / f"dotfont_{name}.toml").read_text("utf-8")
    )
    cols, rows = int(data["columns"]), int(data["rows"])
    glyphs: dict[str, tuple[tuple[int, int], ...]] = {" ": ()}
    for char, bitmap in data["glyphs"].items():
        if not char.isascii():  # a pattern controller is sent ASCII and draws only its own font
            continue
        if len(bitmap) != rows or any(len(line) != cols for line in bitmap):
            raise ValueError(f"font {name}: glyph {char!r} is not {cols}x{rows}")
        glyphs[char] = tuple(
            (col, rows - 1 - row)
            for row, line in enumerate(bitmap)
            for col, mark in enumerate(line)
            if mark == "#"
        )
    return DotFont(name, cols, rows, glyphs)


FONTS: dict[str, DotFont] = {"5x7": _load("5x7"), "7x9": _load("7x9")}


def glyph_dots(font: str, char: str) -> tuple[tuple[int, int], ...]:
    """Dot cells of one character in the named font (KeyError if either is unknown)."""
    return FONTS[font].dots(char)


# --- patterns --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldSlot:
    """Where the controller's pattern puts one text field (mm, machine frame)."""

    x_mm: float
    y_mm: float
    height_mm: float = 3.0
    angle_deg: float = 0.0
    font: str = "5x7"


@dataclass(frozen=True, slots=True)
class Pattern:
    """A pattern stored on the controller: its text field slots, field 1 first."""

    fields: tuple[FieldSlot, ...]


def default_pattern(profile: FirmwareProfile, slots: int = 8) -> Pattern:
    """The profile's ``pattern_origins`` and ``pattern_char_height_mm`` if it gives them (the same
    data composition places the fields by), else fields of 3 mm 5x7 text stacked 5 mm apart from
    the top-left of the marking window."""
    spec = profile.dot_peen
    origins = spec.pattern_origins if spec is not None else ()
    if origins:
        height = (spec.pattern_char_height_mm if spec is not None else None) or 3.0
        return Pattern(tuple(FieldSlot(x, y, height) for x, y in origins))
    top = profile.machine.work_area_y_mm - 2.0 - 3.0
    return Pattern(tuple(FieldSlot(2.0, top - 5.0 * i) for i in range(slots)))


# --- the machine -----------------------------------------------------------------------------


class MarkerStatus(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    DONE = "done"
    FAULT = "fault"


#: Words that identify a role in a profile's fault table (the codes differ between profiles).
FAULT_ROLES: dict[str, tuple[str, ...]] = {
    "estop": ("emergency", "e-stop"),
    "jam": ("jam",),
    "pattern": ("pattern not found",),
    "overflow": ("overflow",),
    "aborted": ("abort",),
}

#: Vickers per Brinell unit for steels below ~300 HB (the workpiece is specified in HB).
HV_PER_HB = 1.05

MODEL_FAULT_KINDS = frozenset({"fault", "estop", "jam", "drop"})


@dataclass(slots=True)
class _Dot:
    x: float
    y: float
    char_index: int  # index among the non-space characters of the cycle
    seconds: float  # simulated time this dot costs (strike + travel to it)


@dataclass(slots=True)
class Strike:
    """One struck dot, for tests and the PNG."""

    t: float
    x: float
    y: float
    depth_mm: float
    cycle: int


@dataclass(slots=True)
class CycleRecord:
    """How a cycle ended (tests read these)."""

    number: int
    chars_total: int
    chars_done: int = 0
    dots_total: int = 0
    dots_struck: int = 0
    started_t: float = 0.0
    ended_t: float | None = None
    stopped_t: float | None = None  # when an abort, fault or drop stopped it (None: ran to the end)
    outcome: str = "running"  # done | fault | aborted | running
    fault_code: int = 0


class PeenMarker:
    """The machine: pattern store, text fields, parameters, cycle, faults and the workpiece."""

    def __init__(
        self,
        profile: FirmwareProfile,
        *,
        clock: Clock,
        workpiece: Workpiece | None = None,
        patterns: Mapping[str, Pattern] | None = None,
        hardness_hb: float = 150.0,
        faults: Iterable[Fault] = (),
        text_fields: int = 8,
    ) -> None:
        if profile.dot_peen is None:
            raise ValueError(f"profile {profile.id} is not a dot-peen machine")
        if hardness_hb <= 0:
            raise ValueError("hardness_hb must be positive")
        self.profile = profile
        self.spec = profile.dot_peen
        self.clock = clock
        m = profile.machine
        self.workpiece = workpiece if workpiece is not None else Workpiece(m.work_area_x_mm, m.work_area_y_mm)
        self.patterns: dict[str, Pattern] = (
            dict(patterns) if patterns is not None else {"*": default_pattern(profile, text_fields)}
        )
        self.hardness_hb = hardness_hb
        self.text_fields = text_fields
        self.fault_codes: Mapping[int, str] = getattr(profile.protocol, "fault_codes", {})
        self.faults = tuple(f for f in faults if f.kind in MODEL_FAULT_KINDS)
        # state
        self.status = MarkerStatus.IDLE
        self.fault_code = 0
        self.pattern_name: str | None = None
        self.pattern: Pattern | None = None
        self.texts: dict[int, str] = {}
        self.char_height_mm: float | None = None  # host override of the pattern's height
        self.dot_pitch_mm: float | None = None
        # The stored pattern's force until the host sends one (a Telesis-style host cannot).
        pattern_force = self.spec.pattern_force_pct
        self.force_pct = pattern_force if pattern_force is not None else 75.0
        self.speed_pct = 100.0
        self.origins: dict[int, tuple[float, float]] = {}  # host override of a field's (x, y)
        self.field_heights: dict[int, float] = {}  # host override of one field's height
        self.field_angles: dict[int, float] = {}  # host override of one field's angle
        self.job_counter = 0
        self.stylus_down = False
        self.cycles: list[CycleRecord] = []
        self.strikes: list[Strike] = []
        self.on_drop: Callable[[str], None] | None = None
        self._cycle_task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.Task[None]] = []
        self._stop_reason: tuple[str, int] | None = None

    # --- profile lookups -------------------------------------------------------------------

    def code_for(self, role: str) -> int:
        """The profile's fault code whose text names ``role`` (estop, jam, pattern, overflow, aborted)."""
        words = FAULT_ROLES[role]
        for code, text in sorted(self.fault_codes.items()):
            if any(word in text.lower() for word in words):
                return code
        raise ValueError(f"profile {self.profile.id}: no fault code whose text mentions {' or '.join(words)}")

    # --- outputs ---------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.status is MarkerStatus.BUSY

    @property
    def ready(self) -> bool:
        return self.status in (MarkerStatus.IDLE, MarkerStatus.DONE)

    @property
    def cycle(self) -> CycleRecord | None:
        return self.cycles[-1] if self.cycles else None

    @property
    def chars_done(self) -> int:
        return self.cycle.chars_done if self.cycle else 0

    @property
    def progress_pct(self) -> int:
        cyc = self.cycle
        if cyc is None or cyc.chars_total == 0:
            return 0
        if cyc.outcome == "done":
            return 100
        return min(99, (100 * cyc.chars_done) // cyc.chars_total)

    # --- host commands ---------------------------------------------------------------------

    def load_pattern(self, name: str) -> bool:
        """Select a pattern; an unknown name faults (if the store has no ``"*"``)."""
        if self.busy:
            return False
        pattern = self.patterns.get(name, self.patterns.get("*"))
        if pattern is None:
            self._set_fault(self.code_for("pattern"))
            return False
        self.pattern_name, self.pattern = name, pattern
        self.texts = {}
        if self.status is MarkerStatus.DONE:
            self.status = MarkerStatus.IDLE
        return True

    def text_problem(self, number: int, text: str) -> str | None:
        """Why ``text`` cannot go into field ``number`` (None if it can)."""
        if not 1 <= number <= self.text_fields:
            return f"field {number} does not exist (1-{self.text_fields})"
        if self.pattern is not None and number > len(self.pattern.fields):
            return f"pattern {self.pattern_name} has {len(self.pattern.fields)} field(s)"
        font = self._slot_font(number)
        if not FONTS[font].supports(text):
            bad = sorted({c for c in text.upper() if c not in FONTS[font].glyphs})
            return f"characters {''.join(bad)!r} are not in font {font}"
        return None

    def set_text(self, number: int, text: str) -> bool:
        if self.busy or self.text_problem(number, text) is not None:
            return False
        self.texts[number] = text
        return True

    def start_refusal(self) -> tuple[str, str] | None:
        """Why Go would be refused now, as (kind, reason); None if a cycle can start.

        kind: ``busy``, ``fault`` (faulted, or no pattern loaded), ``overflow`` (a text the pattern
        cannot take: Go also faults the machine, "text field overflow"), ``empty`` (no character
        to mark), ``window`` (a dot would land outside the marking window). A real controller
        refuses these before the stylus moves; none of them counts as a job.
        """
        if self.busy:
            return ("busy", "a cycle is running")
        if self.status is MarkerStatus.FAULT:
            return ("fault", f"fault {self.fault_code} is active")
        if self.pattern is None:
            return ("fault", "no pattern is loaded")
        for number, text in self.texts.items():
            problem = self.text_problem(number, text)
            if problem is not None:
                return ("overflow", problem)
        if not any(text.strip() for text in self.texts.values()):
            return ("empty", "no field has a character to mark")
        x_max, y_max = self.profile.machine.work_area_x_mm, self.profile.machine.work_area_y_mm
        for dot in self._plan():
            if not (0.0 <= dot.x <= x_max and 0.0 <= dot.y <= y_max):
                return (
                    "window",
                    f"a dot at ({dot.x:.1f}, {dot.y:.1f}) mm lies outside the {x_max:g} x {y_max:g} mm window",
                )
        return None

    def start(self) -> bool:
        """Go: start a cycle of the loaded pattern; False if :meth:`start_refusal` gives a reason."""
        refusal = self.start_refusal()
        if refusal is not None:
            if refusal[0] == "overflow":
                self._set_fault(self.code_for("overflow"))
            return False
        plan = self._plan()
        number = len(self.cycles) + 1
        record = CycleRecord(
            number=number,
            chars_total=len({d.char_index for d in plan}),
            dots_total=len(plan),
            started_t=self.clock.now(),
        )
        self.cycles.append(record)
        self.status = MarkerStatus.BUSY
        self.fault_code = 0
        self._stop_reason = None
        self._cycle_task = asyncio.get_running_loop().create_task(
            self._run_cycle(record, plan), name=f"peen cycle {number}"
        )
        return True

    def abort(self) -> None:
        """Stop the cycle now and retract the stylus; a running cycle ends in the 'aborted' fault."""
        if self.busy:
            self._stop(("aborted", self.code_for("aborted")))
        self.stylus_down = False

    def reset(self) -> None:
        """Clear a fault and go back online (a running cycle is stopped first)."""
        if self.busy:
            self._stop(("aborted", self.code_for("aborted")))
        self.stylus_down = False
        self.status = MarkerStatus.IDLE
        self.fault_code = 0

    def raise_fault(self, code: int) -> None:
        """An external fault (e-stop input, injected fault): stops a cycle, or faults an idle machine."""
        if self.busy:
            self._stop(("fault", code))
        else:
            self._set_fault(code)

    # --- background ------------------------------------------------------------------------

    async def start_background(self) -> None:
        """Arm time-triggered faults (``@t:``) on the running loop."""
        loop = asyncio.get_running_loop()
        for fault in self.faults:
            if fault.trigger == "t":
                self._timers.append(loop.create_task(self._timer(fault), name=f"fault {fault}"))

    async def stop_background(self) -> None:
        tasks = [*self._timers, *([self._cycle_task] if self._cycle_task else [])]
        self._timers = []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.stylus_down = False

    async def _timer(self, fault: Fault) -> None:
        await self.clock.sleep(fault.at)
        self._fire(fault)

    def _fire(self, fault: Fault) -> None:
        if fault.kind == "drop":
            if self.on_drop is not None:
                self.on_drop(f"injected {fault}")
            return
        code = {"estop": "estop", "jam": "jam"}.get(fault.kind)
        self.raise_fault(self.code_for(code) if code else fault.arg_int(1))

    # --- the cycle -------------------------------------------------------------------------

    def _slot(self, number: int) -> FieldSlot:
        assert self.pattern is not None
        return self.pattern.fields[number - 1]

    def _slot_font(self, number: int) -> str:
        if self.pattern is None or number > len(self.pattern.fields):
            return "5x7"
        return self._slot(number).font

    def depth_mm(self) -> float:
        """The profile's depth model (the one the layout check plans with) at this force and the
        workpiece's hardness, capped at 1 mm."""
        return min(1.0, self.spec.depth_mm(self.force_pct, self.hardness_hb * HV_PER_HB))

    def _plan(self) -> list[_Dot]:
        """Every dot of the cycle in marking order, with the simulated time it costs."""
        spec = self.spec
        strike_s = 1.0 / spec.dot_rate_hz
        ref_travel_s = max(0.0, 1.0 / (spec.chars_per_s * FONTS["5x7"].mean_dots) - strike_s)
        speed = max(1.0, self.speed_pct) / 100.0
        dots: list[_Dot] = []
        char_index = -1
        for number in sorted(self.texts):
            slot = self._slot(number)
            font = FONTS[slot.font]
            height = self.field_heights.get(number) or self.char_height_mm or slot.height_mm
            pitch_y = height / (font.rows - 1)
            pitch_x = self.dot_pitch_mm or pitch_y
            travel_s = ref_travel_s * (height / 3.175) / speed
            x_mm, y_mm = self.origins.get(number, (slot.x_mm, slot.y_mm))
            angle = self.field_angles.get(number, slot.angle_deg)
            cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            for k, char in enumerate(self.texts[number].upper()):
                cells = font.dots(char)
                if not cells:
                    continue
                char_index += 1
                x0 = k * (font.cols + 1) * pitch_x
                for col, row in cells:
                    lx, ly = x0 + col * pitch_x, row * pitch_y
                    dots.append(
                        _Dot(
                            x_mm + lx * cos - ly * sin,
                            y_mm + lx * sin + ly * cos,
                            char_index,
                            strike_s + travel_s,
                        )
                    )
        return dots

    def expected_seconds(self) -> float:
        """Simulated duration of a cycle of what is loaded now (for benchmarks)."""
        return sum(d.seconds for d in self._plan())

    async def _run_cycle(self, record: CycleRecord, plan: list[_Dot]) -> None:
        depth = self.depth_mm()
        cone = self.spec.stylus_cone_deg
        midway = len(plan) // 2
        mid_faults = [f for f in self.faults if f.trigger == "cycle" and int(f.at) == record.number]
        try:
            for i, dot in enumerate(plan):
                if i == midway:
                    for fault in mid_faults:
                        self._fire(fault)
                if self._stop_reason is not None:
                    break
                await self.clock.sleep(dot.seconds)
                if self._stop_reason is not None:
                    break
                # Strike: the stylus goes out and comes back within the dot.
                self.stylus_down = True
                self.workpiece.strike_dot(dot.x, dot.y, depth_mm=depth, cone_deg=cone)
                self.strikes.append(Strike(self.clock.now(), dot.x, dot.y, depth, record.number))
                self.stylus_down = False
                record.dots_struck += 1
                last_of_char = i + 1 == len(plan) or plan[i + 1].char_index != dot.char_index
                if last_of_char:
                    record.chars_done = dot.char_index + 1
        finally:
            self.stylus_down = False
            record.ended_t = self.clock.now()
        if self._stop_reason is None:
            record.outcome = "done"
            self.status = MarkerStatus.DONE
            self.job_counter = (self.job_counter + 1) & 0xFFFF
        # else: _stop() already recorded the outcome and set the status; a reset() since then
        # (the host's "reset and put online") must not be overridden by the stopped cycle.

    def _stop(self, reason: tuple[str, int]) -> None:
        # The cycle task sees the reason before its next strike; no dot is struck after this call.
        self._stop_reason = reason
        record = self.cycle
        if record is not None and record.outcome == "running":
            record.outcome, record.fault_code = reason
            record.stopped_t = self.clock.now()
            record.ended_t = self.clock.now()
        self.stylus_down = False
        self._set_fault(reason[1])

    def _set_fault(self, code: int) -> None:
        self.status = MarkerStatus.FAULT
        self.fault_code = code


class MarkerFrontEnd:
    """What every protocol front end of a :class:`PeenMarker` shares: faults, the model, the plate.

    A front end (the framed serial protocol, the Modbus register map) parses its fault spec once;
    faults timed by cycle or clock belong to the marker model, the rest to the front end's link.
    """

    def __init__(
        self,
        profile: FirmwareProfile,
        *,
        clock: Clock,
        faults: str,
        fault_kinds: Iterable[str],
        workpiece: Workpiece | None,
        patterns: Mapping[str, Pattern] | None,
        hardness_hb: float,
        text_fields: int = 8,
    ) -> None:
        self.profile = profile
        self.clock = clock
        self.faults: tuple[Fault, ...] = parse_faults(faults, fault_kinds)
        self.marker = PeenMarker(
            profile,
            clock=clock,
            workpiece=workpiece,
            patterns=patterns,
            hardness_hb=hardness_hb,
            faults=[f for f in self.faults if f.trigger in ("cycle", "t") and f.kind != "slow"],
            text_fields=text_fields,
        )

    @property
    def workpiece(self) -> Workpiece:
        """The plate under the stylus (the marker model's); assign a new one to load the next part."""
        return self.marker.workpiece

    @workpiece.setter
    def workpiece(self, plate: Workpiece) -> None:
        self.marker.workpiece = plate
