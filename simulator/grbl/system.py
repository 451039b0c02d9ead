"""The ``$`` system commands (Grbl's system.c): settings, offsets, info, check mode, unlock, homing,
sleep, restore; each with the state it may run in."""

from __future__ import annotations

import math
import re

from markctl.simulator.grbl.defaults import default_settings, format_setting
from markctl.simulator.grbl.gcode import GCodeError
from markctl.simulator.grbl.motion_control import _MotionControl

# read_float() in nuts_bolts.c: an optional sign, digits and one decimal point.
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_HELP = "[HLP:$$ $# $G $I $N $x=val $Nx=line $J=line $SLP $C $X $H ~ ! ? ctrl-x]"


class _System(_MotionControl):
    """``$`` commands."""

    def _idle_like(self) -> bool:
        return self.state in ("Idle", "Alarm") and not self._check

    async def _system(self, number: int, text: str) -> int:
        """system_execute_line(): the state checks come first and in Grbl's order, then the command."""
        body = text[1:]
        if body == "":
            self._line_out(_HELP)
            return 0
        head = body[0]
        if head == "J":
            if self.state not in ("Idle", "Jog"):
                return 8  # also in Alarm: jogging is refused before the parser sees it
            if body[1:2] != "=":
                return 3
            return await self._jog(number, body[2:])
        if head in "$GCX":
            if len(body) != 1:
                return 3
            return await self._system_any_state(number, head)
        if self.state not in ("Idle", "Alarm"):
            return 8  # $#, $H, $SLP, $I, $RST, $N and settings need Idle or Alarm
        if head == "#":
            if len(body) != 1:
                return 3
            self._report_parameters()
            return 0
        if head == "H":
            if not self.settings.get(22, 0):
                return 5
            if len(body) != 1:
                return 3
            await self._home(number)
            return 0
        if head == "S":
            if body != "SLP":
                return 3
            # The sleep runs from the realtime loop after the line's "ok" (EXEC_SLEEP).
            self._respond_then(number, self._sleep)
            return 0
        if head == "I":
            if body == "I":
                for line in self._build_lines():
                    self._line_out(line)
                return 0
            if body[1] != "=":
                return 3
            self.build_info = body[2:]
            await self._eeprom_write()
            return 0
        if head == "R":
            if not body.startswith("RST=") or len(body) != 5 or body[4] not in "$#*":
                return 3
            self._restore(body[4])
            await self._eeprom_write()
            self._line_out("[MSG:Restoring defaults]")
            self._respond_then(number, self._soft_reset)  # mc_reset(): settings re-initialised
            return 0
        if head == "N" and body == "N":
            for i, line in enumerate(self.startup_lines):
                self._line_out(f"$N{i}={line}")
            return 0
        return await self._store(number, body)

    async def _system_any_state(self, number: int, head: str) -> int:
        """``$$``, ``$G``, ``$C``, ``$X``: allowed in any state (``$$`` not while moving)."""
        if head == "$":
            if self.state in ("Run", "Hold"):
                return 8  # printing takes too long during a cycle (system.c)
            for key in sorted(self.settings):
                self._line_out(f"${key}={format_setting(key, self.settings[key])}")
        elif head == "G":
            self._line_out(self._gc_line())
        elif head == "C":
            if self._check:
                self._line_out("[MSG:Disabled]")
                self._respond_then(number, self._soft_reset)  # leaving check mode resets (mc_reset)
                return 0
            if self.state != "Idle":
                return 8
            self._check = True
            self.state = "Check"
            self._line_out("[MSG:Enabled]")
        elif self.state == "Alarm":  # $X; no effect in any other state
            self.state = "Idle"
            self._line_out("[MSG:Caution: Unlocked]")
        return 0

    async def _store(self, number: int, body: str) -> int:
        """``$Nx=line`` and ``$x=value`` (the default branch of system.c)."""
        startup = body[0] == "N"
        if startup and self.state != "Idle":
            return 8  # storing a startup line executes it: not in Alarm
        match = _NUMBER.match(body, 1 if startup else 0)
        if match is None:
            return 2
        rest = body[match.end() :]
        if not rest.startswith("="):
            return 3
        parameter = float(match.group())
        if startup:
            line = rest[1:]
            try:
                code = await self._gcode(number, line) if line else 0
            except GCodeError as exc:
                code = exc.code
            if code:
                return code
            index = math.trunc(parameter)
            if index not in (0, 1):
                return 3
            self.startup_lines[index] = line
            await self._eeprom_write()
            return 0
        value = _NUMBER.fullmatch(rest[1:])
        if value is None:
            return 2
        if parameter > 255:
            return 3
        code = self._store_setting(math.trunc(parameter), float(value.group()))
        if code == 0:
            await self._eeprom_write()
        return code

    def _restore(self, what: str) -> None:
        """settings_restore(): ``$`` settings, ``#`` offsets, ``*`` everything."""
        if what in "$*":
            self.settings = default_settings(self.proto.settings)
        if what in "#*":
            self._wcs = [[0.0, 0.0, 0.0] for _ in range(6)]
            self._g28 = [0.0, 0.0, 0.0]
            self._g30 = [0.0, 0.0, 0.0]
        if what == "*":
            self.startup_lines = ["", ""]
            self.build_info = ""

    def _sleep(self) -> None:
        self._cut_motion()
        self._planner.clear()
        self.spindle = "M5"
        self.coolant = "M9"
        self.state, self.substate = "Sleep", None
        self._line_out("[MSG:Sleeping]")
