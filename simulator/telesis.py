"""A simulated Telesis-style dot-peen marker speaking the Extended framed protocol (PROTOCOLS.md §5.1, §5.2).

The machine is a :class:`~markctl.simulator.peen.PeenMarker` (pattern store, text fields, cycle,
faults, workpiece). This module is its serial front end: it parses ``SOH TYPE [nn] STX data ETX
BCC CR`` frames from the host, checks the BCC, and answers as the profile's framing settings say.
It implements the framing itself, from the same profile settings as the driver but without
importing the driver's codec, so a misunderstanding in one cannot hide in the other.

Behaviour (the assumed parts are the profile's ``provenance.assumed`` and the framing settings):

* A frame with a bad BCC, an unknown type or no CR after its BCC is answered NAK; so is a frame
  cut short by a new SOH (the parser resynchronises on that SOH) and a frame longer than a full
  field allows (the rest of it, up to the next SOH, is dropped). A command the machine refuses
  (Go while busy or faulted, with no character to mark or a dot outside the window; a text it
  cannot mark or longer than ``field_chars_max``; a field number out of range) is answered NAK.
* One host at a time, like the serial line it stands for: served on TCP
  (:func:`markctl.simulator.serve.serve_tcp`), a second client is closed at once and the refusal
  is logged; the first host's session is not disturbed.
* Accepted commands are answered ACK (``reply_framing = "ack-nak"``) or echoed whole (``"echo"``).
* ``P`` loads a pattern (an unknown name is accepted on the wire and faults with the profile's
  "pattern not found" code, as a controller would), ``1``/``V`` fill field nn, ``G`` starts the
  cycle, ``O`` resets the machine (stops a running cycle, clears a fault, goes online), ``I``
  answers a frame of type ``I`` with ``O2O1;I2I1`` plus ``;FF`` and ``;CCCC`` per
  ``status_format``, ``Q`` (query buffer) is acknowledged and ignored.

Faults (``kind@trigger:value[=arg]``, see :mod:`markctl.simulator.faults`), counted over frames
received (retransmissions included), plus the machine faults of :mod:`markctl.simulator.peen`:

* ``nak@msg:N`` answer frame N with NAK without acting on it;
* ``noreply@msg:N`` frame N is lost: no action, no answer;
* ``badbcc@msg:N`` the first framed reply (a status reply, or an echo) at or after frame N carries
  a corrupted BCC;
* ``drop@msg:N`` the link drops when frame N arrives; ``drop@cycle:N`` half-way through cycle N
  (the machine goes on marking, as a real one would);
* ``slow@t:T=S`` from simulated time T on, every reply leaves S simulated seconds late.

Not modelled: XON/XOFF, peer-to-peer (unsolicited) messages, the Programmable protocol, baud-rate
timing of the bytes themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from markctl.profiles import FirmwareProfile, TelesisProtocol
from markctl.simulator.base import HangUp, Send
from markctl.simulator.clock import Clock
from markctl.simulator.faults import Fault
from markctl.simulator.peen import MODEL_FAULT_KINDS, MarkerFrontEnd, Pattern
from markctl.simulator.workpiece import Workpiece

__all__ = ["FAULT_KINDS", "TelesisSimulator"]

SOH, STX, ETX, CR = 0x01, 0x02, 0x03, 0x0D
FAULT_KINDS = frozenset({"nak", "noreply", "badbcc", "drop", "slow"}) | MODEL_FAULT_KINDS


class TelesisSimulator(MarkerFrontEnd):
    """A :class:`~markctl.simulator.base.ByteDevice` for profiles with ``protocol.kind = "telesis"``."""

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
        if not isinstance(profile.protocol, TelesisProtocol):
            raise ValueError(f"profile {profile.id} does not speak the telesis protocol")
        super().__init__(profile, clock=clock, faults=faults, fault_kinds=FAULT_KINDS, workpiece=workpiece,
                         patterns=patterns, hardness_hb=hardness_hb,
                         text_fields=profile.protocol.text_fields)  # fmt: skip
        self.proto: TelesisProtocol = profile.protocol
        self.marker.on_drop = self._drop
        self._send: Send | None = None
        self._hang_up: HangUp | None = None
        self._buf = bytearray()
        self._skipping = False  # dropping the rest of an over-long frame, up to the next SOH
        self.frames_received = 0
        self.naks_sent = 0
        self.transcript: list[tuple[str, bytes]] = []
        self._badbcc_pending = False
        self._pending_replies: set[asyncio.Task[None]] = set()

    # --- ByteDevice ------------------------------------------------------------------------

    def attach(self, send: Send, hang_up: HangUp) -> None:
        self._send, self._hang_up = send, hang_up
        self._buf.clear()
        self._skipping = False

    def detach(self) -> None:
        self._send = self._hang_up = None
        self._buf.clear()

    async def start(self) -> None:
        await self.marker.start_background()

    async def stop(self) -> None:
        for task in list(self._pending_replies):
            task.cancel()
        for task in list(self._pending_replies):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.marker.stop_background()

    def receive(self, data: bytes) -> None:
        self._buf += data
        while True:
            frame = self._next_frame()
            if frame is None:
                return
            self._on_frame(frame)

    # --- framing (the machine's own reading of the profile) ---------------------------------

    def _bcc(self, body: bytes) -> bytes:
        """BCC of ``SOH ... ETX`` per the profile's algorithm, encoding and span."""
        span = {"type-to-etx": body[1:], "soh-to-etx": body, "stx-to-etx": body[body.index(STX) :]}
        data = span[self.proto.bcc_span]
        value = 0
        if self.proto.bcc == "xor":
            for byte in data:
                value ^= byte
        else:
            value = sum(data) % 256
        return bytes([value]) if self.proto.bcc_encoding == "binary" else f"{value:02X}".encode()

    def frame(self, type_: str, data: bytes = b"", number: int | None = None) -> bytes:
        body = bytes([SOH]) + type_.encode() + (f"{number:02d}".encode() if number is not None else b"")
        body += bytes([STX]) + data + bytes([ETX])
        return body + self._bcc(body) + bytes([CR])

    @property
    def max_frame(self) -> int:
        """Longest frame the machine buffers: SOH TYPE nn STX, a full field, ETX, a hex BCC, CR."""
        return self.proto.field_chars_max + 9

    def _next_frame(self) -> bytes | None:
        """Cut the next frame out of the buffer (None if incomplete).

        Noise before an SOH is skipped. A new SOH before the ETX means the frame in hand was cut
        short: it is NAKed and parsing starts again at the new SOH (resync). A frame longer than
        :attr:`max_frame` is NAKed once and the bytes up to the next SOH are dropped. A frame whose
        byte after the BCC is not CR is returned as it stands (it is NAKed) without swallowing the
        byte, which may be the next frame's SOH.
        """
        buf = self._buf
        while True:
            if self._skipping:
                start = buf.find(SOH)
                if start < 0:
                    buf.clear()
                    return None
                self._skipping = False
            start = buf.find(SOH)
            if start < 0:
                buf.clear()
                return None
            del buf[:start]
            etx = buf.find(ETX)
            resync = buf.find(SOH, 1, etx if etx >= 0 else len(buf))
            if resync > 0:
                del buf[:resync]  # truncated frame: answer it, then read the new one
                self._nak()
                continue
            if etx < 0:
                if len(buf) > self.max_frame:
                    buf.clear()
                    self._skipping = True
                    self._nak()
                return None
            if etx + 1 > self.max_frame:
                del buf[: etx + 1]
                self._nak()
                continue
            bcc_end = etx + 1 + (1 if self.proto.bcc_encoding == "binary" else 2)
            if len(buf) <= bcc_end:
                return None
            end = bcc_end + 1 if buf[bcc_end] == CR else bcc_end
            frame = bytes(buf[:end])
            del buf[:end]
            return frame

    # --- messages --------------------------------------------------------------------------

    def _fault_now(self, kind: str) -> Fault | None:
        for fault in self.faults:
            if fault.kind == kind and fault.trigger == "msg" and int(fault.at) == self.frames_received:
                return fault
        return None

    def _on_frame(self, frame: bytes) -> None:
        self.frames_received += 1
        self.transcript.append(("rx", frame))
        if self._fault_now("drop"):
            self._drop(f"injected drop at frame {self.frames_received}")
            return
        if self._fault_now("noreply"):
            return
        if self._fault_now("nak"):
            self._nak()
            return
        if self._fault_now("badbcc"):
            self._badbcc_pending = True
        etx = frame.index(ETX)  # _next_frame cut the frame at its first ETX
        bcc_len = 1 if self.proto.bcc_encoding == "binary" else 2
        body, bcc = frame[: etx + 1], frame[etx + 1 : etx + 1 + bcc_len]
        tail = frame[-1] if len(frame) == etx + bcc_len + 2 else -1  # -1: no CR after the BCC
        stx = body.find(STX)
        header = body[1:stx] if stx > 0 else b""
        if self.proto.bcc_encoding == "hex":
            bcc = bcc.upper()  # the value, not the letter case, is what is checked
        if tail != CR or stx < 0 or bcc != self._bcc(body) or len(header) not in (1, 3):
            self._nak()
            return
        if len(header) == 3 and not header[1:].isdigit():
            self._nak()
            return
        type_ = chr(header[0])
        number = int(header[1:]) if len(header) == 3 else None
        data = body[stx + 1 : -1]
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            self._nak()
            return
        self._dispatch(type_, number, text, frame)

    def _dispatch(self, type_: str, number: int | None, text: str, frame: bytes) -> None:
        m = self.marker
        if type_ == "I":
            self._reply(self.frame("I", self._status_data()), framed=True)
            return
        if type_ == "P":
            ok = bool(text) and not m.busy
            if ok:
                m.load_pattern(text)  # an unknown name is accepted here and faults the machine
        elif type_ in ("V", "1"):
            # A field longer than the controller's buffer is refused, not cut (field_chars_max).
            ok = number is not None and len(text) <= self.proto.field_chars_max and m.set_text(number, text)
        elif type_ == "G":
            ok = m.start()
        elif type_ == "O":
            m.reset()
            ok = True
        elif type_ == "Q":
            ok = True
        else:
            ok = False
        if not ok:
            self._nak()
        elif self.proto.reply_framing == "echo":
            self._reply(frame, framed=True)
        else:
            self._reply(bytes([self.proto.ack]), framed=False)

    def _status_data(self) -> bytes:
        m = self.marker
        bits = self.proto.output_bits
        outputs = 0
        for name, on in (("ready", m.ready), ("done", m.status.value == "done"), ("busy", m.busy)):
            if on and name in bits:
                outputs |= 1 << bits[name]
        if m.status.value == "fault" and "fault" in bits:
            outputs |= 1 << bits["fault"]
        text = f"{outputs:02X};00"
        if self.proto.status_format in ("io-fault", "io-fault-count"):
            text += f";{m.fault_code & 0xFF:02X}"
        if self.proto.status_format == "io-fault-count":
            text += f";{m.chars_done & 0xFFFF:04X}"
        return text.encode()

    # --- replies ---------------------------------------------------------------------------

    def _nak(self) -> None:
        self.naks_sent += 1
        self._reply(bytes([self.proto.nak]), framed=False)

    def _reply(self, data: bytes, *, framed: bool) -> None:
        if framed and self._badbcc_pending:
            self._badbcc_pending = False
            n = 1 if self.proto.bcc_encoding == "binary" else 2
            bad = bytes(b ^ 0x5A if n == 1 else (b"0" if b != 0x30 else b"1")[0] for b in data[-1 - n : -1])
            data = data[: -1 - n] + bad + data[-1:]
        delay = self._latency()
        if delay <= 0:
            self._emit(data)
            return
        task = asyncio.get_running_loop().create_task(self._late(data, delay))
        self._pending_replies.add(task)
        task.add_done_callback(self._pending_replies.discard)

    def _latency(self) -> float:
        delay = 0.0
        for fault in self.faults:
            if fault.kind == "slow" and fault.trigger == "t" and self.clock.now() >= fault.at:
                delay = max(delay, fault.arg_float(0.5))
        return delay

    async def _late(self, data: bytes, delay: float) -> None:
        await self.clock.sleep(delay)
        self._emit(data)

    def _emit(self, data: bytes) -> None:
        if self._send is not None:
            self.transcript.append(("tx", data))
            self._send(data)

    def _drop(self, reason: str) -> None:
        hang_up = self._hang_up
        self.detach()
        if hang_up is not None:
            hang_up(reason)
