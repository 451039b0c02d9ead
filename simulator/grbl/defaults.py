"""Grbl's compiled-in setting defaults and how ``$$`` prints each value.

The machine's values come from the firmware profile (``[protocol.settings]``); every setting the
profile does not name keeps the firmware's compiled-in default (:data:`GRBL_DEFAULTS`, Grbl 1.1h
``defaults.h`` DEFAULTS_GENERIC), exactly as a board flashed with those defaults and then configured
with the profile's ``$n=v`` lines holds them. The profile stays the one place a machine's values live.
"""

from __future__ import annotations

import math

#: Grbl 1.1h defaults.h, DEFAULTS_GENERIC: the 34 settings ``$$`` prints, in its order.
GRBL_DEFAULTS: dict[int, float] = {
    0: 10, 1: 25, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 10: 1, 11: 0.010, 12: 0.002, 13: 0,
    20: 0, 21: 0, 22: 0, 23: 0, 24: 25.0, 25: 500.0, 26: 250, 27: 1.0, 30: 1000.0, 31: 0.0, 32: 0,
    100: 250.0, 101: 250.0, 102: 250.0, 110: 500.0, 111: 500.0, 112: 500.0,
    120: 10.0, 121: 10.0, 122: 10.0, 130: 200.0, 131: 200.0, 132: 200.0,
}  # fmt: skip
# report.c: these print as uint8 (report_util_uint8_setting); $30/$31 with N_DECIMAL_RPMVALUE = 0
# decimals; every other value with N_DECIMAL_SETTINGVALUE = 3.
UINT8_SETTINGS = frozenset({0, 1, 2, 3, 4, 5, 6, 10, 13, 20, 21, 22, 23, 26, 32})
FLAG_SETTINGS = frozenset({4, 5, 6, 13, 20, 21, 22, 32})  # stored as one bit: any non-zero value reads 1
RPM_SETTINGS = frozenset({30, 31})


def default_settings(profile_settings: dict[int, float]) -> dict[int, float]:
    """All 34 settings: the profile's values over Grbl's compiled-in defaults."""
    values = dict(GRBL_DEFAULTS)
    values.update({int(k): float(v) for k, v in profile_settings.items()})
    return values


def format_setting(key: int, value: float) -> str:
    """One value as ``$$`` prints it."""
    if key in UINT8_SETTINGS:
        return str(int(value))
    if key in RPM_SETTINGS:
        return f"{value:.0f}"
    return f"{value:.3f}"


def format_number(value: float, decimals: int = 0) -> str:
    """Grbl's printFloat: rounded to ``decimals`` places, half away from zero."""
    scaled = math.floor(abs(value) * 10**decimals + 0.5) / 10**decimals
    return f"{-scaled if value < 0 and scaled else scaled:.{decimals}f}"
