"""A Modbus server written from the specification, for the simulated markers (PROTOCOLS.md §6).

Why not pymodbus's server: a simulator must refuse what a real controller refuses, the way the
specification says, and pymodbus 3.16's server decides some of that itself (a bad quantity is
answered exception 01 with function byte 0x80, a request for another unit id over RTU is answered
exception 04 and logs a ``KeyError`` traceback, coils are stored 16 to a register so unmapped
neighbours become readable). Here the framing and the request checks follow the documents
directly; what a request *means* is the marker's (:class:`RegisterSpace`, implemented by
:class:`~markctl.simulator.peen_modbus.ModbusMarkerSimulator` from the profile's map).

From *MODBUS Application Protocol Specification V1.1b3* (§6 per function, §7 exception codes):

* each function's state diagram checks, in order: function supported (else exception 01),
  quantity within its limit and byte count consistent (else 03), start address and
  start + quantity valid (else 02), then the device executes (its own refusal: 04, or 06 busy);
* quantity limits: read coils / discrete inputs 1..2000 (0x7D0), read holding / input registers
  1..125 (0x7D), write multiple coils 1..1968 (0x7B0) with byte count = ceil(N/8), write multiple
  registers 1..123 (0x7B) with byte count = 2N, read/write multiple registers (23) read 1..125 and
  write 1..121 (0x79); write single coil accepts only 0x0000 and 0xFF00 (else 03);
* an exception response is the request's function code + 0x80 and one exception code byte.

From *MODBUS over Serial Line V1.02* (§2.1, §2.4, §2.5.1): an RTU slave answers only requests
addressed to its own address; address 0 is a broadcast (writes are executed, nothing is answered);
a frame with a bad CRC is discarded without an answer. Frames are delimited here by their length,
known from the function code (a stream has no 3.5-character silence); a frame whose length cannot
be known is taken whole once the line has been quiet for t3.5 (at least 50 ms here, so a loaded
host does not cut frames apart).

From *MODBUS Messaging on TCP/IP Implementation Guide V1.0b* (§3.1.3, §4.4.1.2): MBAP header
(transaction id, protocol id 0, length = unit byte + PDU, unit id); a frame with another protocol
id or a length over 254 is not Modbus and closes the connection. A server addressed directly
answers its own unit id and 0xFF; other ids are answered exception 0x0B (gateway target device
failed to respond), as a TCP device that routes by unit id does, so a host with the wrong unit id
hears why at once instead of timing out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

__all__ = [
    "NO_REPLY",
    "Answer",
    "ExceptionCode",
    "ModbusWireServer",
    "RegisterSpace",
    "Request",
    "Table",
    "crc16",
]

log = logging.getLogger(__name__)


class ExceptionCode(IntEnum):
    """Modbus exception codes (Application Protocol §7)."""

    ILLEGAL_FUNCTION = 1
    ILLEGAL_ADDRESS = 2
    ILLEGAL_VALUE = 3
    DEVICE_FAILURE = 4
    DEVICE_BUSY = 6
    GATEWAY_NO_RESPONSE = 11


class Table(IntEnum):
    """The four Modbus data tables, named by their read function code."""

    COILS = 1
    DISCRETE_INPUTS = 2
    HOLDING = 3
    INPUT = 4


class _NoReply:
    """The device stays silent (an injected lost answer)."""


NO_REPLY = _NoReply()


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded, well-formed request PDU.

    ``table``/``address``/``count`` are what is read (or, for a plain write, written);
    ``values`` what is written (register words, or 0/1 for coils); FC22 carries its masks in
    ``and_mask``/``or_mask``; FC23 writes ``values`` at ``write_address`` then reads.
    """

    function_code: int
    table: Table
    address: int
    count: int
    values: tuple[int, ...] = ()
    write_address: int | None = None
    and_mask: int = 0
    or_mask: int = 0
    broadcast: bool = False

    @property
    def write(self) -> bool:
        return self.function_code in (5, 6, 15, 16, 22, 23)


