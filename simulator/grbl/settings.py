"""The ``$n`` settings store and its EEPROM timing (Grbl's settings.c): what the setting table holds,
which values a write accepts, and how ``$$`` prints them, so ``$$`` and ``$n=`` have one source of truth.

The table itself (defaults, which values are uint8/flags) is in :mod:`.defaults`.
"""

from __future__ import annotations

import math

from markctl.simulator.grbl.defaults import FLAG_SETTINGS, GRBL_DEFAULTS, UINT8_SETTINGS
from markctl.simulator.grbl.serial import _Serial

EEPROM_WRITE_S = 0.025  # AVR EEPROM: ~3.3 ms per byte; a setting is a few bytes plus checksum


class _Settings(_Serial):
    """The settings store and EEPROM writes."""

    def _store_setting(self, key: int, value: float) -> int:
        """settings_store_global_setting(): 0, or the status code of a rejected write."""
        if value < 0:
            return 4
        if key not in GRBL_DEFAULTS:
            return 3
        if key in UINT8_SETTINGS:
            value = float(math.trunc(value) % 256)
            if key in FLAG_SETTINGS:
                value = 1.0 if value else 0.0
        if key == 0 and value < 3:
            return 6  # minimum step pulse: 3 microseconds
        if key == 20 and value and not self.settings.get(22, 0):
            return 10  # soft limits need homing: machine space is only known after $H
        self.settings[key] = value
        if key == 22 and not value:
            self.settings[20] = 0.0  # disabling homing forces soft limits off (settings.c)
        return 0

    async def _eeprom_write(self) -> None:
        """AVR Grbl writes EEPROM with the RX interrupt off, before it answers (§1.2)."""
        if self.dialect == "grbl":
            self._eeprom_busy_until = self.clock.now() + EEPROM_WRITE_S
            await self.clock.sleep(EEPROM_WRITE_S)
