"""What pattern machines (Telesis-style serial, Modbus markers) share: options, cycle timing, polling.

A pattern machine marks text with its own fonts and motion; the host fills fields, starts the cycle
and polls until Done. How long that should take comes from the profile's character rate, and how
often to ask is a trade between seeing Done promptly and keeping the line quiet.
"""

from __future__ import annotations

from pydantic import Field

from markctl.drivers.base import DriverOptions
from markctl.layouts.program import PatternProgram
from markctl.profiles import FirmwareProfile

__all__ = ["PatternOptions", "expected_marking_s", "poll_delay"]

#: The character height at which vendors quote their character rate (3.175 mm = 1/8 in, 5x7).
RATED_HEIGHT_MM = 3.175


class PatternOptions(DriverOptions):
    """Address options every pattern machine takes (``...?poll_hz=2&cycle_margin=4``)."""

    poll_hz: float | None = Field(
        default=None, gt=0, le=100, description="Status polls per second; capped at the profile's maximum."
    )
    cycle_margin: float = Field(
        default=3.0, ge=1.0, le=100.0, description="Cycle timeout = expected marking time x this + 10 s."
    )
    slow_poll_s: float = Field(
        default=1.0, gt=0, le=10, description="Poll interval far from the cycle's expected end."
    )


def expected_marking_s(profile: FirmwareProfile, program: PatternProgram) -> float:
    """Marking time the profile predicts: ``chars_per_s`` is for 3.175 mm text; taller text is slower."""
    spec = profile.dot_peen
    cps = spec.chars_per_s if spec else 2.0
    chars = sum(
        len(f.text.replace(" ", "")) * max(1.0, f.height_mm / RATED_HEIGHT_MM) for f in program.fields
    )
    return chars / cps


def poll_delay(elapsed: float, fraction: float, expected: float, period: float, slow: float) -> float:
    """Seconds to wait before the next status poll during a cycle.

    Far from the end, poll every ``slow`` seconds (progress still moves); as the estimated remaining
    time shrinks, poll faster, down to ``period`` (1 / the profile's maximum rate), so Done is seen
    within one period while the line carries a fraction of the traffic of constant fast polling.
    The remaining time comes from the reported progress when there is some, else from the profile.
    """
    remaining = elapsed * (1.0 - fraction) / fraction if fraction > 0 else expected - elapsed
    return min(max(slow, period), max(period, remaining / 4.0))
