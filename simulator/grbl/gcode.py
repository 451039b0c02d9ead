"""The G-code block parser of the GRBL simulator: one preprocessed line in, a checked block out.

Follows Grbl 1.1's ``gc_execute_line`` error checking closely enough that a sender meets the same
``error:N`` for the same mistakes (PROTOCOLS.md §1.5): 1 letter expected, 2 bad number,
4 negative value, 20 unsupported command, 21 modal group violation, 22 undefined feed,
23 integer required, 24 two axis commands, 25 repeated word, 26 no axis words, 27 bad line
number, 28 missing P/L, 30 G53 with arcs, 31 unused axis words, 32/33/34/35 arc errors,
36 unused value words, 38 tool number. Input is what Grbl's line reader keeps: upper case, no
spaces, no comments (see :func:`preprocess`).

Not modelled (refused with ``error:20``): probing (G38.x), cutter compensation other than G40,
G61.1/G64 path modes; G43.1 is checked (``error:37``) and stored as the tool length offset; jog lines (``$J=``) are checked by
:func:`parse_jog`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Block", "GCodeError", "arc_points", "check_block", "parse_block", "parse_jog", "preprocess"]


class GCodeError(Exception):
    """A block Grbl would refuse; ``code`` is the number after ``error:``."""

    def __init__(self, code: int) -> None:
        super().__init__(f"error:{code}")
        self.code = code


# Modal groups of G words (Grbl gcode.h); value = group name.
_G_GROUPS: dict[float, str] = {
    0: "motion",
    1: "motion",
    2: "motion",
    3: "motion",
    80: "motion",
    4: "non-modal",
    10: "non-modal",
    28: "non-modal",
    30: "non-modal",
    53: "non-modal",
    92: "non-modal",
    28.1: "non-modal",
    30.1: "non-modal",
    92.1: "non-modal",
    17: "plane",
    18: "plane",
    19: "plane",
    20: "units",
    21: "units",
    90: "distance",
    91: "distance",
    91.1: "arc-distance",
    93: "feed-mode",
    94: "feed-mode",
    40: "cutter",
    43.1: "tool-length",
    49: "tool-length",
    54: "wcs",
    55: "wcs",
    56: "wcs",
    57: "wcs",
    58: "wcs",
    59: "wcs",
    61: "control",
}
_M_GROUPS: dict[int, str] = {
    0: "stop",
    1: "stop",
    2: "stop",
    30: "stop",
    3: "spindle",
    4: "spindle",
    5: "spindle",
    7: "coolant",
    8: "coolant",
    9: "coolant",
}
_VALUE_LETTERS = frozenset("FIJKLNPRSTXYZ")
# G words that take the axis words (gcode.c axis_command): two of them in one block is error:24.
_AXIS_COMMANDS = frozenset({0, 1, 2, 3, 10, 28, 30, 43.1, 92})
# Integer parts Grbl knows: a decimal it does not support on them is error:23 (unused mantissa).
_KNOWN_INTEGERS = frozenset(int(code) for code in _G_GROUPS) | {38, 43, 61}
_AXES = "XYZ"


@dataclass
class Block:
    """One parsed line: the G/M words by group and the value words."""

    g: dict[str, float] = field(default_factory=dict)
    m: dict[str, int] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)

    @property
    def axes(self) -> dict[str, float]:
        return {k: v for k, v in self.values.items() if k in _AXES}

    def has(self, letter: str) -> bool:
        return letter in self.values


def preprocess(raw: bytes) -> str:
    """What Grbl's line reader keeps of a line: no whitespace or control bytes, no comments, upper case."""
    out = []
    in_paren = False
    for byte in raw:
        char = chr(byte)
        if in_paren:
            if char == ")":
                in_paren = False
            continue
        if char == "(":
            in_paren = True
        elif char == ";":
            break
        elif byte <= 0x20 or byte >= 0x7F:
            continue
        else:
            out.append(char.upper())
    return "".join(out)


def _read_number(text: str, i: int) -> tuple[float, int]:
    """read_float() of nuts_bolts.c: sign, digits, at most one point; the rest is the next word."""
    start = i
    if i < len(text) and text[i] in "+-":
        i += 1
    digits = 0
    point = False
    while i < len(text) and (text[i].isdigit() or (text[i] == "." and not point)):
        if text[i] == ".":
            point = True
        else:
            digits += 1
        i += 1
    if digits == 0:
        raise GCodeError(2)
    return float(text[start:i]), i


def _words(text: str) -> list[tuple[str, float]]:
    words = []
    i = 0
    while i < len(text):
        letter = text[i]
        if not ("A" <= letter <= "Z"):
            raise GCodeError(1)
        value, i = _read_number(text, i + 1)
        words.append((letter, value))
    return words


def parse_block(text: str) -> Block:
    """Tokenise and check the words of a line; raises GCodeError with Grbl's code."""
    block = Block()
    axis_command = False
    for letter, value in _words(text):
        if letter == "G":
            code = round(value, 1)
            if code not in _G_GROUPS:
                raise GCodeError(23 if code != int(code) and int(code) in _KNOWN_INTEGERS else 20)
            group = _G_GROUPS[code]
            if code in _AXIS_COMMANDS:
                if axis_command:
                    raise GCodeError(24)  # checked as the word is read, before its modal group
                axis_command = True
            if group in block.g:
                raise GCodeError(21)
            block.g[group] = code
        elif letter == "M":
            if value != int(value):
                raise GCodeError(23)
            mcode = int(value)
            if mcode not in _M_GROUPS:
                raise GCodeError(20)
            mgroup = _M_GROUPS[mcode]
            if mgroup in block.m:
                raise GCodeError(21)
            block.m[mgroup] = mcode
        elif letter in _VALUE_LETTERS:
            if letter in block.values:
                raise GCodeError(25)
            if letter in "FNPST" and value < 0:
                raise GCodeError(4)
            if letter in "NLT" and value != int(value):
                raise GCodeError(23)
            if letter == "N" and value > 9_999_999:
                raise GCodeError(27)
            if letter == "T" and value > 255:
                raise GCodeError(38)
            block.values[letter] = value
        else:
            raise GCodeError(20)  # A, B, C, D, E, H, O, Q, U, V, W: no such axis or word in Grbl
    return block


