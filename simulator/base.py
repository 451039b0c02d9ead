"""What every simulated byte-protocol machine offers, whatever carries its bytes.

A :class:`ByteDevice` is one model object. Its host side is two callables handed to
:meth:`ByteDevice.attach`: ``send`` (bytes the machine transmits) and ``hang_up`` (the simulated
link drops). The same object sits behind an in-process pipe, a pseudo-terminal or a TCP socket
(see :mod:`markctl.simulator.serve`), so a driver cannot tell which.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from markctl.profiles import FirmwareProfile
from markctl.simulator.workpiece import Workpiece

__all__ = ["ByteDevice", "HangUp", "Send"]

Send = Callable[[bytes], None]
HangUp = Callable[[str], None]


@runtime_checkable
class ByteDevice(Protocol):
    """A simulated machine that speaks a byte protocol."""

    profile: FirmwareProfile
    workpiece: Workpiece

    def attach(self, send: Send, hang_up: HangUp) -> None:
        """Connect the host side (power-on / cable plugged in); a device may greet here."""

    def detach(self) -> None:
        """The host side went away (port closed); the machine keeps its state."""

    def receive(self, data: bytes) -> None:
        """Bytes from the host, in any chunking."""

    async def start(self) -> None:
        """Start background activity (motion, cycles, timers) on the running event loop."""

    async def stop(self) -> None:
        """Stop background activity."""
