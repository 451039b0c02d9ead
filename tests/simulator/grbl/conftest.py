"""A raw host for the GRBL simulator: send bytes, wait for lines, no driver in between."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from markctl.profiles import load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.grbl import GrblSimulator
from markctl.simulator.workpiece import Workpiece


class Host:
    """The far end of the simulator's serial line, as a test sees it."""

    def __init__(self, sim: GrblSimulator) -> None:
        self.sim = sim
        self.rx = bytearray()
        self.hung_up: str | None = None
        self._event = asyncio.Event()
        self._read = 0
        sim.attach(self._feed, self._hang_up)

    def _feed(self, data: bytes) -> None:
        self.rx += data
        self._event.set()

    def _hang_up(self, reason: str) -> None:
        self.hung_up = reason
        self._event.set()

    def send(self, data: bytes | str) -> None:
        self.sim.receive(data.encode() if isinstance(data, str) else data)

    @property
    def lines(self) -> list[str]:
        return [line for line in self.rx.decode("latin-1").split("\r\n")[:-1] if line]

    def new_lines(self) -> list[str]:
        """Complete lines not returned by a previous call (status reports: see :meth:`status`)."""
        all_lines = self.rx.decode("latin-1").split("\r\n")[:-1]
        fresh = [line for line in all_lines[self._read :] if line and not line.startswith("<")]
        self._read = len(all_lines)
        return fresh

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async def wait() -> None:
            while not predicate():
                self._event.clear()
                try:
                    await asyncio.wait_for(self._event.wait(), 0.05)
                except TimeoutError:
                    pass

        await asyncio.wait_for(wait(), timeout)

    async def responses(self, count: int, timeout: float = 10.0) -> list[str]:
        """Wait until ``count`` new ok/error lines arrived; returns every new line."""
        got: list[str] = []

        def done() -> bool:
            got.extend(self.new_lines())
            return sum(1 for g in got if g == "ok" or g.startswith("error:")) >= count

        await self.until(done, timeout)
        return got

    async def command(self, line: str) -> list[str]:
        self.send(line + "\n")
        return await self.responses(1)

    async def status(self) -> str:
        before = len([line for line in self.lines if line.startswith("<")])
        self.send(b"?")
        await self.until(lambda: len([line for line in self.lines if line.startswith("<")]) > before)
        return [line for line in self.lines if line.startswith("<")][-1]

    async def idle(self) -> str:
        """Poll until the machine reports Idle (the planner drained)."""
        for _ in range(2000):
            report = await self.status()
            if report.startswith("<Idle"):
                return report
            await asyncio.sleep(0.002)
        raise AssertionError(f"never idle: {report}")


@pytest.fixture
async def make_host() -> AsyncIterator[Callable[..., Awaitable[Host]]]:
    made: list[GrblSimulator] = []

    async def make(profile_id: str = "grbl-1.1", **kwargs: Any) -> Host:
        kwargs.setdefault("clock", make_clock("instant"))
        kwargs.setdefault("workpiece", Workpiece(100, 100, px_per_mm=10))
        sim = GrblSimulator(load_profile(profile_id), **kwargs)
        made.append(sim)
        host = Host(sim)
        await sim.start()
        await host.until(lambda: len(host.lines) >= 1)
        host.new_lines()
        return host

    yield make
    for sim in made:
        await sim.stop()
