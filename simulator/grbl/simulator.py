"""The public face of the GRBL-family simulator: the ByteDevice interface a transport attaches to and
the read-only views tests assert on. Behaviour lives in the layers it inherits from."""

from __future__ import annotations

import asyncio
import contextlib

from markctl.simulator.grbl.blocks import BurnRecord, _p3
from markctl.simulator.grbl.protocol import _Protocol
from markctl.simulator.grbl.serial import _SLICE


class GrblSimulator(_Protocol):
    """A GRBL-family machine; see the package docstring for what is modelled and what is not."""

    def receive(self, data: bytes) -> None:
        if not data or self._send is None:
            return
        now = self.clock.now()
        start = max(now + self.host_latency_s, self._rx_wire_free)
        for i in range(0, len(data), _SLICE):
            piece = data[i : i + _SLICE]
            start += len(piece) * self.byte_time_s
            self._rx_wire.append((start, piece))
        self._rx_wire_free = start
        self._rx_kick.set()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for coro in (self._rx_loop(), self._tx_loop(), self._motion_loop()):
            self._tasks.append(asyncio.create_task(coro))
        self._restart_protocol_loop()
        for fault in self.faults:
            if fault.trigger == "t":
                self._tasks.append(asyncio.create_task(self._timed_fault(fault)))
        self._banner()
        if self.state == "Alarm":  # homing enabled: power-up locks until $H or $X (§1.5)
            self._line_out("[MSG:'$H'|'$X' to unlock]")

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        if self._main_task is not None:
            tasks.append(self._main_task)
            self._main_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._started = False

    @property
    def position(self) -> tuple[float, float, float]:
        """Machine position now."""
        return _p3(self._position_now())

    @property
    def physical_position(self) -> tuple[float, float, float]:
        """Where the head really is (differs from :attr:`position` after a power cycle until homing)."""
        return _p3(self._phys(self._position_now()))

    @property
    def beam_on(self) -> bool:
        """Whether the laser is emitting at this instant."""
        return self._beam_fraction_now() > 0

    @property
    def planner_depth(self) -> int:
        return len(self._planner)

    def burned_after(self, t: float) -> list[BurnRecord]:
        """Burned pieces that ended after simulated time ``t``."""
        return [b for b in self.burn_log if b.t1 > t + 1e-9]
