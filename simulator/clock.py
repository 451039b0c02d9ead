"""Simulation time: instant, scaled or realtime.

Every simulated duration (motion, dwell, a marking cycle) goes through :meth:`Clock.sleep`, so one
switch changes a simulator from real time (commissioning, demos against a human) to scaled time
(x100 for tests that still want ordering by time) to **instant**, where simulated time jumps ahead
whenever the simulation has nothing else to do.

The instant clock is a small discrete-event scheduler: sleepers wait in a heap ordered by their
wake time, and time advances to the earliest one only after the event loop has gone a few turns
without anyone else becoming ready, so concurrent simulated activities (motion and a fault timer,
say) still happen in simulated-time order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import re
import time
from abc import ABC, abstractmethod

__all__ = ["Clock", "InstantClock", "RealtimeClock", "ScaledClock", "make_clock"]


class Clock(ABC):
    """Simulated time in seconds since the clock was made."""

    @abstractmethod
    def now(self) -> float:
        """Current simulated time."""

    @abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass."""

    @property
    def description(self) -> str:
        return type(self).__name__


class RealtimeClock(Clock):
    """Simulated time is wall time."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    @property
    def description(self) -> str:
        return "realtime"


class ScaledClock(RealtimeClock):
    """Simulated time runs ``factor`` times faster than wall time."""

    def __init__(self, factor: float) -> None:
        if not factor > 0:
            raise ValueError(f"clock factor must be positive, got {factor}")
        super().__init__()
        self.factor = factor

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.factor

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.factor)

    @property
    def description(self) -> str:
        return f"scaled x{self.factor:g}"


class InstantClock(Clock):
    """Simulated time jumps to the next wake-up as soon as the simulation is otherwise idle."""

    #: Event-loop turns without a new sleeper before time may jump (lets ready tasks register).
    SETTLE_TURNS = 3

    def __init__(self) -> None:
        self._now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._advancing = False

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._seq), future))
        if not self._advancing:
            self._advancing = True
            loop.call_soon(self._settle, self.SETTLE_TURNS)
        await future

    def _settle(self, turns: int) -> None:
        loop = asyncio.get_running_loop()
        if turns > 0:
            loop.call_soon(self._settle, turns - 1)
            return
        while self._sleepers and self._sleepers[0][2].cancelled():
            heapq.heappop(self._sleepers)
        if not self._sleepers:
            self._advancing = False
            return
        wake, _, future = heapq.heappop(self._sleepers)
        self._now = max(self._now, wake)
        future.set_result(None)
        loop.call_soon(self._settle, self.SETTLE_TURNS)

    @property
    def description(self) -> str:
        return "instant"


def make_clock(spec: str) -> Clock:
    """``instant``, ``realtime``, or ``scaled:F`` / ``xF`` (F times faster than real time)."""
    text = spec.strip().lower()
    if text == "instant":
        return InstantClock()
    if text == "realtime":
        return RealtimeClock()
    match = re.fullmatch(r"(?:scaled:|x)(\d+(?:\.\d+)?)", text)
    if match:
        return ScaledClock(float(match.group(1)))
    raise ValueError(f"clock {spec!r}: expected instant, realtime or scaled:FACTOR")
