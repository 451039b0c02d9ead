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
        now = self.clock.now()
        if byte != ord("?"):
            self.realtime_log.append((now, byte))
        if byte == 0x18:
            self._soft_reset()
            return
        if byte in (ord("?"), 0x80, 0x87):
            self._status_request()
            return
        if self._critical or self.state == "Sleep":
            return
        if byte in (ord("!"), 0x82):
            self._feed_hold(now)
        elif byte in (ord("~"), 0x81):
            self._cycle_start()
        elif byte == 0x84:
            self._door_event()
        elif byte == 0x85:
            if self.state == "Jog":
                self._jog_cancel()
        elif 0x90 <= byte <= 0x97:
            feed, rapid = self.feed_ovr, self.rapid_ovr
            if byte <= 0x94:
                feed = self._step_override(feed, byte - 0x90)
            else:
                rapid = {0x95: 100, 0x96: 50, 0x97: 25}[byte]
            if (feed, rapid) != (self.feed_ovr, self.rapid_ovr):
                self.feed_ovr, self.rapid_ovr = feed, rapid
                self._ovr_counter = 0
                self._replan()
        elif 0x99 <= byte <= 0x9D:
            ovr = self._step_override(self.spindle_ovr, byte - 0x99)
            if ovr != self.spindle_ovr:
                self.spindle_ovr = ovr
                self._ovr_counter = 0
                if self.state == "Idle":
                    # protocol.c: at idle the new override re-sets the spindle from the parser
                    # state, G0 or not (a laser in G0 mode comes on at S x override).
                    self._spindle_set_state(self.spindle, self.s)
        elif byte == 0x9E:
            self._spindle_stop_toggle()
        elif byte in (0xA0, 0xA1):
            self._coolant_toggle(byte)

    def _step_override(self, value: int, op: int) -> int:
        if op == 0:
            return 100
        step = {1: 10, 2: -10, 3: 1, 4: -1}[op]
        return max(10, min(200, value + step))

    def _replan(self) -> None:
        """plan_cycle_reinitialize(): a feed or rapid override takes effect mid-block, from the
        speed the head has now (with acceleration), not at the next block."""
        if self.state in ("Run", "Jog") and self._exec is not None and self._exec.block.kind != "home":
            self._last_exit_v = self._cut_motion()

    def _coolant_toggle(self, byte: int) -> None:
        """0xA0 flood / 0xA1 mist toggles in Idle, Run, Hold and Jog. Grbl 1.1h is built without
        ENABLE_M7, so on the ``grbl`` dialect the mist toggle does nothing."""
        if self.state not in ("Idle", "Run", "Hold", "Jog"):
            return
        if byte == 0xA1 and self.dialect == "grbl":
            return
        word = "M8" if byte == 0xA0 else "M7"
        self.coolant = "M9" if self.coolant == word else word
        self._ovr_counter = 0

    def _raise_alarm(self, code: int) -> None:
        self._cut_motion()
        self._planner.clear()
        self._last_exit_v = 0.0
        self.alarms.append(code)
        self.state, self.substate = "Alarm", None
        self.spindle = "M5"
        self._spindle_out = 0.0
        self._line_out(f"ALARM:{code}")
        if code in (1, 2):
            # Critical: only a reset is served (protocol.c); the host must send ^X (§1.5). The line
            # that hit the limit is still inside mc_line() and gets its "ok" after that reset.
            self._critical = True
            self._ring.clear()
            self._line_out("[MSG:Reset to continue]")
        else:
            self._in_flight = None  # a simulated fault: the line is abandoned without a response
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
        in_flight = None if power_cycle else self._in_flight
        keep_settings = self.settings
        self._boot()
        self.settings = keep_settings
        self._eeprom_busy_until = -1.0
        if alarm is not None:
            self.alarms.append(alarm)
            self._line_out(f"ALARM:{alarm}")
        if in_flight is not None:
            # The line being executed (waiting for planner space, dwelling, held at a limit) returns
            # from mc_*() on the abort and protocol.c prints its status, "ok", before restarting.
            self._respond(in_flight, "ok")
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
            # A hold or a door suspends line processing (protocol_exec_rt_suspend): bytes wait in
            # the RX buffer and get their response after the resume.
            if self._critical or self._stalled or self.state in ("Sleep", "Hold", "Door") or not self._ring:
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
        self._in_flight = number
        if text.startswith("$"):
            code = await self._system(number, text)
        elif self.state in ("Alarm", "Jog"):
            code = 9
        else:
            try:
                code = await self._gcode(number, text)
            except _SoftLimitError:
                return  # ALARM:2; the line stays in flight and is answered after the reset
            except GCodeError as exc:
                code = exc.code
        self._in_flight = None
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
        elif fault.kind == "stall":
            # A jammed machine: it keeps reporting Run where it stopped, takes no more lines (so
            # sends no ok) and still obeys realtime commands (hold, reset).
            self._cut_motion()
            self._stalled = True
        elif fault.kind == "slow":
            self._slow_extra = fault.arg_float(0.25)