def check_block(block: Block, *, motion: float, feed: float, feed_mode: float) -> None:
    """Semantic checks against the modal state (the block's own motion word wins)."""
    non_modal = block.g.get("non-modal")
    motion_word = block.g.get("motion", motion)
    axes = block.axes
    axis_users = [c for c in (non_modal,) if c in (10, 28, 30, 92)]
    if block.g.get("tool-length") == 43.1:
        if set(axes) != {"Z"}:
            raise GCodeError(37)  # G43.1 takes exactly the tool-length axis, Z
        axis_users.append(43.1)
    uses_axes_for_motion = bool(axes) and not axis_users
    if "motion" in block.g and axis_users and axes:
        raise GCodeError(24)
    if non_modal == 4 and not block.has("P"):
        raise GCodeError(28)
    if non_modal == 10:
        if not block.has("L") or not block.has("P"):
            raise GCodeError(28)
        if int(block.values["L"]) not in (2, 20):
            raise GCodeError(20)
        if not 0 <= block.values["P"] <= 6 or block.values["P"] != int(block.values["P"]):
            raise GCodeError(29 if block.values["P"] > 6 else 23)
        if not axes:
            raise GCodeError(26)
    if non_modal == 92 and not axes:
        raise GCodeError(26)
    if non_modal == 53 and motion_word not in (0, 1):
        raise GCodeError(30)
    if uses_axes_for_motion and motion_word == 80:
        raise GCodeError(31)
    if uses_axes_for_motion and motion_word in (1, 2, 3):
        # The block's F, else (G94 only) the modal feed; zero is as undefined as none (gcode.c).
        block_feed = block.values.get("F")
        if block_feed is None and block.g.get("feed-mode", feed_mode) == 94:
            block_feed = feed
        if not block_feed:
            raise GCodeError(22)
    arc = uses_axes_for_motion and motion_word in (2, 3)
    if arc:
        if not ({"X", "Y"} & axes.keys()):
            raise GCodeError(32)
        if not block.has("R") and not ({"I", "J"} & block.values.keys()):
            raise GCodeError(35)
    if not arc:
        for letter in ("I", "J", "K", "R"):
            if block.has(letter):
                raise GCodeError(36)
    if block.has("P") and non_modal not in (4, 10):
        raise GCodeError(36)
    if block.has("L") and non_modal != 10:
        raise GCodeError(36)


def arc_points(
    start: tuple[float, float],
    end: tuple[float, float],
    *,
    clockwise: bool,
    ij: tuple[float, float] | None,
    radius: float | None,
    tolerance_mm: float = 0.002,
) -> list[tuple[float, float]]:
    """Chord points of a G2/G3 arc in the XY plane (Grbl's $12 arc tolerance); GCodeError 33/34."""
    x0, y0 = start
    x1, y1 = end
    if radius is not None:
        dx, dy = x1 - x0, y1 - y0
        chord2 = dx * dx + dy * dy
        if chord2 == 0:
            raise GCodeError(33)
        h2 = 4 * radius * radius - chord2
        if h2 < -1e-9:
            raise GCodeError(33)
        h = -math.sqrt(max(h2, 0.0)) / math.sqrt(chord2)
        if not clockwise:
            h = -h
        if radius < 0:
            h = -h
        cx = x0 + 0.5 * (dx - dy * h)
        cy = y0 + 0.5 * (dy + dx * h)
    else:
        assert ij is not None
        cx, cy = x0 + ij[0], y0 + ij[1]
        r0 = math.hypot(x0 - cx, y0 - cy)
        r1 = math.hypot(x1 - cx, y1 - cy)
        if abs(r0 - r1) > 0.005 and abs(r0 - r1) > 0.001 * r0:
            raise GCodeError(33)
    r = math.hypot(x0 - cx, y0 - cy)
    if r == 0:
        raise GCodeError(33)
    a0 = math.atan2(y0 - cy, x0 - cx)
    a1 = math.atan2(y1 - cy, x1 - cx)
    sweep = a1 - a0
    if clockwise:
        if sweep >= -1e-12:
            sweep -= 2 * math.pi
    elif sweep <= 1e-12:
        sweep += 2 * math.pi
    step = 2 * math.acos(max(-1.0, 1 - tolerance_mm / r)) if r > tolerance_mm else math.pi / 2
    n = max(1, math.ceil(abs(sweep) / max(step, 1e-6)))
    pts = [
        (cx + r * math.cos(a0 + sweep * k / n), cy + r * math.sin(a0 + sweep * k / n)) for k in range(1, n)
    ]
    pts.append((x1, y1))
    return pts


def parse_jog(text: str) -> Block:
    """``$J=`` body, checked in gcode.c's order: syntax, then F (22), then allowed words (16).

    Only G20/G21, G90/G91, G53, axis words and F are allowed.
    """
    block = parse_block(text)
    if not block.has("F"):
        raise GCodeError(22)
    if block.m or any(g not in (20, 21, 90, 91, 53) for g in block.g.values()):
        raise GCodeError(16)
    if any(letter not in "XYZFN" for letter in block.values):
        raise GCodeError(16)
    if not block.axes:
        raise GCodeError(16)
    return block
