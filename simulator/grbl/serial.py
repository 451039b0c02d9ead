"""The serial line (Grbl's serial.c): bytes on the wire at the baud rate, the RX interrupt that picks
realtime bytes out and rings the rest, and output framing. Kept apart so line-level behaviour
(overflow, EEPROM-blocked reception, lost responses) is in one file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from markctl.simulator.base import HangUp, Send
from markctl.simulator.grbl.state import _State

_SLICE = 16  # bytes delivered per wire event


class _Serial(_State):
    """The wire and the RX ring."""

    def attach(self, send: Send, hang_up: HangUp) -> None:
        self._send, self._hang_up = send, hang_up
        if self._started and self.reset_on_attach:
            # Opening a USB-serial port pulses DTR, which resets an Arduino-based Grbl.
            self._soft_reset(power_cycle=True)

    def detach(self) -> None:
        self._send = None
        self._hang_up = None

    @property
    def rx_free(self) -> int:
        return self.proto.rx_buffer_bytes - len(self._ring)

    async def _rx_loop(self) -> None:
        while True:
            if not self._rx_wire:
                self._rx_kick.clear()
                await self._rx_kick.wait()
                continue
            due, piece = self._rx_wire[0]
            wait = due - self.clock.now()
            if wait > 0:
                await self.clock.sleep(wait)
            self._rx_wire.popleft()
            for byte in piece:
                self._isr(byte)
                if byte in (0x0A, 0x0D):
                    # A complete line: the protocol loop gets to act on it (e.g. start an EEPROM
                    # write that shuts the RX interrupt) before the rest of the slice arrives.
                    await asyncio.sleep(0)
            await asyncio.sleep(0)

    def _out(self, data: bytes) -> None:
        if self._send is None:
            return
        buf = bytearray(data)
        for fault in self.faults:
            if fault.kind == "garble" and self._bytes_sent < fault.at <= self._bytes_sent + len(buf):
                mask = int(fault.arg, 0) if fault.arg else 0x80
                buf[int(fault.at) - self._bytes_sent - 1] ^= mask & 0xFF
                self.fault_times.setdefault("garble", self.clock.now())
        self._bytes_sent += len(buf)
        now = self.clock.now()
        done = max(now, self._tx_wire_free) + len(buf) * self.byte_time_s
        self._tx_wire_free = done
        due = done + self.host_latency_s + self._slow_extra
        if due <= now and not self._tx_wire:
            self._send(bytes(buf))
            return
        self._tx_wire.append((due, bytes(buf)))
        self._tx_kick.set()

    async def _tx_loop(self) -> None:
        while True:
            if not self._tx_wire:
                self._tx_kick.clear()
                await self._tx_kick.wait()
                continue
            due, data = self._tx_wire[0]
            wait = due - self.clock.now()
            if wait > 0:
                await self.clock.sleep(wait)
            self._tx_wire.popleft()
            if self._send is not None:
                self._send(data)

    def _line_out(self, text: str) -> None:
        self._out(text.encode("ascii") + b"\r\n")

    def _banner(self) -> None:
        self._out(b"\r\n" + self.proto.banner.encode("ascii") + b"\r\n")

    def _isr(self, byte: int) -> None:
        if self._send is None:
            return
        if self.clock.now() < self._eeprom_busy_until:
            # AVR EEPROM writes run with the RX interrupt off: the byte never arrives (§1.2).
            self.rx_eeprom_lost_bytes += 1
            self._corrupt_ordinals.add(self._ring_lines + 1)
            return
        if byte in self.realtime:
            self._realtime_command(byte)
            return
        if len(self._ring) >= self.proto.rx_buffer_bytes:
            self.rx_overflow_bytes += 1
            self._corrupt_ordinals.add(self._ring_lines + 1)
            return
        self._ring.append(byte)
        if byte in (0x0A, 0x0D):
            self._ring_lines += 1
        self._ring_kick.set()

    def _respond(self, number: int, text: str) -> None:
        if number in self._silenced:
            self._silenced.discard(number)
            return
        self.responses_sent += 1
        self._line_out(text)

    def _respond_then(self, number: int, action: Callable[[], None]) -> None:
        """Answer ``ok`` now and run ``action`` right after it, as Grbl does for a command that only
        sets a realtime flag ($SLP) or calls mc_reset() ($C off, $RST): the ok is printed by the
        protocol loop before the realtime loop acts on the flag."""
        self._respond(number, "ok")
        self._silenced.add(number)  # the caller's own "ok" for this line is already out
        asyncio.get_running_loop().call_soon(action)
