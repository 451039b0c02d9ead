"""The ``$n`` settings store and its EEPROM timing (Grbl's settings.c): what the setting table holds and
how values are printed, so ``$$`` and ``$n=`` have a single source of truth."""

from __future__ import annotations

from markctl.simulator.grbl.serial import _Serial

EEPROM_WRITE_S = 0.025  # AVR EEPROM: ~3.3 ms per byte; a setting is a few bytes plus checksum


_KNOWN_SETTINGS = frozenset(
    {0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 20, 21, 22, 23, 24, 25, 26, 27, 30, 31, 32}
    | set(range(100, 103))
    | set(range(110, 113))
    | set(range(120, 123))
    | set(range(130, 133))
)


def _fmt_setting(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:.3f}"


class _Settings(_Serial):
    """The settings store and EEPROM writes."""

    async def _eeprom_write(self) -> None:
        """AVR Grbl writes EEPROM with the RX interrupt off, before it answers (§1.2)."""
        if self.dialect == "grbl":
            self._eeprom_busy_until = self.clock.now() + EEPROM_WRITE_S
            await self.clock.sleep(EEPROM_WRITE_S)
