"""The main loop (Grbl's protocol.c): lines out of the RX ring into the parser or the system commands,
realtime commands, alarms and soft resets, and faults injected on the clock."""

from __future__ import annotations

import asyncio

from markctl.simulator.faults import Fault
from markctl.simulator.grbl.gcode import (
    GCodeError,
    preprocess,
)
from markctl.simulator.grbl.motion_control import _SoftLimitError
from markctl.simulator.grbl.state import _MOVING
from markctl.simulator.grbl.system import _System


class _Protocol(_System):
    """Line processing, realtime commands, alarms, resets and timed faults."""

    def _realtime_command(self, byte: int) -> None:
        if byte != ord("?"):
            self.realtime_log.append((self.clock.now(), byte))
        if byte == 0x18:
            self._soft_reset()
            return
        if byte in (ord("?"), 0x80, 0x87):
            self._status_request()
            return
        if self._critical or self.state == "Sleep":
            return
        if byte in (ord("!"), 0x82):
            self._feed_hold()
        elif byte in (ord("~"), 0x81):
            self._cycle_start()
        elif byte == 0x84:
            self._door_event()
        elif byte == 0x85:
            if self.state == "Jog":
                self._jog_cancel()
        elif 0x90 <= byte <= 0x94:
            self.feed_ovr = self._step_override(self.feed_ovr, byte - 0x90)
        elif 0x95 <= byte <= 0x97:
            self.rapid_ovr = {0x95: 100, 0x96: 50, 0x97: 25}[byte]
            self._ovr_counter = 0
        elif 0x99 <= byte <= 0x9D:
            self.spindle_ovr = self._step_override(self.spindle_ovr, byte - 0x99)
        elif byte == 0x9E:
            pass  # spindle stop toggle only matters in Hold, where the laser is already off
        elif byte in (0xA0, 0xA1):
            self.coolant = "M9" if self.coolant != "M9" else ("M8" if byte == 0xA0 else "M7")

    def _step_override(self, value: int, op: int) -> int:
        self._ovr_counter = 0  # show Ov on the next report
        if op == 0:
            return 100
        step = {1: 10, 2: -10, 3: 1, 4: -1}[op]
        return max(10, min(200, value + step))

    def _raise_alarm(self, code: int) -> None:
        self._cut_motion()
        self._planner.clear()
        self._last_exit_v = 0.0
        self.alarms.append(code)
        self.state, self.substate = "Alarm", None
        self.spindle = "M5"
        self._line_out(f"ALARM:{code}")
        if code in (1, 2):
            # Critical: only a reset is served (protocol.c); the host must send ^X (§1.5).
            self._critical = True
            self._ring.clear()
            self._line_out("[MSG:Reset to continue]")
        # mc_reset(): the line being executed is abandoned without a response.
        self._restart_protocol_loop()

    def _soft_reset(self, *, power_cycle: bool = False) -> None:
        self.resets += 1
        moving = (
            self._exec is not None or self.state in _MOVING or (self.state == "Hold" and self.substate == 1)
        )
        homing = self.state == "Home"
        self._cut_motion()
        prior = self.state
        alarm: int | None = None
        if power_cycle:
            # A power cycle forgets the position: Grbl starts at 0,0,0 wherever the head is.
            self._offset = self._phys(self._pos)
            self._pos = [0.0, 0.0, 0.0]
        if moving and not power_cycle and prior not in ("Alarm", "Sleep"):
            alarm = 6 if homing else 3
        keep_settings = self.settings
        self._boot()
        self.settings = keep_settings
        self._eeprom_busy_until = -1.0
        if alarm is not None:
            self.alarms.append(alarm)
            self._line_out(f"ALARM:{alarm}")
        if not power_cycle and (prior in ("Alarm", "Sleep") or alarm is not None):
            self.state = "Alarm"
        elif power_cycle:
            self.state = "Alarm" if self.settings.get(22, 0) else "Idle"
        else:
            self.state = "Idle"  # a soft reset does not re-lock for homing: only power-up does
        self._banner()
        if self.state == "Alarm":
            self._line_out("[MSG:'$H'|'$X' to unlock]")
        else:
            if self._door_open:
                self.state, self.substate = "Door", 1
            for line in self.startup_lines:
                if line:
                    self._line_out(f">{line}:ok")
        self._restart_protocol_loop()
        self._kick_motion()

    def _restart_protocol_loop(self) -> None:
        """(Re)start line processing; a reset or an alarm abandons the line in progress."""
        if self._main_task is not None:
            self._main_task.cancel()
            self._main_task = None
        self._main_wake = None
        if self._started:
            self._main_task = asyncio.get_running_loop().create_task(self._protocol_loop())

    async def _protocol_loop(self) -> None:
        line = bytearray()
        overflow = False
        while True:
            if self._critical or self.state == "Sleep" or not self._ring:
                self._ring_kick.clear()
                await self._ring_kick.wait()
                continue
            byte = self._ring.pop(0)
            if byte not in (0x0A, 0x0D):
                if len(line) >= self.proto.line_buffer_chars - 1:
                    overflow = True
                else:
                    line.append(byte)
                continue
            self._ring_lines_taken += 1
            ordinal = self._ring_lines_taken
            raw, line = bytes(line), bytearray()
            was_overflow, overflow = overflow, False
            self.lines_received += 1
            number = self.lines_received
            if ordinal in self._corrupt_ordinals:
                self._corrupt_ordinals.discard(ordinal)
                self.corrupted_lines.append(number)
            if self._line_fault(number):
                continue
            if was_overflow:
                self._respond(number, "error:11")
                continue
            await self._execute(number, preprocess(raw))

    def _line_fault(self, number: int) -> bool:
        for fault in self.faults:
            if fault.trigger != "line" or int(fault.at) != number:
                continue
            if fault.kind == "disconnect":
                self.fault_times["disconnect"] = self.clock.now()
                hang_up = self._hang_up
                self.detach()
                self._ring.clear()
                if hang_up is not None:
                    hang_up(f"simulated disconnect at line {number}")
                return True
            if fault.kind == "silence":
                self.fault_times.setdefault("silence", self.clock.now())
                self._silenced.add(number)
        return False

    async def _execute(self, number: int, text: str) -> None:
        if not text:
            self._respond(number, "ok")  # empty or comment-only line: "ok" for syncing (protocol.c)
            return
        if text.startswith("$"):
            code = await self._system(number, text)
        elif self.state in ("Alarm", "Jog"):
            code = 9
        else:
            try:
                code = await self._gcode(number, text)
            except _SoftLimitError:
                return  # the ALARM:2 is the answer; the line is dropped with the planner
            except GCodeError as exc:
                code = exc.code
        self._respond(number, "ok" if code == 0 else f"error:{code}")

    async def _timed_fault(self, fault: Fault) -> None:
        if fault.at > 0:
            await self._motion_started.wait()
            origin = self._motion_origin or 0.0
            await self.clock.sleep(max(0.0, origin + fault.at - self.clock.now()))
        self.fault_times.setdefault(fault.kind, self.clock.now())
        if fault.kind == "alarm":
            if self.state != "Alarm":
                self._raise_alarm(fault.arg_int(1))
        elif fault.kind == "door":
            self._door_open = True
            self._door_event()
            if fault.arg is not None:
                await self.clock.sleep(fault.arg_float(0.0))
                self._door_open = False
                if self.state == "Door" and self.substate == 1:
                    self.substate = 0
        elif fault.kind == "slow":
            self._slow_extra = fault.arg_float(0.25)
