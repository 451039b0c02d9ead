"""The inbound half shared by the thread-fed and the in-process transports."""

from __future__ import annotations

import asyncio

from markctl.errors import MachineConnectionError


class Inbound:
    """Chunks of received bytes, plus the reason the link ended (once it has)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._lost: MachineConnectionError | None = None

    def feed(self, data: bytes) -> None:
        if data:
            self._chunks.put_nowait(bytes(data))

    def lose(self, reason: str) -> None:
        if self._lost is None:
            self._lost = MachineConnectionError(f"{self._name}: link lost: {reason}", address=self._name)
        self._chunks.put_nowait(b"")  # wake a waiting reader

    @property
    def lost(self) -> MachineConnectionError | None:
        return self._lost

    async def read(self, timeout: float | None) -> bytes:
        if self._chunks.empty() and self._lost is not None:
            raise self._lost
        try:
            async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancellation
                chunk = await self._chunks.get()
        except TimeoutError:
            return b""
        if not chunk:
            if self._lost is not None:
                raise self._lost
            return b""
        # Coalesce what is already waiting so a driver parses bigger pieces.
        parts = [chunk]
        while not self._chunks.empty():
            more = self._chunks.get_nowait()
            if not more:
                self._chunks.put_nowait(more)
                break
            parts.append(more)
        return b"".join(parts)
