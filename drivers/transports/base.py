"""The byte-transport contract every driver codes against."""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict


class TransportOptions(BaseModel):
    """Base of every transport's option model: unknown options are an error, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@runtime_checkable
class ByteTransport(Protocol):
    """An open-able, binary-safe, full-duplex byte stream.

    ``read`` returns at least one byte, waits at most ``timeout`` seconds (``None`` = forever)
    and returns ``b""`` only on timeout. A lost link (EOF, OS error) raises
    :class:`~markctl.errors.MachineConnectionError` from ``read`` and ``write`` alike.
    """

    options_model: ClassVar[type[TransportOptions]]

    @property
    def is_open(self) -> bool: ...

    @property
    def description(self) -> str: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def read(self, timeout: float | None = None) -> bytes: ...
