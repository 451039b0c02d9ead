"""Executing parsed G-code blocks and motion requests (Grbl's gcode.c execution half, motion_control.c
and jog.c): feed/spindle/modal updates in gcode.c order, soft-limit checks, queuing straight and arc
moves, dwells, jogs and homing."""

from __future__ import annotations

import math

from markctl.simulator.grbl.blocks import _Motion, _p3
from markctl.simulator.grbl.gcode import (
    Block,
    GCodeError,
    arc_points,
    check_block,
    parse_block,
    parse_jog,
)
from markctl.simulator.grbl.report import _Report


class _SoftLimitError(GCodeError):
    """A soft-limit alarm: the line gets no response of its own (the alarm is the answer)."""

    def __init__(self) -> None:
        super().__init__(0)


class _MotionControl(_Report):
    """G-code execution, jogs, homing and dwells."""

    async def _home(self, number: int) -> None:
        self.state = "Home"
        # The switch of each axis sits at the far end of its travel (physical $13x), or at the
        # near end (physical 0) where $23 sets the axis's bit. Grbl calls the far end machine 0
        # and the near end -$13x (limits.c, without HOMING_FORCE_SET_ORIGIN; the $27 pull-off is
        # not modelled), so after homing physical = machine + travel either way and machine space
        # is -$13x..0: jobs at positive work coordinates need a work offset (G10 L2).
        travel = [self.settings.get(130 + i, 0.0) for i in range(3)]
        negative = [int(self.settings.get(23, 0)) >> i & 1 for i in range(3)]
        machine_after = [-travel[i] if negative[i] else 0.0 for i in range(3)]
        target = _p3([m + t - o for m, t, o in zip(machine_after, travel, self._offset, strict=True)])
        block = _Motion("home", _p3(self._pos), target, self.settings.get(25, 500.0), "M5", 0.0, number)
        self._planner.append(block)
        self._kick_motion()
        while self._planner and self.state == "Home":
            await self._wait_main()
        if self.state == "Home":
            self._pos = machine_after
            self._offset = travel
            self.state = "Idle"

    async def _jog(self, number: int, body: str) -> int:
        if self.state not in ("Idle", "Jog"):
            return 8 if self.state != "Alarm" else 9
        try:
            blk = parse_jog(body)
        except GCodeError as exc:
            return exc.code
        scale = 25.4 if blk.g.get("units", self.units) == 20 else 1.0
        incremental = blk.g.get("distance", self.distance) == 91
        machine = blk.g.get("non-modal") == 53
        start = self._planned_end()
        wco = [0.0, 0.0, 0.0] if machine else self._wco()
        target = list(start)
        for i, axis in enumerate("XYZ"):
            if axis in blk.values:
                value = blk.values[axis] * scale
                target[i] = start[i] + value if incremental else value + wco[i]
        if self.settings.get(20, 0) and not self._within_travel(target):
            return 15
        self._enqueue_now(
            _Motion("jog", _p3(start), _p3(target), blk.values["F"] * scale, self.spindle, self.s, number)
        )
        self.state = "Jog"
        self._kick_motion()
        return 0

    def _within_travel(self, target: list[float]) -> bool:
        """system_check_travel_limits(): Grbl's machine space is ``[-$13x, 0]`` on every axis.

        Homing sets the switch end to 0 and travel runs negative from there; without
        HOMING_FORCE_SET_ORIGIN (off in 1.1h's config.h) this holds whatever ``$23`` says.
        """
        return all(-self.settings.get(130 + i, 1e9) - 1e-6 <= target[i] <= 1e-6 for i in range(3))

    async def _sync(self) -> None:
        """protocol_buffer_synchronize(): wait until the planner is empty and the head stopped."""
        while self._planner or self._exec is not None or self.state in ("Hold", "Door"):
            await self._wait_main()
        self._starved_at = None  # an intended stop, not an underrun
        self._starved_pending = 0

    async def _spindle_sync(self, spindle: str, rpm: float) -> None:
        """spindle_sync(): wait for the planner to empty, then set the output (not in check mode)."""
        if self._check:
            return
        await self._sync()
        self._spindle_set_state(spindle, rpm)

    async def _spindle_words(self, blk: Block, non_modal: float | None) -> None:
        """S and M3/M4/M5 with gcode.c's laser-mode rules (steps 4 and 7).

        In laser mode a block whose motion mode is not G1/G2/G3 syncs the laser *off*
        (GC_PARSER_LASER_DISABLE): ``M3 S500`` in G0 leaves it off at idle; an S change on a line
        that moves goes with the motion instead of a sync; M3 re-syncs when the motion mode
        changes between G1/G2/G3 and the rest without axis words (GC_PARSER_LASER_FORCE_SYNC).
        """
        laser = bool(self.settings.get(32, 0))
        cutting = (1, 2, 3)
        laser_disable = laser and blk.g.get("motion", self.motion_mode) not in cutting
        axis_motion = bool(blk.axes) and non_modal not in (10, 28, 30, 92) and "tool-length" not in blk.g
        force_sync = False
        if laser and not axis_motion and self.spindle == "M3":
            was_cutting = self.motion_mode in cutting
            force_sync = laser_disable if was_cutting else not laser_disable
        new_s = blk.values.get("S", self.s)
        if new_s != self.s or force_sync:
            if self.spindle != "M5" and not (laser and axis_motion):
                await self._spindle_sync(self.spindle, 0.0 if laser_disable else new_s)
            self.s = new_s
        if "spindle" in blk.m:
            new = f"M{blk.m['spindle']}"
            if new != self.spindle:
                await self._spindle_sync(new, 0.0 if laser_disable else self.s)
            self.spindle = new

    async def _gcode(self, number: int, text: str) -> int:
        blk = parse_block(text)
        check_block(blk, motion=self.motion_mode, feed=self.feed, feed_mode=self.feed_mode)
        values = blk.values
        scale = 25.4 if blk.g.get("units", self.units) == 20 else 1.0
        # 1. feed mode, feed, spindle speed, tool (gcode.c execution order)
        if "feed-mode" in blk.g:
            self.feed_mode = blk.g["feed-mode"]
        if "F" in values:
            self.feed = values["F"] * (scale if self.feed_mode == 94 else 1.0)
        if "T" in values:
            self.tool = int(values["T"])
        non_modal = blk.g.get("non-modal")
        await self._spindle_words(blk, non_modal)
        if "coolant" in blk.m:
            new = f"M{blk.m['coolant']}"
            if new != self.coolant and not self._check:
                await self._sync()  # coolant_sync(); coolant_set_state() shows it on the next report
                self._ovr_counter = 0
            self.coolant = new
        if non_modal == 4:
            if not self._check:
                await self._sync()
                await self._dwell(values["P"], number)
        for group, attr in (("plane", "plane"), ("units", "units"), ("distance", "distance")):
            if group in blk.g:
                setattr(self, attr, blk.g[group])
        if "wcs" in blk.g:
            self.wcs_index = int(blk.g["wcs"]) - 54
            self._wco_counter = 0
        axes = blk.axes
        incremental = self.distance == 91
        if non_modal == 10:
            index = int(values["P"]) - 1 if int(values["P"]) > 0 else self.wcs_index
            current = self._planned_end()
            for i, axis in enumerate("XYZ"):
                if axis in axes:
                    value = axes[axis] * scale
                    if int(values["L"]) == 2:
                        self._wcs[index][i] = value
                    else:
                        self._wcs[index][i] = current[i] - self._g92[i] - value
            self._wco_counter = 0
            await self._eeprom_write()
        elif non_modal == 92:
            current = self._planned_end()
            wcs = self._wcs[self.wcs_index]
            for i, axis in enumerate("XYZ"):
                if axis in axes:
                    self._g92[i] = current[i] - wcs[i] - axes[axis] * scale
            self._wco_counter = 0
        elif non_modal == 92.1:
            self._g92 = [0.0, 0.0, 0.0]
            self._wco_counter = 0
        elif non_modal in (28.1, 30.1):
            store = self._g28 if non_modal == 28.1 else self._g30
            store[:] = self._planned_end()
            await self._eeprom_write()
        elif non_modal in (28, 30):
            if axes:
                target = self._target(axes, scale, incremental, machine=False)
                await self._queue_motion(number, "rapid", target)
            home = self._g28 if non_modal == 28 else self._g30
            await self._queue_motion(number, "rapid", list(home))
        if "tool-length" in blk.g:
            self._tlo = axes.get("Z", 0.0) * scale if blk.g["tool-length"] == 43.1 else 0.0
            self._wco_counter = 0
        if "motion" in blk.g:
            self.motion_mode = blk.g["motion"]
        if axes and non_modal not in (10, 28, 30, 92) and blk.g.get("tool-length") != 43.1:
            target = self._target(axes, scale, incremental, machine=non_modal == 53)
            if self.settings.get(20, 0) and not self._within_travel(target) and not self._check:
                self._raise_alarm(2)
                raise _SoftLimitError()
            mode = self.motion_mode
            if mode in (0, 1):
                await self._queue_motion(number, "rapid" if mode == 0 else "line", target)
            elif mode in (2, 3):
                start = self._planned_end()
                ij = None
                if "I" in values or "J" in values:
                    ij = (values.get("I", 0.0) * scale, values.get("J", 0.0) * scale)
                radius = values["R"] * scale if "R" in values else None
                pts = arc_points(
                    (start[0], start[1]), (target[0], target[1]), clockwise=mode == 2, ij=ij, radius=radius
                )
                for x, y in pts:
                    await self._queue_motion(number, "line", [x, y, target[2]])
        if "stop" in blk.m:
            code = blk.m["stop"]
            if not self._check:
                await self._sync()
            if code in (0, 1):
                if not self._check:
                    self.state, self.substate = "Hold", 0
            else:
                # Program end (M2/M30): Grbl restores these modal defaults (gcode.c).
                self.motion_mode, self.distance, self.feed_mode, self.plane = 1.0, 90.0, 94.0, 17.0
                self.spindle, self.coolant, self.wcs_index = "M5", "M9", 0
                self._spindle_set_state("M5", 0.0)
                self._g92 = [0.0, 0.0, 0.0]
                self._line_out("[MSG:Pgm End]")
        return 0

    def _target(
        self, axes: dict[str, float], scale: float, incremental: bool, *, machine: bool
    ) -> list[float]:
        start = self._planned_end()
        wco = self._wco()
        target = list(start)
        for i, axis in enumerate("XYZ"):
            if axis in axes:
                value = axes[axis] * scale
                if incremental:
                    target[i] = start[i] + value
                else:
                    target[i] = value + (0.0 if machine else wco[i])
        return target

    async def _queue_motion(self, number: int, kind: str, target: list[float]) -> None:
        start = self._planned_end()
        if self._check:
            self._check_pos = list(target)
            return
        if self.feed_mode == 93 and kind == "line":
            length = math.dist(start, target)
            feed = length * self.feed if self.feed > 0 else 0.0
        else:
            feed = self.feed
        vmax = min(self.settings.get(110, 6000.0), self.settings.get(111, 6000.0))
        block = _Motion(
            kind, _p3(start), _p3(target), vmax if kind == "rapid" else feed, self.spindle, self.s, number
        )
        if block.length == 0:
            return
        # Grbl blocks here (plan_check_full_buffer) until a slot frees: the ok waits with it.
        while len(self._planner) >= self.proto.planner_blocks:
            await self._wait_main()
        self._enqueue_now(block)
        if self.state == "Idle":
            self.state = "Run"
            if self._motion_origin is None:
                self._motion_origin = self.clock.now()
                self._motion_started.set()
        self._kick_motion()

    async def _dwell(self, seconds: float, number: int) -> None:
        self._dwelling = True
        t0 = self.clock.now()
        try:
            await self.clock.sleep(seconds)
        finally:
            self._dwelling = False
        frac = self._power_fraction(None, 0.0)
        if frac > 0:
            p = list(self._pos)
            self._burn(p, p, self.power_w * frac * seconds, t0, self.clock.now(), number)
