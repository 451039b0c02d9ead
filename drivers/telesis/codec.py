"""Sans-IO codec of the Telesis "Extended" framed protocol (PROTOCOLS.md §5.1, §5.2).

Frame, host to marker and (for status replies) marker to host::

    SOH TYPE [nn] STX data ETX BCC CR        SOH=01 STX=02 ETX=03 CR=0D

Verified from vendor data sheets (§5.1, [M]): the frame shape; one printable TYPE character and an
optional two-digit field/buffer number; message types ``P`` load pattern, ``1``/``V`` fill text
field nn, ``G`` go (start a cycle), ``O`` reset and put online, ``I`` read I/O status as hex
``O2O1;I2I1``; the receiver ignores everything before SOH. ACK=06 / NAK=15 are InfoSight's values
for the same frame family (§5.2).

**Assumed** (no public source confirms them, §5.1 "Not confirmed"), therefore profile settings
(:class:`~markctl.profiles.TelesisProtocol`), never constants here:

* the BCC algorithm (``bcc``: XOR of the bytes, or their sum modulo 256), its encoding
  (``bcc_encoding``: one raw byte, or two upper-case hex digits) and its span (``bcc_span``:
  ``type-to-etx`` = TYPE through ETX inclusive, ``soh-to-etx`` = SOH through ETX inclusive,
  ``stx-to-etx`` = STX through ETX inclusive); the shipped default is xor / binary / type-to-etx;
* the reply framing (``reply_framing``): one ACK/NAK byte (default) or an echo of the frame;
* the status reply: a frame of type ``I`` whose data is ``O2O1;I2I1`` and, per ``status_format``,
  ``;FF`` (fault code) and ``;CCCC`` (characters marked in this cycle), all hex; output bit numbers
  come from ``output_bits``.

Nothing here does I/O or reads a clock. :class:`FrameDecoder` never raises anything but
:class:`~markctl.errors.ProtocolError`, whatever bytes it is fed (a property test checks it), and
after an error it resynchronises on the next SOH.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from markctl.errors import ProtocolError
from markctl.profiles import TelesisProtocol

__all__ = [
    "CR",
    "ETX",
    "SOH",
    "STX",
    "Ack",
    "Frame",
    "FrameDecoder",
    "Framing",
    "IOStatus",
    "Nak",
    "block_check",
    "encode_frame",
    "go",
    "load_pattern",
    "parse_status",
    "read_status",
    "reset_online",
    "set_field",
]

SOH, STX, ETX, CR = 0x01, 0x02, 0x03, 0x0D
#: A frame longer than this without its ETX is garbage (fields are at most 255 characters).
MAX_FRAME = 300


@dataclass(frozen=True, slots=True)
class Framing:
    """The framing settings of one profile (see the module docstring for their meaning)."""

    bcc: Literal["xor", "sum"] = "xor"
    bcc_encoding: Literal["binary", "hex"] = "binary"
    bcc_span: Literal["type-to-etx", "soh-to-etx", "stx-to-etx"] = "type-to-etx"
    ack: int = 0x06
    nak: int = 0x15

    @classmethod
    def from_profile(cls, protocol: TelesisProtocol) -> Framing:
        return cls(protocol.bcc, protocol.bcc_encoding, protocol.bcc_span, protocol.ack, protocol.nak)

    @property
    def bcc_length(self) -> int:
        return 1 if self.bcc_encoding == "binary" else 2


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame; ``raw`` is its exact bytes, SOH to CR."""

    type: str
    number: int | None
    data: bytes
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class Ack:
    """The positive acknowledgement byte."""


@dataclass(frozen=True, slots=True)
class Nak:
    """The negative acknowledgement byte."""


Event = Frame | Ack | Nak


