"""G-code for GRBL-family laser engravers: a MotionProgram as lines, framing, and a modal tracker.

Target: Grbl 1.1 laser mode (``$32=1``) and the grblHAL/FluidNC dialects that keep its semantics
(PROTOCOLS.md §1.7 laser mode, §9.2 laser helpers, §9.3 resume-from-line):

* ``M4`` dynamic power by default: power scales with actual speed and is off when the head is
  stopped, so corners and accelerations are not over-burned; ``M3`` only where the beam must fire
  standing still (laser dots) or when the caller asks for it.
* ``S`` is scaled to ``$30`` (the S value of 100 % PWM) from the stroke's ``power_pct``.
* Travel between strokes is ``G0``, which never fires in laser mode.
* Lines are written without spaces and with modal words omitted: a 115200-baud link moves
  ~11,500 bytes/s and short lines are what lets the planner stay fed (§1.2, §8 theme 2).

:class:`ModalState` follows the modal groups of a G-code stream so a job interrupted at line N can
resume there with units, distance mode, work coordinates, feed, power and laser mode restored and
a beam-off approach to the last position.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from markctl.layouts.program import MotionProgram, ProcessParams, StrokeKind

__all__ = ["GCodeProgram", "ModalState", "frame_lines", "num", "program_lines", "resume_lines"]


def num(value: float, decimals: int = 3) -> str:
    """Shortest decimal text of ``value`` at ``decimals`` places (``12.5``, ``-0.125``, ``3``)."""
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True, slots=True)
class GCodeProgram:
    """Raw G-code lines as a job (framing, resume, or a user's file); mirrors Program's ``digest``."""

    lines: tuple[str, ...]
    name: str = "gcode"

    @property
    def digest(self) -> str:
        import hashlib

        return hashlib.sha256("\n".join(self.lines).encode()).hexdigest()


def _power_s(params: ProcessParams, s_max: float) -> float:
    return round((params.power_pct or 0.0) / 100.0 * s_max, 1)


def program_lines(
    program: MotionProgram,
    *,
    s_max: float,
    dynamic_power: bool = True,
    spot_mm: float = 0.1,
) -> list[str]:
    """The G-code of a laser job: preamble, strokes in order, and beam-off end.

    ``s_max`` is ``$30``. DOTS strokes fire a constant-power (``M3``) dwell at each point, long
    enough to cover one spot at the stroke's speed (§1.7: M4 is off when the head is stopped).
    """
    mode = "M4" if dynamic_power else "M3"
    lines = ["G21G90G17G94G54", f"{mode}S0"]
    spindle = mode
    feed: float | None = None
    for stroke in program.strokes:
        params = program.params[stroke.params]
        s_value = _power_s(params, s_max)
        points = stroke.points
        if stroke.kind is StrokeKind.DOTS:
            dwell_s = max(0.001, spot_mm / (params.speed_mm_min / 60.0))
            for _ in range(params.passes):
                for x, y in points:
                    lines.append(f"G0X{num(x)}Y{num(y)}")
                    # M3 and M5 are spindle-state changes: Grbl finishes the G0 before firing.
                    # G1 first: in laser mode an M3 synced in G0 mode sets the laser *off*
                    # (gcode.c GC_PARSER_LASER_DISABLE; transcript row07_m3_idle_g0).
                    lines.append(f"G1M3S{num(s_value, 1)}")
                    lines.append(f"G4P{num(dwell_s, 3)}")
                    lines.append("M5")
            spindle = "M5"
            continue
        if spindle != mode:
            lines.append(f"{mode}S0")
            spindle = mode
        for _ in range(params.passes):
            x0, y0 = points[0]
            lines.append(f"G0X{num(x0)}Y{num(y0)}")
            first = f"G1X{num(points[1][0])}Y{num(points[1][1])}"
            if feed != params.speed_mm_min:
                first += f"F{num(params.speed_mm_min, 1)}"
                feed = params.speed_mm_min
            lines.append(first + f"S{num(s_value, 1)}")
            for x, y in points[2:]:
                lines.append(f"X{num(x)}Y{num(y)}")
    lines.append("M5S0")
    return lines


def frame_lines(
    bounds: tuple[float, float, float, float],
    *,
    speed_mm_min: float,
    power_s: float = 0.0,
    repeat: int = 1,
) -> list[str]:
    """Trace the rectangle ``bounds`` (min_x, min_y, max_x, max_y) for the operator to see.

    ``power_s == 0`` moves with ``G0`` and the beam off (``M5 S0``): G0 never fires in laser mode.
    A positive ``power_s`` is the explicit visible low-power mode: ``G1`` with ``M3 S<low>``, the only
    combination that lights the beam along the frame (§9.2). It ends with the beam off either way.
    """
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    x0, y0, x1, y1 = bounds
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    lines = ["G21G90G17G94G54", "M5S0", f"G0X{num(x0)}Y{num(y0)}"]
    if power_s > 0:
        lines.append(f"M3S{num(power_s, 1)}")
        lines.append(f"G1F{num(speed_mm_min, 1)}")
        move = "G1"
    else:
        move = "G0"
    for _ in range(repeat):
        lines.extend(f"{move}X{num(x)}Y{num(y)}" for x, y in corners[1:])
    lines.append("M5S0")
    return lines


# --- modal state ---------------------------------------------------------------------------

_WORD = re.compile(r"([A-Z])\s*([-+]?(?:\d+\.?\d*|\.\d+))")


@dataclass
class ModalState:
    """The modal state a G-code stream leaves behind (Grbl's parser groups, §1.6 ``$G``).

    Tracks: motion (G0-G3), plane (G17-G19), units (G20/G21), distance (G90/G91), feed mode
    (G93/G94), work coordinates (G54-G59), spindle/laser (M3/M4/M5), coolant, F, S, and the
    work-frame position of the last programmed move.
    """

    motion: str = "G0"
    plane: str = "G17"
    units: str = "G21"
    distance: str = "G90"
    feed_mode: str = "G94"
    wcs: str = "G54"
    spindle: str = "M5"
    coolant: str = "M9"
    feed: float = 0.0
    power: float = 0.0
    position: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])

    def feed_line(self, line: str) -> None:
        """Update the state from one line (comments and spaces ignored)."""
        text = re.sub(r"\([^)]*\)|;.*", "", line).upper()
        if text.startswith("$"):
            return  # system commands ($J= jogs do not change the parser's modal state)
        words = _WORD.findall(text)
        axes: dict[str, float] = {}
        non_modal_axes = False
        for letter, value in words:
            number = float(value)
            if letter == "G":
                code = _g_name(number)
                if code in ("G0", "G1", "G2", "G3"):
                    self.motion = code
                elif code == "G80":
                    self.motion = "G80"
                elif code in ("G17", "G18", "G19"):
                    self.plane = code
                elif code in ("G20", "G21"):
                    self.units = code
                elif code in ("G90", "G91"):
                    self.distance = code
                elif code in ("G93", "G94"):
                    self.feed_mode = code
                elif code in ("G54", "G55", "G56", "G57", "G58", "G59"):
                    self.wcs = code
                elif code in ("G10", "G28", "G30", "G92", "G53", "G4", "G28.1", "G30.1", "G92.1"):
                    non_modal_axes = code != "G53"
            elif letter == "M":
                code = f"M{int(number)}"
                if code in ("M3", "M4", "M5"):
                    self.spindle = code
                elif code in ("M7", "M8", "M9"):
                    self.coolant = code
                elif code in ("M2", "M30"):
                    # Program end restores these defaults in Grbl (gcode.c, M2/M30).
                    self.motion, self.distance, self.feed_mode = "G1", "G90", "G94"
                    self.spindle, self.coolant, self.wcs, self.plane = "M5", "M9", "G54", "G17"
            elif letter == "F":
                self.feed = number
            elif letter == "S":
                self.power = number
            elif letter in "XYZ":
                axes[letter] = number
        if axes and not non_modal_axes and self.motion != "G80":
            scale = 25.4 if self.units == "G20" else 1.0
            for i, letter in enumerate("XYZ"):
                if letter in axes:
                    value = axes[letter] * scale
                    self.position[i] = self.position[i] + value if self.distance == "G91" else value

    def feed_lines(self, lines: Iterable[str]) -> ModalState:
        for line in lines:
            self.feed_line(line)
        return self

    def restore_lines(self) -> list[str]:
        """Lines that bring a freshly reset machine to this state, approaching with the beam off.

        Order matters: beam off first, a ``G0`` to the last position (never fires), then feed,
        laser mode and power, and the motion mode last, so nothing fires before the next line.
        """
        x, y, z = self.position
        units = 25.4 if self.units == "G20" else 1.0
        lines = [
            f"G21G90{self.plane}{self.feed_mode}{self.wcs}",
            "M5S0",
            f"G0X{num(x)}Y{num(y)}",
        ]
        if z != 0.0:
            lines.append(f"G0Z{num(z)}")
        if self.coolant != "M9":
            lines.append(self.coolant)
        lines.append(f"{self.units}{self.distance}")
        if self.spindle != "M5":
            lines.append(f"{self.spindle}S{num(self.power, 1)}")
        motion = self.motion if self.motion in ("G0", "G1", "G80") else "G1"
        feed = self.feed / units if self.units == "G20" else self.feed
        lines.append(f"{motion}F{num(feed, 3)}" if self.feed > 0 and motion != "G80" else motion)
        return lines


def _g_name(number: float) -> str:
    return f"G{int(number)}" if number == int(number) else f"G{number:g}"


def resume_lines(lines: Sequence[str], start: int) -> list[str]:
    """The job ``lines`` resumed at index ``start``: modal state of ``lines[:start]`` restored first."""
    if not 0 <= start <= len(lines):
        raise ValueError(f"start must be 0-{len(lines)}, got {start}")
    state = ModalState().feed_lines(lines[:start])
    return state.restore_lines() + list(lines[start:])