#: What a device answers: words (registers), bits (coils/inputs), nothing to report (a write), an
#: exception, or silence.
Answer = list[int] | None | ExceptionCode | _NoReply


class RegisterSpace(Protocol):
    """The device behind the server: executes a well-formed request (address/value/state checks)."""

    async def execute(self, request: Request) -> Answer: ...


# --- PDU decoding ----------------------------------------------------------------------------

_READ_LIMITS = {1: 0x7D0, 2: 0x7D0, 3: 0x7D, 4: 0x7D}


def _u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "big")


def decode(pdu: bytes) -> Request | ExceptionCode:
    """A request, or the exception the specification's state diagram gives before execution."""
    fc = pdu[0]
    body = pdu[1:]
    if fc in _READ_LIMITS:
        if len(body) != 4:
            return ExceptionCode.ILLEGAL_VALUE
        count = _u16(body, 2)
        if not 1 <= count <= _READ_LIMITS[fc]:
            return ExceptionCode.ILLEGAL_VALUE
        return Request(fc, Table(fc), _u16(body, 0), count)
    if fc == 5:
        if len(body) != 4 or _u16(body, 2) not in (0x0000, 0xFF00):
            return ExceptionCode.ILLEGAL_VALUE
        return Request(fc, Table.COILS, _u16(body, 0), 1, (1 if _u16(body, 2) else 0,))
    if fc == 6:
        if len(body) != 4:
            return ExceptionCode.ILLEGAL_VALUE
        return Request(fc, Table.HOLDING, _u16(body, 0), 1, (_u16(body, 2),))
    if fc == 15:
        if len(body) < 5:
            return ExceptionCode.ILLEGAL_VALUE
        count, nbytes = _u16(body, 2), body[4]
        if not 1 <= count <= 0x7B0 or nbytes != (count + 7) // 8 or len(body) != 5 + nbytes:
            return ExceptionCode.ILLEGAL_VALUE
        bits = tuple((body[5 + i // 8] >> (i % 8)) & 1 for i in range(count))
        return Request(fc, Table.COILS, _u16(body, 0), count, bits)
    if fc == 16:
        if len(body) < 5:
            return ExceptionCode.ILLEGAL_VALUE
        count, nbytes = _u16(body, 2), body[4]
        if not 1 <= count <= 0x7B or nbytes != 2 * count or len(body) != 5 + nbytes:
            return ExceptionCode.ILLEGAL_VALUE
        words = tuple(_u16(body, 5 + 2 * i) for i in range(count))
        return Request(fc, Table.HOLDING, _u16(body, 0), count, words)
    if fc == 22:
        if len(body) != 6:
            return ExceptionCode.ILLEGAL_VALUE
        return Request(fc, Table.HOLDING, _u16(body, 0), 1, and_mask=_u16(body, 2), or_mask=_u16(body, 4))
    if fc == 23:
        if len(body) < 9:
            return ExceptionCode.ILLEGAL_VALUE
        rcount, wcount, nbytes = _u16(body, 2), _u16(body, 6), body[8]
        if not 1 <= rcount <= 0x7D or not 1 <= wcount <= 0x79:
            return ExceptionCode.ILLEGAL_VALUE
        if nbytes != 2 * wcount or len(body) != 9 + nbytes:
            return ExceptionCode.ILLEGAL_VALUE
        words = tuple(_u16(body, 9 + 2 * i) for i in range(wcount))
        return Request(fc, Table.HOLDING, _u16(body, 0), rcount, words, write_address=_u16(body, 4))
    return ExceptionCode.ILLEGAL_FUNCTION


def encode(request: Request, pdu: bytes, answer: list[int] | None) -> bytes:
    """The normal response PDU to ``request`` (``pdu`` is the request as received)."""
    fc = request.function_code
    if fc in (1, 2):
        bits = answer or []
        packed = bytearray((len(bits) + 7) // 8)
        for i, bit in enumerate(bits):
            if bit:
                packed[i // 8] |= 1 << (i % 8)
        return bytes([fc, len(packed)]) + bytes(packed)
    if fc in (3, 4, 23):
        words = answer or []
        return bytes([fc, 2 * len(words)]) + b"".join((w & 0xFFFF).to_bytes(2, "big") for w in words)
    if fc in (5, 6, 22):
        return pdu  # echo (Application Protocol §6.5, §6.6, §6.16)
    return pdu[:5]  # 15, 16: function, start address, quantity


def crc16(frame: bytes) -> bytes:
    """Modbus RTU CRC (polynomial 0xA001 reflected, init 0xFFFF), low byte first (Serial Line §6.2.2)."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def rtu_length(buf: bytes | bytearray) -> int | None:
    """Length of the RTU request frame at the start of ``buf`` (None: not known yet / unknowable)."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc in (1, 2, 3, 4, 5, 6):
        return 8
    if fc in (15, 16):
        return 9 + buf[6] if len(buf) >= 7 else None
    if fc == 22:
        return 10
    if fc == 23:
        return 13 + buf[10] if len(buf) >= 11 else None
    return None


# --- the server -------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Conn:
    writer: asyncio.StreamWriter
    task: asyncio.Task[object] | None = field(default_factory=asyncio.current_task)


class ModbusWireServer:
    """Serves one :class:`RegisterSpace` as unit ``unit`` over Modbus TCP, RTU over TCP, or RTU on a pty."""

    def __init__(self, space: RegisterSpace, unit: int, *, baud: int = 19200) -> None:
        self.space = space
        self.unit = unit
        # t3.5 at the line's baud rate (11 bits a character), never under 50 ms on a stream.
        self.silence_s = max(0.05, 3.5 * 11 / baud)
        self._servers: list[asyncio.Server] = []
        self._conns: set[_Conn] = set()
        self._pty: tuple[int, int] | None = None
        self._pty_buf = bytearray()
        self._pty_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _answer(self, pdu: bytes, broadcast: bool) -> bytes | None:
        """The response PDU to a request PDU (None: say nothing)."""
        if not pdu:
            return None
        decoded = decode(pdu)
        if isinstance(decoded, ExceptionCode):
            return None if broadcast else bytes([(pdu[0] | 0x80) & 0xFF, int(decoded)])
        if broadcast:
            if not decoded.write:
                return None  # a broadcast read is meaningless (Serial Line §2.1)
            decoded = Request(
                decoded.function_code, decoded.table, decoded.address, decoded.count, decoded.values,
                decoded.write_address, decoded.and_mask, decoded.or_mask, broadcast=True,
            )  # fmt: skip
        try:
            answer = await self.space.execute(decoded)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a device answers 04, it never dies (and never prints a traceback)
            log.error("modbus request %s failed in the device: %s", pdu[:6].hex(" "), exc)
            answer = ExceptionCode.DEVICE_FAILURE
        if broadcast or isinstance(answer, _NoReply):
            return None
        if isinstance(answer, ExceptionCode):
            return bytes([decoded.function_code | 0x80, int(answer)])
        return encode(decoded, pdu, answer)

    # --- Modbus TCP ----------------------------------------------------------------------------

    async def serve_tcp(self, host: str, port: int, *, rtu: bool = False) -> int:
        """Listen on ``host:port`` (0 = any free port); MBAP framing, or RTU frames over TCP."""
        handler = self._rtu_client if rtu else self._tcp_client
        server = await asyncio.start_server(handler, host, port)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            while True:
                header = await reader.readexactly(7)
                tid, proto, length, unit = _u16(header, 0), _u16(header, 2), _u16(header, 4), header[6]
                if proto != 0 or not 2 <= length <= 254:
                    log.warning(
                        "modbus/tcp: not a Modbus frame (protocol %d, length %d); closing", proto, length
                    )
                    return
                pdu = await reader.readexactly(length - 1)
                if unit not in (self.unit, 0xFF):
                    reply: bytes | None = bytes(
                        [(pdu[0] | 0x80) & 0xFF, int(ExceptionCode.GATEWAY_NO_RESPONSE)]
                    )
                else:
                    reply = await self._answer(pdu, broadcast=False)
                if reply is not None:
                    writer.write(tid.to_bytes(2, "big") + b"\0\0" + (len(reply) + 1).to_bytes(2, "big")
                                 + bytes([unit]) + reply)  # fmt: skip
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return  # the host left, or the server stops: a connection ends, it never raises
        finally:
            self._conns.discard(conn)
            writer.close()

    # --- Modbus RTU ----------------------------------------------------------------------------

    async def _rtu_frame(self, frame: bytes) -> bytes | None:
        """The RTU answer frame to one received frame (None: stay silent)."""
        if len(frame) < 4 or crc16(frame[:-2]) != frame[-2:]:
            return None  # Serial Line §2.5.1.1: a frame with a bad CRC is discarded
        unit, pdu = frame[0], frame[1:-2]
        if unit not in (self.unit, 0):
            return None  # not addressed to this device: silence on a shared bus
        reply = await self._answer(pdu, broadcast=unit == 0)
        if reply is None:
            return None
        out = bytes([unit]) + reply
        return out + crc16(out)

    async def _rtu_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        self._conns.add(conn)
        buf = bytearray()
        try:
            while True:
                need = rtu_length(buf)
                if need is not None and len(buf) >= need:
                    frame, buf = bytes(buf[:need]), buf[need:]
                else:
                    try:
                        async with asyncio.timeout(self.silence_s if buf else None):
                            chunk = await reader.read(512)
                    except TimeoutError:
                        frame, buf = bytes(buf), bytearray()  # the line went quiet: the frame is whole
                    else:
                        if not chunk:
                            return
                        buf += chunk
                        continue
                reply = await self._rtu_frame(frame)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return  # the host left, or the server stops: a connection ends, it never raises
        finally:
            self._conns.discard(conn)
            writer.close()

    def serve_rtu_pty(self) -> str:
        """RTU on a pseudo-terminal (raw mode, like a serial port); returns the path the host opens."""
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        # The slave stays open here too, so the master never reads EIO while no host has it open.
        self._pty = (master, slave)
        loop.add_reader(master, self._on_pty)
        return os.ttyname(slave)

    def _on_pty(self) -> None:
        assert self._pty is not None
        try:
            data = os.read(self._pty[0], 4096)
        except OSError:
            return
        self._pty_buf += data
        self._pty_cut(quiet=False)

    def _pty_cut(self, *, quiet: bool) -> None:
        if self._pty_timer is not None:
            self._pty_timer.cancel()
            self._pty_timer = None
        while self._pty_buf:
            need = rtu_length(self._pty_buf)
            if need is not None and len(self._pty_buf) >= need:
                frame = bytes(self._pty_buf[:need])
                del self._pty_buf[:need]
            elif quiet:
                frame = bytes(self._pty_buf)
                self._pty_buf.clear()
            else:
                loop = asyncio.get_running_loop()
                self._pty_timer = loop.call_later(self.silence_s, self._pty_cut_quiet)
                return
            task = asyncio.get_running_loop().create_task(self._pty_answer(frame))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _pty_cut_quiet(self) -> None:
        self._pty_timer = None
        self._pty_cut(quiet=True)

    async def _pty_answer(self, frame: bytes) -> None:
        reply = await self._rtu_frame(frame)
        if reply is None or self._pty is None:
            return
        view = memoryview(reply)
        while view:
            try:
                view = view[os.write(self._pty[0], view) :]
            except BlockingIOError:
                await asyncio.sleep(0.001)
            except OSError:
                return

    # --- lifecycle -------------------------------------------------------------------------------

    def drop_clients(self) -> None:
        """Close every TCP connection (the link drops; the server keeps listening)."""
        for conn in list(self._conns):
            conn.writer.close()

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        handlers = [c.task for c in self._conns if c.task is not None]
        self.drop_clients()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers = []
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._pty_timer is not None:
            self._pty_timer.cancel()
        if self._pty is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._pty[0])
            for fd in self._pty:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._pty = None
