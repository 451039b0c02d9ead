"""An in-process byte pipe: the near end is a transport, the far end a simulated machine.

``markctl`` wires it (drivers never import the simulator): whatever the driver writes goes to
``sink`` (the simulator's input), and the simulator calls :meth:`PipeTransport.feed` with what the
machine sends back, or :meth:`PipeTransport.hang_up` when the simulated link drops. ``on_open`` runs
on every open, so the simulator attaches when the driver connects and again when it reopens a
dropped link (as a USB cable plugged back in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from markctl.drivers.transports._queue import Inbound
from markctl.drivers.transports.base import TransportOptions
from markctl.errors import MachineConnectionError


class PipeOptions(TransportOptions):
    """The pipe has no options of its own; simulator options are validated by markctl."""


class PipeTransport:
    """Near end of an in-process pipe."""

    options_model: ClassVar[type[TransportOptions]] = PipeOptions

    def __init__(
        self, name: str, sink: Callable[[bytes], None], *, on_open: Callable[[], None] | None = None
    ) -> None:
        self._name = name
        self._sink = sink
        self._on_open = on_open  # the far end plugs in (a simulator attaches, and may greet)
        self._inbound = Inbound(name)
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open and self._inbound.lost is None

    @property
    def description(self) -> str:
        return self._name

    async def open(self) -> None:
        if self._inbound.lost is not None:
            self._inbound = Inbound(self._name)  # the cable is plugged back in
        self._open = True
        if self._on_open is not None:
            self._on_open()

    async def close(self) -> None:
        self._open = False

    async def write(self, data: bytes) -> None:
        if not self._open:
            raise MachineConnectionError(f"{self._name}: not open", address=self._name)
        if self._inbound.lost is not None:
            raise self._inbound.lost
        self._sink(bytes(data))

    async def read(self, timeout: float | None = None) -> bytes:
        return await self._inbound.read(timeout)

    # --- far end (called by the wiring on the simulator's behalf) --------------------------

    def feed(self, data: bytes) -> None:
        """Bytes the simulated machine sends to the host."""
        self._inbound.feed(data)

    def hang_up(self, reason: str = "simulated disconnect") -> None:
        """The simulated link drops: reads and writes raise MachineConnectionError from now on."""
        self._inbound.lose(reason)
