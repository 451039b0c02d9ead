"""Sans-IO codec of the GRBL-family serial protocol: bytes in, typed messages out, and back.

Protocol: the Grbl v1.1 line + realtime interface (reference firmware 1.1h, build 20190830) and
the two dialects markctl supports beside it, grblHAL (banner ``GrblHAL 1.1f [...]``, extra status
fields and realtime bytes) and FluidNC 3.x (banner ``Grbl 3.9 [FluidNC v3.9.5 ...]``). Spec:
PROTOCOLS.md §1.1 (message classes), §1.3 (realtime bytes), §1.4 (status report), §1.5 (codes),
§1.6 (``$`` commands), §2.1 and §2.2 (dialect differences).

Nothing here does I/O or reads a clock. :class:`LineDecoder` splits the machine's byte stream at
LF (every GRBL output line ends CR LF) and :func:`parse_line` turns one line into a message; any
line that does not parse raises :class:`~markctl.errors.ProtocolError` naming the offending byte
and nothing else (a property test holds it to that on arbitrary bytes). Host-side helpers encode
a G-code line, tell which lines must be sent send-response (EEPROM writes, §1.2) and build the
realtime byte sequences of overrides (§1.3).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from markctl.errors import ProtocolError

__all__ = [
    "RT",
    "AlarmMessage",
    "Bracket",
    "BuildOptions",
    "BuildVersion",
    "ErrorResponse",
    "Feedback",
    "LineDecoder",
    "Message",
    "Ok",
    "ParserState",
    "Setting",
    "StartupLine",
    "StatusReport",
    "Welcome",
    "encode_line",
    "is_response",
    "needs_send_response",
    "override_bytes",
    "parse_banner",
    "parse_line",
    "parse_status",
]


class RT:
    """Realtime command bytes (PROTOCOLS.md §1.3, grblHAL extras §2.1): never buffered, never counted."""

    RESET: Final = 0x18
    STATUS: Final = ord("?")
    CYCLE_START: Final = ord("~")
    FEED_HOLD: Final = ord("!")
    SAFETY_DOOR: Final = 0x84
    JOG_CANCEL: Final = 0x85
    FEED_100: Final = 0x90
    FEED_PLUS_10: Final = 0x91
    FEED_MINUS_10: Final = 0x92
    FEED_PLUS_1: Final = 0x93
    FEED_MINUS_1: Final = 0x94
    RAPID_100: Final = 0x95
    RAPID_50: Final = 0x96
    RAPID_25: Final = 0x97
    SPINDLE_100: Final = 0x99
    SPINDLE_PLUS_10: Final = 0x9A
    SPINDLE_MINUS_10: Final = 0x9B
    SPINDLE_PLUS_1: Final = 0x9C
    SPINDLE_MINUS_1: Final = 0x9D
    SPINDLE_STOP: Final = 0x9E
    FLOOD: Final = 0xA0
    MIST: Final = 0xA1
    # grblHAL non-printable aliases (grbl.h)
    HAL_STATUS: Final = 0x80
    HAL_CYCLE_START: Final = 0x81
    HAL_FEED_HOLD: Final = 0x82
    HAL_FULL_STATUS: Final = 0x87

    #: Bytes Grbl 1.1 picks out of the stream wherever they appear (serial.c).
    GRBL: Final = frozenset(
        {0x18, ord("?"), ord("~"), ord("!")}
        | set(range(0x84, 0x86))
        | set(range(0x90, 0x98))
        | set(range(0x99, 0x9F))
        | {0xA0, 0xA1}
    )


# --- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ok:
    """``ok``: the oldest unacknowledged line was executed or queued."""


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """``error:N``: the oldest unacknowledged line was refused (§1.5)."""

    code: int


@dataclass(frozen=True, slots=True)
class AlarmMessage:
    """``ALARM:N`` push message (§1.5); the machine locks until ``$X``/``$H``/reset."""

    code: int


@dataclass(frozen=True, slots=True)
class Welcome:
    """The banner printed at power-up and after every reset (§1.1, §2.1, §2.2)."""

    dialect: str  # "grbl" | "grblhal" | "fluidnc"
    version: str
    text: str


@dataclass(frozen=True, slots=True)
class Feedback:
    """``[MSG:...]``; FluidNC prefixes log levels (``INFO:``, ``WARN:``, ``ERR:``, ``DBG:``)."""

    text: str

    @property
    def level(self) -> str | None:
        head, sep, _ = self.text.partition(":")
        return head.strip() if sep and head.strip() in ("INFO", "WARN", "ERR", "DBG") else None


@dataclass(frozen=True, slots=True)
class ParserState:
    """``[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]`` after ``$G`` (§1.6)."""

    words: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BuildVersion:
    """``[VER:1.1h.20190830:user string]`` after ``$I``."""

    version: str
    info: str


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """``[OPT:codes,blocks,rx,...]`` after ``$I``; FluidNC gives only the codes (§2.2)."""

    codes: str
    planner_blocks: int | None
    rx_buffer_bytes: int | None
    extra: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Bracket:
    """Any other ``[TAG:body]`` push message (``HLP``, ``G54``, ``PRB``, ``FIRMWARE``, ``echo``...)."""

    tag: str
    body: str


@dataclass(frozen=True, slots=True)
class Setting:
    """``$n=value`` after ``$$`` (also ``$N0=line`` and FluidNC's ``$Name/Path=value``)."""

    key: str
    value: str

    @property
    def number(self) -> int | None:
        return int(self.key) if self.key.isdigit() else None


@dataclass(frozen=True, slots=True)
class StartupLine:
    """``>G54G20:ok`` / ``>...:error:N``: a stored startup line ran at reset (not a response)."""

    line: str
    error: int | None


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One ``<...>`` status report (§1.4); unknown fields are kept in ``extras``, never fatal."""

    state: str
    substate: int | None = None
    mpos: tuple[float, ...] | None = None
    wpos: tuple[float, ...] | None = None
    wco: tuple[float, ...] | None = None
    buffer: tuple[int, int] | None = None  # Bf: planner blocks free, RX bytes free
    line_number: int | None = None
    feed: float | None = None
    spindle: float | None = None
    pins: str | None = None
    overrides: tuple[int, int, int] | None = None
    accessories: str | None = None
    extras: Mapping[str, str] = field(default_factory=dict)

    def position(
        self, wco: tuple[float, ...] | None
    ) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
        """(MPos, WPos), deriving the missing one from ``WCO`` (this report's, else ``wco``)."""
        offset = self.wco if self.wco is not None else wco
        mpos, wpos = self.mpos, self.wpos
        if offset is not None:
            if mpos is None and wpos is not None:
                mpos = tuple(w + o for w, o in zip(wpos, offset, strict=False))
            elif wpos is None and mpos is not None:
                wpos = tuple(m - o for m, o in zip(mpos, offset, strict=False))
        return mpos, wpos

    @property
    def raw_state(self) -> str:
        return self.state if self.substate is None else f"{self.state}:{self.substate}"


Message = (
    Ok
    | ErrorResponse
    | AlarmMessage
    | Welcome
    | Feedback
    | ParserState
    | BuildVersion
    | BuildOptions
    | Bracket
    | Setting
    | StartupLine
    | StatusReport
)


def is_response(message: Message) -> bool:
    """True for the two response messages a character-counting streamer counts (§1.1)."""
    return isinstance(message, Ok | ErrorResponse)


# --- parsing -------------------------------------------------------------------------------

STATES: Final = frozenset({"Idle", "Run", "Hold", "Jog", "Alarm", "Door", "Check", "Home", "Sleep", "Tool"})
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)\Z")
_BANNER = re.compile(r"(?P<name>Grbl|GrblHAL) (?P<version>\S+) \[(?P<rest>.*)\]\Z")
_FLUIDNC = re.compile(r"FluidNC (?P<version>v?[\w.+-]+)")
_SETTING = re.compile(r"\$(?P<key>[A-Za-z0-9_/]+)=(?P<value>.*)\Z")
_BRACKET = re.compile(r"\[(?P<tag>[A-Za-z0-9_.]+):(?P<body>.*)\]\Z")


def _text(raw: bytes) -> str:
    for i, byte in enumerate(raw):
        # GRBL output is printable ASCII plus TAB; anything else is line noise or a garbled byte.
        if not (0x20 <= byte < 0x7F or byte == 0x09):
            raise ProtocolError("not printable ASCII", raw=raw, offset=i)
    return raw.decode("ascii")


def _int(raw: bytes, text: str, start: int) -> int:
    if not text.isdigit() or len(text) > 9:
        raise ProtocolError("expected a number", raw=raw, offset=start)
    return int(text)


def parse_banner(text: str) -> Welcome | None:
    """The dialect and version of a welcome line, or None if it is not one (§2.1, §2.2)."""
    match = _BANNER.match(text)
    if match is None:
        return None
    rest = match["rest"]
    fluid = _FLUIDNC.search(rest)
    if fluid is not None:
        return Welcome("fluidnc", fluid["version"], text)
    if match["name"] == "GrblHAL":
        return Welcome("grblhal", match["version"], text)
    # grblHAL at COMPATIBILITY_LEVEL >= 1 prints the classic banner; $I's [FIRMWARE:grblHAL] tells.
    return Welcome("grbl", match["version"], text)


def parse_line(raw: bytes) -> Message:
    """One output line (without CR LF) as a message; ProtocolError if it is none of them."""
    text = _text(raw)
    if text == "ok":
        return Ok()
    if text.startswith("error:"):
        return ErrorResponse(_int(raw, text[6:], 6))
    if text.startswith("ALARM:"):
        return AlarmMessage(_int(raw, text[6:], 6))
    if text.startswith("<"):
        return parse_status(raw)
    if text.startswith(">"):
        return _startup(raw, text)
    if text.startswith("$"):
        match = _SETTING.match(text)
        if match is None:
            raise ProtocolError("a settings line needs $key=value", raw=raw, offset=0)
        return Setting(match["key"], match["value"])
    if text.startswith("["):
        return _bracket(raw, text)
    welcome = parse_banner(text)
    if welcome is not None:
        return welcome
    raise ProtocolError("not a GRBL message", raw=raw, offset=0)


def _startup(raw: bytes, text: str) -> StartupLine:
    # ">G54G20:ok" or ">G54G20:error:N" - the line itself may contain ':' only in no G-code.
    if text.endswith(":ok"):
        return StartupLine(text[1:-3], None)
    head, sep, code = text.rpartition(":error:")
    if not sep:
        raise ProtocolError("startup line without :ok or :error:N", raw=raw, offset=len(raw) - 1)
    return StartupLine(head[1:], _int(raw, code, len(head) + 7))


def _bracket(raw: bytes, text: str) -> Message:
    match = _BRACKET.match(text)
    if match is None:
        raise ProtocolError("a push message needs [TAG:body]", raw=raw, offset=len(raw) - 1)
    tag, body = match["tag"], match["body"]
    if tag == "MSG":
        return Feedback(body.strip())
    if tag == "GC":
        return ParserState(tuple(body.split()))
    if tag == "VER":
        version, _, info = body.partition(":")
        return BuildVersion(version, info)
    if tag == "OPT":
        parts = body.split(",")
        blocks = rx = None
        if len(parts) >= 3:
            start = text.index(":") + 1 + len(parts[0]) + 1
            blocks = _int(raw, parts[1], start)
            rx = _int(raw, parts[2], start + len(parts[1]) + 1)
        return BuildOptions(parts[0], blocks, rx, tuple(parts[3:]))
    return Bracket(tag, body)


def _floats(raw: bytes, value: str, start: int) -> tuple[float, ...]:
    out = []
    offset = start
    for part in value.split(","):
        if not _NUMBER.match(part):
            raise ProtocolError("expected a number", raw=raw, offset=offset)
        out.append(float(part))
        offset += len(part) + 1
    return tuple(out)


def _ints(raw: bytes, value: str, start: int, count: int) -> tuple[int, ...]:
    parts = value.split(",")
    if len(parts) != count:
        raise ProtocolError(f"expected {count} numbers", raw=raw, offset=start)
    out = []
    offset = start
    for part in parts:
        out.append(_int(raw, part, offset))
        offset += len(part) + 1
    return tuple(out)


def parse_status(raw: bytes) -> StatusReport:
    """A ``<state|MPos:...|...>`` report (§1.4); ProtocolError names the first bad byte."""
    text = _text(raw)
    if len(text) < 2 or not text.startswith("<") or not text.endswith(">"):
        raise ProtocolError(
            "a status report is <...>", raw=raw, offset=0 if not text.startswith("<") else len(raw) - 1
        )
    fields = text[1:-1].split("|")
    head = fields[0]
    state, _, sub = head.partition(":")
    if state not in STATES:
        raise ProtocolError(f"unknown machine state {state!r}", raw=raw, offset=1)
    substate = _int(raw, sub, 1 + len(state) + 1) if sub else None
    values: dict[str, object] = {}
    extras: dict[str, str] = {}
    offset = 1 + len(head) + 1
    for item in fields[1:]:
        key, sep, value = item.partition(":")
        start = offset + len(key) + 1
        if not sep:
            # grblHAL/FluidNC may add bare flags; keep them rather than fail (§1.4 "ignore unknown").
            if not key:
                raise ProtocolError("empty status field", raw=raw, offset=offset)
            extras[key] = ""
        elif key in ("MPos", "WPos", "WCO"):
            values[key] = _floats(raw, value, start)
        elif key == "Bf":
            values[key] = _ints(raw, value, start, 2)
        elif key == "Ln":
            values[key] = _int(raw, value, start)
        elif key == "F":
            values["feed"] = _floats(raw, value, start)[0]
        elif key == "FS":
            pair = _floats(raw, value, start)
            if len(pair) != 2:
                raise ProtocolError("FS needs feed,spindle", raw=raw, offset=start)
            values["feed"], values["spindle"] = pair
        elif key == "Ov":
            values[key] = _ints(raw, value, start, 3)
        elif key == "Pn":
            values[key] = value
        elif key == "A":
            values[key] = value
        else:
            extras[key] = value
        offset += len(item) + 1
    if "MPos" not in values and "WPos" not in values:
        raise ProtocolError("a status report needs MPos or WPos", raw=raw, offset=1 + len(head))
    return StatusReport(
        state=state,
        substate=substate,
        mpos=values.get("MPos"),  # type: ignore[arg-type]
        wpos=values.get("WPos"),  # type: ignore[arg-type]
        wco=values.get("WCO"),  # type: ignore[arg-type]
        buffer=values.get("Bf"),  # type: ignore[arg-type]
        line_number=values.get("Ln"),  # type: ignore[arg-type]
        feed=values.get("feed"),  # type: ignore[arg-type]
        spindle=values.get("spindle"),  # type: ignore[arg-type]
        pins=values.get("Pn"),  # type: ignore[arg-type]
        overrides=values.get("Ov"),  # type: ignore[arg-type]
        accessories=values.get("A"),  # type: ignore[arg-type]
        extras=extras,
    )


class LineDecoder:
    """Splits the machine's byte stream into messages; a bad line becomes a ProtocolError item.

    Lines end at LF (GRBL sends CR LF); the CR is dropped, empty lines (the banner is preceded by
    one) are skipped. A line longer than ``max_line`` without LF is reported and discarded so a
    noisy link cannot grow the buffer without bound.
    """

    def __init__(self, max_line: int = 1024) -> None:
        self._buffer = bytearray()
        self._max_line = max_line

    def feed(self, data: bytes) -> list[Message | ProtocolError]:
        self._buffer += data
        out: list[Message | ProtocolError] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max_line:
                    out.append(
                        ProtocolError("line too long, no LF", raw=bytes(self._buffer[:64]), offset=None)
                    )
                    self._buffer.clear()
                break
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            if not line:
                continue
            try:
                out.append(parse_line(line))
            except ProtocolError as exc:
                out.append(exc)
        return out


# --- host side -----------------------------------------------------------------------------

_SETTING_WRITE = re.compile(r"\$(?:\d+|N\d+|I|RST)=")
_WORD = re.compile(r"([A-Z])([-+]?(?:\d+\.?\d*|\.\d+))")


def needs_send_response(line: str) -> bool:
    """Lines that write EEPROM on AVR Grbl and must therefore be sent alone (§1.2).

    ``$x=``, ``$Nx=``, ``$I=``, ``$RST=``, ``G10 L2``/``G10 L20``, ``G28.1`` and ``G30.1``: the EEPROM
    write disables the serial RX interrupt, so bytes streamed behind them would be lost.
    """
    compact = re.sub(r"\s+|\([^)]*\)|;.*", "", line).upper()
    if _SETTING_WRITE.match(compact):
        return True
    words = _WORD.findall(compact)
    g_codes = {float(v) for k, v in words if k == "G"}
    l_words = {float(v) for k, v in words if k == "L"}
    return bool({28.1, 30.1} & g_codes) or (10.0 in g_codes and bool({2.0, 20.0} & l_words))


def encode_line(line: str, *, max_chars: int | None = None) -> bytes:
    """One G-code/``$`` line as bytes with its LF; refuses what would corrupt the stream.

    Raises:
        ValueError: non-ASCII text, an embedded newline, a realtime character (``?``, ``!``,
            ``~``; the firmware would act on it mid-line, §1.3) or a line longer than ``max_chars``.
    """
    text = line.strip()
    if not text.isascii() or any(c in text for c in "\r\n"):
        raise ValueError(f"line {line!r}: must be one line of ASCII")
    if any(c in text for c in "?!~") or "\x18" in text:
        raise ValueError(f"line {line!r}: contains a realtime command character")
    data = text.encode("ascii") + b"\n"
    if max_chars is not None and len(text) >= max_chars:
        raise ValueError(f"line {line!r}: {len(text)} characters, the firmware takes at most {max_chars - 1}")
    return data


def override_bytes(kind: str, target_pct: int) -> bytes:
    """Realtime bytes that set the feed or spindle (laser power) override to ``target_pct``.

    Resets to 100 % first so the result does not depend on the firmware's current value, then
    steps by 10 and by 1; the firmware clamps to 10-200 % (§1.3).

    Raises:
        ValueError: unknown ``kind`` or a target outside 10-200 %.
    """
    codes = {
        "feed": (RT.FEED_100, RT.FEED_PLUS_10, RT.FEED_MINUS_10, RT.FEED_PLUS_1, RT.FEED_MINUS_1),
        "power": (
            RT.SPINDLE_100,
            RT.SPINDLE_PLUS_10,
            RT.SPINDLE_MINUS_10,
            RT.SPINDLE_PLUS_1,
            RT.SPINDLE_MINUS_1,
        ),
    }
    if kind not in codes:
        raise ValueError(f"override kind must be 'feed' or 'power', got {kind!r}")
    if not 10 <= target_pct <= 200:
        raise ValueError(f"override must be 10-200 %, got {target_pct}")
    reset, up10, down10, up1, down1 = codes[kind]
    delta = target_pct - 100
    tens, ones = divmod(abs(delta), 10)
    big, small = (up10, up1) if delta > 0 else (down10, down1)
    return bytes([reset] + [big] * tens + [small] * ones)
