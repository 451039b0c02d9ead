"""Byte transports over pyserial's ``serial_for_url``.

pyserial has no asyncio API, so a daemon reader thread blocks in ``read`` and hands chunks to
the event loop with ``call_soon_threadsafe``; writes run in the default executor so a slow port
never stalls the loop. The same class serves device paths (``/dev/ttyUSB0``, ``COM3``),
``socket://host:port`` (raw TCP, e.g. ser2net or a simulator's TCP server), ``rfc2217://`` and
``loop://``. Every pyserial/OS error becomes :class:`MachineConnectionError` at this boundary.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any, ClassVar, Literal

import serial
from pydantic import Field

from markctl.drivers.transports._queue import Inbound
from markctl.drivers.transports.base import TransportOptions
from markctl.errors import MachineConnectionError

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


class SerialOptions(TransportOptions):
    """Options of a serial line (``?baud=115200&parity=N``)."""

    baud: int = Field(default=115200, gt=0, le=4_000_000)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    xonxoff: bool = False
    rtscts: bool = False
    dtr: bool | None = Field(default=None, description="Force DTR before opening (None: leave it).")


class NetworkOptions(TransportOptions):
    """Options of a TCP byte stream."""

    connect_timeout: float = Field(default=5.0, gt=0, le=120)


class SerialTransport:
    """A serial port, or any pyserial URL, as a :class:`ByteTransport`."""

    options_model: ClassVar[type[TransportOptions]] = SerialOptions

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        self._url = url
        self._options = options if options is not None else self.options_model()
        self._port: Any = None
        self._inbound = Inbound(url)
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()

    @property
    def is_open(self) -> bool:
        return self._port is not None and self._inbound.lost is None

    @property
    def description(self) -> str:
        return self._url

    def _pyserial_url(self) -> str:
        return self._url

    def _pyserial_kwargs(self) -> dict[str, Any]:
        opts = self._options
        if not isinstance(opts, SerialOptions):
            return {}
        return {
            "baudrate": opts.baud,
            "bytesize": opts.bytesize,
            "parity": _PARITY[opts.parity],
            "stopbits": opts.stopbits,
            "xonxoff": opts.xonxoff,
            "rtscts": opts.rtscts,
        }

    async def open(self) -> None:
        if self._port is not None:
            return
        if self._inbound.lost is not None:
            self._inbound = Inbound(self._url)  # a reopen after a lost link starts afresh
        loop = asyncio.get_running_loop()
        try:
            port = await loop.run_in_executor(None, self._open_blocking)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise MachineConnectionError(f"cannot open {self._url}: {exc}", address=self._url) from exc
        self._port = port
        self._closing.clear()
        self._start_reading(loop, port)

    def _start_reading(self, loop: asyncio.AbstractEventLoop, port: Any) -> None:
        """A thread blocks on the port and hands what it reads to the loop."""
        self._reader = threading.Thread(
            target=self._read_forever, args=(loop, port), name=f"markctl-read {self._url}", daemon=True
        )
        self._reader.start()

    def _stop_reading(self) -> None:
        """Nothing to do for the reading thread: it sees ``_closing`` within its read timeout."""

    def _open_blocking(self) -> Any:
        port = serial.serial_for_url(self._pyserial_url(), do_not_open=True, **self._pyserial_kwargs())
        port.timeout = 0.05  # bounded blocking read, so close() is noticed promptly
        if isinstance(self._options, SerialOptions) and self._options.dtr is not None:
            port.dtr = self._options.dtr
        port.open()
        return port

    def _read_forever(self, loop: asyncio.AbstractEventLoop, port: Any) -> None:
        reason = "closed"
        try:
            while not self._closing.is_set():
                data = port.read(max(1, port.in_waiting or 1))
                if data:
                    loop.call_soon_threadsafe(self._inbound.feed, data)
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if not self._closing.is_set():
            try:
                loop.call_soon_threadsafe(self._inbound.lose, reason)
            except RuntimeError:  # loop already closed
                pass

    async def close(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        self._closing.set()
        self._stop_reading()
        reader = self._reader
        loop = asyncio.get_running_loop()
        if reader is not None:
            await loop.run_in_executor(None, reader.join, 2.0)
        try:
            await loop.run_in_executor(None, port.close)
        except (serial.SerialException, OSError):
            pass

    async def write(self, data: bytes) -> None:
        port = self._port
        if port is None:
            raise MachineConnectionError(f"{self._url}: not open", address=self._url)
        if self._inbound.lost is not None:
            raise self._inbound.lost
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, _write_all, port, bytes(data))
        except (serial.SerialException, OSError) as exc:
            self._inbound.lose(str(exc))
            raise MachineConnectionError(f"{self._url}: write failed: {exc}", address=self._url) from exc

    async def read(self, timeout: float | None = None) -> bytes:
        return await self._inbound.read(timeout)


def _write_all(port: Any, data: bytes) -> None:
    port.write(data)
    port.flush()


class TCPTransport(SerialTransport):
    """Raw TCP (``grbl+tcp://host:port``), through pyserial's ``socket://`` handler."""

    options_model: ClassVar[type[TransportOptions]] = NetworkOptions

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        super().__init__(url, options)
        self._writing: asyncio.Future[None] | None = None  # a write finishing in a thread
        self._on_loop: tuple[asyncio.AbstractEventLoop, int] | None = None  # reading on the loop

    def _pyserial_url(self) -> str:
        return self._url if "://" in self._url else f"socket://{self._url}"

    async def write(self, data: bytes) -> None:
        """Straight onto the socket when it takes all of it at once (a G-code line nearly always
        does), else the rest through a thread as on a serial port.

        A thread per write costs the event loop a hand-off each way for every line streamed; with
        16 machines on TCP that was a good part of the loop's work. pyserial's socket is
        non-blocking, so a send here never waits. While a write is still finishing in a thread,
        the next ones queue behind it (bytes keep their order).
        """
        port = self._port
        sock = getattr(port, "_socket", None)
        if sock is None or self._inbound.lost is not None or self._writing is not None:
            await self._write_in_thread(data)
            return
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._inbound.lose(str(exc))
            raise MachineConnectionError(f"{self._url}: write failed: {exc}", address=self._url) from exc
        if sent < len(data):
            await self._write_in_thread(bytes(data[sent:]))

    async def _write_in_thread(self, data: bytes) -> None:
        previous = self._writing
        done = asyncio.get_running_loop().create_future()
        self._writing = done
        try:
            if previous is not None:
                await asyncio.shield(previous)
            await super().write(data)
        finally:
            done.set_result(None)
            if self._writing is done:
                self._writing = None

    def _start_reading(self, loop: asyncio.AbstractEventLoop, port: Any) -> None:
        """Read the socket on the event loop itself, not in a thread.

        A thread per machine woke 20 times a second to poll and handed every piece to the loop
        through ``call_soon_threadsafe``; pyserial's ``socket://`` also says 1 byte is waiting
        whatever is buffered, so a status report reached the loop as ~60 one-byte callbacks. With
        16 machines those threads and hand-offs competed with the loop for the interpreter. The
        loop now reads whatever has arrived when the socket is readable.
        """
        sock = getattr(port, "_socket", None)  # pyserial's socket:// handler keeps its socket here
        if sock is None:
            super()._start_reading(loop, port)
            return
        self._on_loop = (loop, sock.fileno())
        loop.add_reader(sock.fileno(), self._on_readable, sock)

    def _on_readable(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._stop_reading()
            self._inbound.lose(f"{type(exc).__name__}: {exc}")
            return
        if not data:
            self._stop_reading()
            self._inbound.lose("the machine closed the connection")
            return
        self._inbound.feed(data)

    def _stop_reading(self) -> None:
        if self._on_loop is not None:
            loop, fd = self._on_loop
            self._on_loop = None
            loop.remove_reader(fd)


class RFC2217Transport(SerialTransport):
    """Telnet COM-port control (``grbl+rfc2217://host:port``)."""

    options_model: ClassVar[type[TransportOptions]] = SerialOptions

    def _pyserial_url(self) -> str:
        return self._url if "://" in self._url else f"rfc2217://{self._url}"
