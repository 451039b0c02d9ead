"""Motion on the simulation clock (Grbl's stepper.c plus the hold/door parts of protocol.c): executing
the head block, where the head and the beam are at any instant, feed hold and door deceleration, and
the burn into the workpiece."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque

from markctl.simulator.grbl.blocks import BurnRecord, _Exec, _Motion, _p3, _profile
from markctl.simulator.grbl.planner import _Planner
from markctl.simulator.grbl.state import _MOVING

DEPTH_MM_PER_J_PER_MM = 0.08


SHADE_FULL_J_PER_MM = 0.15


class _Stepper(_Planner):
    """Motion execution on the clock, holds and the burn."""

    def _position_now(self) -> list[float]:
        ex = self._exec
        if ex is None:
            return list(self._pos)
        s, _ = ex.at(self.clock.now() - ex.t0)
        u = ex.block.unit()
        return [a + ui * s for a, ui in zip(ex.block.start, u, strict=True)]

    def _speed_now(self) -> tuple[float, _Motion | None]:
        ex = self._exec
        if ex is None:
            return 0.0, None
        _, v = ex.at(self.clock.now() - ex.t0)
        return max(0.0, v), ex.block

    def _power_fraction(self, block: _Motion | None, v_mm_s: float) -> float:
        """Fraction of full laser power for ``block`` at speed ``v`` (None: standing still)."""
        if self._check or self.state in ("Alarm", "Sleep"):
            return 0.0
        s_max = self.settings.get(30, 1000.0) or 1000.0
        if block is None:
            return min(1.0, self._spindle_out / s_max)  # whatever spindle_set_state() left on
        return min(1.0, self._block_spindle(block, v_mm_s) / s_max)

    def _spindle_rpm(self, rpm: float) -> float:
        """spindle_compute_pwm_value(): the S the output gets (override, $30/$31 limits); 0 is off."""
        if rpm <= 0:
            return 0.0
        rpm *= self.spindle_ovr / 100.0
        s_max, s_min = self.settings.get(30, 1000.0), self.settings.get(31, 0.0)
        return max(s_min, min(s_max, rpm))

    def _spindle_set_state(self, spindle: str, rpm: float) -> None:
        """spindle_set_state(): set the output while not moving; the next report shows ``Ov``/``A:``."""
        if spindle == "M5" or (self.settings.get(32, 0) and spindle == "M4"):
            rpm = 0.0  # laser mode: M4 is off standing still (spindle_control.c)
        self._spindle_out = self._spindle_rpm(rpm)
        self._ovr_counter = 0

    def _block_spindle(self, block: _Motion, v_mm_s: float) -> float:
        """The S a block applies at speed ``v`` (the stepper's per-segment PWM update)."""
        if block.spindle == "M5" or block.s <= 0:
            return 0.0
        laser = bool(self.settings.get(32, 0))
        if not laser:
            return self._spindle_rpm(block.s)  # a spindle output: on whenever on, G0 included
        if self.state in ("Hold", "Door") or block.kind in ("rapid", "home"):
            return 0.0  # DISABLE_LASER_DURING_HOLD; G0 never fires in laser mode
        if block.spindle == "M4":
            # Dynamic power: S x actual speed / programmed rate (the F word, without the feed
            # override), so a feed override changes the power with the speed (stepper.c).
            programmed = block.feed_mm_min / 60.0
            return self._spindle_rpm(block.s * (v_mm_s / programmed if programmed > 0 else 0.0))
        return self._spindle_rpm(block.s)

    def _spindle_at(self, v: float, block: _Motion | None) -> tuple[float, str]:
        """(S at the output, the spindle word it runs under) with the head at speed ``v`` in
        ``block`` (from one :meth:`_speed_now`): what ``FS`` and ``A:`` report."""
        if block is not None and self.state in ("Run", "Jog", "Home"):
            return self._block_spindle(block, v), block.spindle
        return self._spindle_out, self.spindle

    def _beam_fraction_now(self) -> float:
        v, block = self._speed_now()
        return self._power_fraction(block, v)

    def _finish_piece(self, ex: _Exec, s_end: float, t_end: float) -> None:
        """Burn and log the part of ``ex`` from what was already burned up to ``s_end``."""
        block = ex.block
        s0, t0 = ex.s_burned, ex.t_burned
        if s_end <= s0 + 1e-12 and t_end <= t0:
            return
        u = block.unit()
        p0 = [a + ui * s0 for a, ui in zip(block.start, u, strict=True)]
        p1 = [a + ui * s_end for a, ui in zip(block.start, u, strict=True)]
        ex.s_burned, ex.t_burned = s_end, t_end
        q0, q1 = self._phys(p0), self._phys(p1)
        self.travel_log.append((q0[0], q0[1], q1[0], q1[1], block.kind))
        frac_unit = self._power_fraction(block, self._nominal(block))
        if frac_unit <= 0:
            return
        dist = s_end - s0
        if block.spindle == "M4" and self.settings.get(32, 0):
            energy = self.power_w * frac_unit * dist / max(self._nominal(block), 1e-9)
        else:
            energy = self.power_w * frac_unit * max(0.0, t_end - t0)
        self._burn(p0, p1, energy, ex.t0 + t0, ex.t0 + t_end, block.line)

    def _phys(self, p: list[float]) -> list[float]:
        return [a + o for a, o in zip(p, self._offset, strict=True)]

    def _burn(self, p0: list[float], p1: list[float], energy: float, t0: float, t1: float, line: int) -> None:
        if energy <= 0:
            return
        p0, p1 = self._phys(p0), self._phys(p1)  # the workpiece is burned where the head really is
        length = max(math.dist(p0[:2], p1[:2]), self.spot_mm)
        density = energy / length
        depth = DEPTH_MM_PER_J_PER_MM * density
        shade = min(1.0, density / SHADE_FULL_J_PER_MM)
        # A spot finer than the map still marks the pixels it crosses: width at least one pixel.
        width = max(self.spot_mm, 1.01 / self.workpiece.px_per_mm)
        self.workpiece.burn_segment(p0[0], p0[1], p1[0], p1[1], width_mm=width, depth_mm=depth, shade=shade)
        self.burn_log.append(BurnRecord(t0, t1, p0[0], p0[1], p1[0], p1[1], density, line))

    def _cut_motion(self, at: float | None = None) -> float:
        """Stop tracking the executing block where it is now; returns the speed it had."""
        ex = self._exec
        if ex is None:
            return 0.0
        # ``at``: the instant the cause was seen (one clock reading: a scaled clock moves on
        # between two reads, and the hold must cut the burn where the byte arrived).
        t = max(0.0, (self.clock.now() if at is None else at) - ex.t0)
        s, v = ex.at(t)
        self._finish_piece(ex, s, t)
        u = ex.block.unit()
        self._pos = [a + ui * s for a, ui in zip(ex.block.start, u, strict=True)]
        remaining = ex.block.length - s
        if self._planner and self._planner[0] is ex.block:
            if remaining <= 1e-9:
                self._planner.popleft()
            else:
                head = self._planner[0]
                self._planner[0] = _Motion(
                    head.kind,
                    _p3(self._pos),
                    head.end,
                    head.feed_mm_min,
                    head.spindle,
                    head.s,
                    head.line,
                )
        self._exec = None
        self._interrupt()
        return max(0.0, v)

    def _planned_end(self) -> list[float]:
        if self._check and self._check_pos is not None:
            return list(self._check_pos)  # check mode moves the parser, not the machine
        if self._planner:
            return list(self._planner[-1].end)
        return self._position_now() if self._exec is not None else list(self._pos)

    def _interrupt(self) -> None:
        fut = self._motion_wake
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _sleep_interruptible(self, seconds: float) -> bool:
        """Sleep on the simulation clock; True if something cut the motion short."""
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        self._motion_wake = wake
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait({sleeper, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not sleeper.done():
                sleeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sleeper
        return wake.done()

    async def _motion_loop(self) -> None:
        was_running = False
        while True:
            if not self._planner or self.state not in _MOVING or self._decelerating or self._stalled:
                if was_running and self.state in ("Run", "Jog") and not self._planner:
                    self.state, self.substate = "Idle", None
                    self._spindle_out = self._spindle_after_motion()
                    self._last_exit_v = 0.0
                    self._kick_main()
                was_running = False
                await self._wait_motion()
                continue
            was_running = True
            block = self._planner[0]
            v0 = self._last_exit_v
            v_exit = self._plan_exit()
            if (
                len(self._planner) > 1
                and v_exit < min(self._plan_exit(math.inf), self._nominal(block)) - 1e-6
            ):
                # Too few blocks queued: the head slows so it could stop at the end of the queue.
                # It counts once more motion follows (the end of a job is no starvation).
                self._starved_pending += 1
            segs, v_exit = _profile(block.length, v0, self._nominal(block), v_exit, self.accel)
            ex = _Exec(block, self.clock.now(), segs, v_exit, alone=len(self._planner) == 1)
            self._exec = ex
            interrupted = await self._sleep_interruptible(ex.duration)
            if interrupted or self._exec is not ex:
                continue
            self._finish_piece(ex, block.length, ex.duration)
            self._pos = list(block.end)
            self._exec = None
            self._last_exit_v = v_exit
            self._last_block = block
            if self._planner and self._planner[0] is block:
                self._planner.popleft()
            if not self._planner and self.state == "Run":
                self._starved_at = self.clock.now()  # an underrun if more motion follows
            self._kick_main()

    def _feed_hold(self, at: float | None = None) -> None:
        if self.state == "Jog":
            self._jog_cancel()
        elif self.state == "Run":
            self._start_decel("Hold", at)
        elif self.state == "Idle":
            self.state, self.substate = "Hold", 0
            self._stop_spindle_for_hold("Hold")

    def _jog_cancel(self) -> None:
        jogging = [b for b in self._planner if b.kind == "jog"]
        if not jogging:
            return

        async def cancel() -> None:
            await self._decelerate("Jog", self._cut_motion())
            self._planner = deque(b for b in self._planner if b.kind != "jog")
            self.state, self.substate = "Idle", None
            self._kick_main()

        asyncio.get_running_loop().create_task(cancel())

    def _start_decel(self, kind: str, at: float | None = None) -> None:
        """Hold or door: the laser goes off in the same instant the byte or the pin is seen."""
        v = self._cut_motion(at)  # burn up to here, then the state change turns the laser off
        if kind == "Hold":
            self.state, self.substate = "Hold", 1
        else:
            self.state, self.substate = "Door", 2
        self._stop_spindle_for_hold(kind)
        task = asyncio.get_running_loop().create_task(self._decelerate(kind, v))
        self._tasks.append(task)

    async def _decelerate(self, kind: str, v: float) -> None:
        """Feed hold / door / jog cancel: slow to a stop from ``v`` with the laser off (§1.3)."""
        self._decelerating = True  # the motion loop keeps off the head block meanwhile
        try:
            await self._decelerate_from(kind, v)
        finally:
            self._decelerating = False
            self._kick_motion()

    async def _decelerate_from(self, kind: str, v: float) -> None:
        a = self.accel
        if v > 0 and self._planner:
            head = self._planner[0]
            stop = min(head.length, v * v / (2 * a))
            u = head.unit()
            target = [p + ui * stop for p, ui in zip(self._pos, u, strict=True)]
            decel = _Motion("rapid", _p3(self._pos), _p3(target), v * 60, "M5", 0.0, head.line)
            ex = _Exec(decel, self.clock.now(), [(v / a if stop < head.length else 2 * stop / v, v, -a)], 0.0)
            self._exec = ex
            await self._sleep_interruptible(ex.duration)
            if self._exec is not ex:
                return  # a reset or an alarm took over
            self._exec = None
            q0, q1 = self._phys(self._pos), self._phys(target)
            self.travel_log.append((q0[0], q0[1], q1[0], q1[1], "decel"))
            self._pos = target
            rest = head.length - stop
            if self._planner and self._planner[0] is head:
                if rest <= 1e-9:
                    self._planner.popleft()
                else:
                    self._planner[0] = _Motion(
                        head.kind,
                        _p3(target),
                        head.end,
                        head.feed_mm_min,
                        head.spindle,
                        head.s,
                        head.line,
                    )
        self._last_exit_v = 0.0
        if kind == "Hold" and self.state == "Hold":
            self.substate = 0
            if self._hold_pending_resume:
                self._hold_pending_resume = False
                self._cycle_start()
        elif kind == "Door" and self.state == "Door":
            self.substate = 1 if self._door_open else 0
        self._kick_main()

    def _stop_spindle_for_hold(self, kind: str) -> None:
        """A door always stops the spindle; a hold stops a laser (DISABLE_LASER_DURING_HOLD). Either
        is a spindle-stop override that the resume undoes with ``[MSG:Restoring spindle]``."""
        if kind == "Door" or self.settings.get(32, 0):
            self._spindle_out = 0.0
            if self.spindle != "M5":
                self._spindle_stop = True

    def _spindle_stop_toggle(self) -> None:
        """0x9E during a hold: stop the spindle, or restore one a stop override turned off."""
        if self.state != "Hold":
            return
        if self._spindle_stop:
            self._spindle_stop = False
            self._line_out("[MSG:Restoring spindle]")
            self._spindle_set_state(self.spindle, self.s)
        else:
            self._spindle_stop = True
            self._spindle_set_state("M5", 0.0)

    def _restore_spindle_on_resume(self) -> None:
        if self._spindle_stop:
            self._spindle_stop = False
            self._line_out("[MSG:Restoring spindle]")

    def _cycle_start(self) -> None:
        if self.state == "Hold":
            if self.substate == 1:
                self._hold_pending_resume = True
                return
            self._restore_spindle_on_resume()
            self.state, self.substate = ("Run", None) if self._planner else ("Idle", None)
            self._kick_motion()
        elif self.state == "Door" and self.substate == 0 and not self._door_open:
            self._restore_spindle_on_resume()
            self.state, self.substate = ("Run", None) if self._planner else ("Idle", None)
            self._kick_motion()
        self._ring_kick.set()  # lines wait in the RX buffer while suspended (protocol.c)
        self._kick_main()

    def _door_event(self) -> None:
        if self.state in ("Alarm", "Sleep", "Check"):
            return
        self._line_out("[MSG:Check Door]")
        if self.state in ("Run", "Jog", "Hold"):
            self._start_decel("Door")
        elif self.state != "Door":
            self.state, self.substate = "Door", 1 if self._door_open else 0

    def _spindle_after_motion(self) -> float:
        """The output once the planner is empty: a constant-power (M3) block leaves the laser at its
        S, a dynamic-power (M4) one turns it off (stepper.c: is_pwm_rate_adjusted)."""
        block = self._last_block
        if block is None or (self.settings.get(32, 0) and block.spindle == "M4"):
            return 0.0 if block is not None else self._spindle_out
        return self._block_spindle(block, self._nominal(block))