def block_check(framing: Framing, frame_without_bcc: bytes) -> bytes:
    """The BCC bytes for a frame ``SOH ... ETX`` (the span is cut out of it here)."""
    stx = frame_without_bcc.index(STX)
    span = {
        "type-to-etx": frame_without_bcc[1:],
        "soh-to-etx": frame_without_bcc,
        "stx-to-etx": frame_without_bcc[stx:],
    }[framing.bcc_span]
    if framing.bcc == "xor":
        value = 0
        for byte in span:
            value ^= byte
    else:
        value = sum(span) & 0xFF
    return bytes([value]) if framing.bcc_encoding == "binary" else b"%02X" % value


def _check_text(data: bytes) -> None:
    for i, byte in enumerate(data):
        if not 0x20 <= byte <= 0x7E:
            raise ValueError(f"frame data must be printable ASCII; byte {i} is 0x{byte:02X}")


def encode_frame(framing: Framing, type_: str, number: int | None = None, data: bytes = b"") -> bytes:
    """``SOH TYPE [nn] STX data ETX BCC CR``; ValueError for a bad type, number or data."""
    if len(type_) != 1 or not 0x21 <= ord(type_) <= 0x7E:
        raise ValueError(f"message type must be one printable character, got {type_!r}")
    if number is not None and not 0 <= number <= 99:
        raise ValueError(f"field/buffer number must be 0-99, got {number}")
    _check_text(data)
    head = bytes([SOH]) + type_.encode() + (b"%02d" % number if number is not None else b"")
    body = head + bytes([STX]) + data + bytes([ETX])
    return body + block_check(framing, body) + bytes([CR])


# --- the commands of §5.1 ---------------------------------------------------------------------


def load_pattern(framing: Framing, name: str) -> bytes:
    """``P``: load the pattern called ``name`` from the marker's store."""
    return encode_frame(framing, "P", None, name.encode("ascii"))


def set_field(framing: Framing, number: int, text: str, *, type_: str = "V") -> bytes:
    """``V`` (or ``1``): fill text field ``number`` (1-99) with ``text``."""
    if not 1 <= number <= 99:
        raise ValueError(f"text field number must be 1-99, got {number}")
    return encode_frame(framing, type_, number, text.encode("ascii"))


def go(framing: Framing) -> bytes:
    """``G``: start a print cycle of the loaded pattern."""
    return encode_frame(framing, "G")


def reset_online(framing: Framing) -> bytes:
    """``O``: reset the marker and put it online (also ends a running cycle, assumed)."""
    return encode_frame(framing, "O")


def read_status(framing: Framing) -> bytes:
    """``I``: ask for the I/O status."""
    return encode_frame(framing, "I")


# --- the status reply -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IOStatus:
    """A decoded ``I`` reply: raw output/input bytes, named outputs, and the assumed extensions."""

    outputs: int
    inputs: int
    ready: bool
    done: bool
    busy: bool
    fault: bool
    pause: bool
    fault_code: int | None = None
    chars_done: int | None = None

    def describe(self) -> str:
        names = [n for n in ("ready", "busy", "done", "fault", "pause") if getattr(self, n)]
        return "+".join(names) or "none"


def parse_status(data: bytes, bits: dict[str, int], status_format: str) -> IOStatus:
    """Parse ``O2O1;I2I1[;FF[;CCCC]]``; ProtocolError names the offending byte."""
    parts = data.split(b";")
    wanted = {"io": 2, "io-fault": 3, "io-fault-count": 4}[status_format]
    if len(parts) != wanted:
        raise ProtocolError(
            f"status reply needs {wanted} ';'-separated hex fields ({status_format}), got {len(parts)}",
            raw=data,
        )
    widths = (2, 2, 2, 4)
    values: list[int] = []
    offset = 0
    for i, part in enumerate(parts):
        if len(part) != widths[i] or any(chr(b) not in "0123456789ABCDEFabcdef" for b in part):
            raise ProtocolError(
                f"status field {i + 1} is not {widths[i]} hex digits", raw=data, offset=offset
            )
        values.append(int(part, 16))
        offset += len(part) + 1
    outputs = values[0]

    def bit(name: str) -> bool:
        return name in bits and bool(outputs >> bits[name] & 1)

    return IOStatus(
        outputs=outputs,
        inputs=values[1],
        ready=bit("ready"),
        done=bit("done"),
        busy=bit("busy"),
        fault=bit("fault"),
        pause=bit("pause"),
        fault_code=values[2] if len(values) > 2 else None,
        chars_done=values[3] if len(values) > 3 else None,
    )


