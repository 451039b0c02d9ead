"""Expose a simulated byte device on a pseudo-terminal or a TCP port.

External tools (a G-code sender, a terminal, ``socat``) and markctl's own serial/TCP drivers can
then talk to the simulator as they would to hardware: ``/dev/pts/N`` behaves like a serial port
(raw mode, so CR/LF and bytes >= 0x80 pass untouched), TCP like a ser2net bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty

from markctl.simulator.base import ByteDevice

__all__ = ["PtyBridge", "serve_tcp"]

log = logging.getLogger(__name__)


class PtyBridge:
    """Owns a pty pair; the device is wired to the master, the host opens :attr:`path`."""

    def __init__(self, device: ByteDevice) -> None:
        self.device = device
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        os.set_blocking(self._master, False)
        self._loop.add_reader(self._master, self._on_readable)
        self.device.attach(self._send, self._hang_up)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError:
            return  # no host has the slave open right now (EIO); keep listening
        if data:
            self.device.receive(data)

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                continue
            except OSError:
                return
            view = view[written:]

    def _hang_up(self, reason: str) -> None:
        self.close()

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._master)
            self._loop = None
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.device.detach()


async def serve_tcp(device: ByteDevice, host: str = "127.0.0.1", port: int = 0) -> tuple[asyncio.Server, int]:
    """Serve ``device`` to one TCP client at a time; returns the server and the bound port."""
    busy = asyncio.Lock()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if busy.locked():
            # One host at a time, like the serial port it stands for; the first is not disturbed.
            log.warning("refused a TCP client from %s: another host is connected (one at a time)",
                        writer.get_extra_info("peername"))  # fmt: skip
            writer.close()
            return
        async with busy:
            closed = asyncio.Event()

            def hang_up(reason: str) -> None:
                closed.set()
                writer.close()

            device.attach(writer.write, hang_up)
            try:
                while not closed.is_set():
                    data = await reader.read(4096)
                    if not data:
                        break
                    device.receive(data)
            except (ConnectionError, OSError):
                pass
            finally:
                device.detach()
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()

    server = await asyncio.start_server(on_client, host, port)
    bound = server.sockets[0].getsockname()[1]
    return server, int(bound)
