"""Look-ahead planning (Grbl's planner.c): nominal speeds with overrides, junction speeds from junction
deviation, and exit speeds that can always stop at the end of what is queued."""

from __future__ import annotations

import math

from markctl.simulator.grbl.blocks import _Motion
from markctl.simulator.grbl.settings import _Settings

JUNCTION_DEVIATION_MM = 0.01


class _Planner(_Settings):
    """Look-ahead over the queued blocks."""

    def _nominal(self, block: _Motion) -> float:
        """Programmed speed of ``block`` in mm/s with overrides and the machine's max rate."""
        vmax = min(self.settings.get(110, 6000.0), self.settings.get(111, 6000.0)) / 60.0
        if block.kind == "rapid":
            return vmax * self.rapid_ovr / 100.0
        if block.kind in ("jog", "home"):
            return min(vmax, block.feed_mm_min / 60.0)
        return min(vmax, block.feed_mm_min / 60.0 * self.feed_ovr / 100.0)

    @property
    def accel(self) -> float:
        return min(self.settings.get(120, 1000.0), self.settings.get(121, 1000.0))

    def _junction_speed(self, prev: tuple[float, float, float] | None, block: _Motion) -> float:
        if prev is None or block.length == 0:
            return 0.0
        u = block.unit()
        cos_theta = -sum(a * b for a, b in zip(prev, u, strict=True))
        if cos_theta > 0.999999:
            return 0.0  # full reversal
        if cos_theta < -0.999999:
            return math.inf  # straight on
        sin_half = math.sqrt(0.5 * (1.0 - cos_theta))
        return math.sqrt(self.accel * JUNCTION_DEVIATION_MM * sin_half / (1.0 - sin_half))

    def _plan_exit(self, end_speed: float = 0.0) -> float:
        """Exit speed of the head block: the most the queued blocks allow while still able to stop.

        ``end_speed`` is the speed allowed at the end of the last queued block: 0 (Grbl must be
        able to stop there), or infinity to ask what the path alone would allow.
        """
        a = self.accel
        v_next = end_speed
        blocks = list(self._planner)
        for blk in reversed(blocks[1:]):
            v_next = min(self._nominal(blk), blk.junction_v, math.sqrt(v_next * v_next + 2 * a * blk.length))
        return min(v_next, self._nominal(blocks[0])) if len(blocks) > 1 else 0.0

    def _enqueue_now(self, block: _Motion) -> None:
        prev = self._planner[-1].unit() if self._planner else None
        if self._starved_at is not None and not self._planner and self._exec is None:
            self.planner_underruns += 1  # the head stopped for lack of blocks and now goes on
        self._starved_at = None
        ex = self._exec
        if ex is not None and ex.alone and len(self._planner) == 1:
            # The block being run was planned to stop at its end, and more motion arrived after all.
            self._starved_pending += 1
            ex.alone = False
        self.lookahead_starved_blocks += self._starved_pending
        self._starved_pending = 0
        block.junction_v = self._junction_speed(prev, block)
        self._planner.append(block)