# --- decoding ---------------------------------------------------------------------------------


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)``, then call ``next_event()`` until it returns None.

    ``controls=True`` (the host side) also reports single ACK/NAK bytes between frames. Bytes that
    are neither SOH nor (with ``controls``) ACK/NAK are skipped outside a frame, as the marker does
    (§5.1 "ignores everything before SOH"); :attr:`skipped` counts them. A malformed frame raises
    ProtocolError once, with the frame's bytes and the offset of the first bad byte, and is dropped.
    """

    def __init__(self, framing: Framing, *, controls: bool = True) -> None:
        self.framing = framing
        self.controls = controls
        self._buf = bytearray()
        self.skipped = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def next_event(self) -> Event | None:
        buf = self._buf
        while buf:
            first = buf[0]
            if first == SOH:
                return self._frame()
            if self.controls and first == self.framing.ack:
                del buf[0]
                return Ack()
            if self.controls and first == self.framing.nak:
                del buf[0]
                return Nak()
            del buf[0]
            self.skipped += 1
        return None

    def _fail(self, message: str, end: int, offset: int | None) -> ProtocolError:
        raw = bytes(self._buf[:end])
        del self._buf[:end]
        return ProtocolError(message, raw=raw, offset=offset)

    def _frame(self) -> Frame | None:
        buf = self._buf
        # Header: SOH TYPE [d d] STX
        stx = -1
        for i in range(1, min(len(buf), 5)):
            byte = buf[i]
            if byte == STX:
                stx = i
                break
            if byte == SOH or (i == 1 and not 0x21 <= byte <= 0x7E) or (i > 1 and not 0x30 <= byte <= 0x39):
                raise self._fail("bad frame header", i, i)
        if stx < 0:
            if len(buf) >= 5:
                raise self._fail("no STX after the frame header", 4, 4)
            return None
        if stx == 1:
            raise self._fail("frame without a message type", 2, 1)
        if stx == 3:
            raise self._fail("field number needs two digits", 3, 2)
        # Data: printable ASCII up to ETX
        etx = -1
        for i in range(stx + 1, min(len(buf), MAX_FRAME)):
            byte = buf[i]
            if byte == ETX:
                etx = i
                break
            if not 0x20 <= byte <= 0x7E:
                raise self._fail("control byte inside frame data", i if byte == SOH else i + 1, i)
        if etx < 0:
            if len(buf) >= MAX_FRAME:
                raise self._fail("frame too long without ETX", MAX_FRAME, None)
            return None
        n = self.framing.bcc_length
        end = etx + 1 + n + 1
        if len(buf) < end:
            return None
        frame = bytes(buf[:end])
        if frame[-1] != CR:
            raise self._fail("frame does not end with CR", end, end - 1)
        expected = block_check(self.framing, frame[: etx + 1])
        if frame[etx + 1 : etx + 1 + n] != expected:
            # Hex digits in lower case are the same value; accept them.
            got = frame[etx + 1 : etx + 1 + n]
            if not (n == 2 and got.upper() == expected):
                raise self._fail(f"BCC mismatch (expected {expected!r})", end, etx + 1)
        del buf[:end]
        header = frame[1:stx]
        number = int(header[1:]) if len(header) == 3 else None
        return Frame(chr(header[0]), number, frame[stx + 1 : etx], frame)
