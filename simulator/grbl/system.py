"""The ``$`` system commands (Grbl's system.c): settings, offsets, info, check mode, unlock, homing,
sleep, restore; each with the state it may run in."""

from __future__ import annotations

import asyncio
import math

from markctl.simulator.grbl.motion_control import _MotionControl
from markctl.simulator.grbl.settings import _KNOWN_SETTINGS, _fmt_setting

_HELP = "[HLP:$$ $# $G $I $N $x=val $Nx=line $J=line $SLP $C $X $H ~ ! ? ctrl-x]"


class _System(_MotionControl):
    """``$`` commands."""

    def _idle_like(self) -> bool:
        return self.state in ("Idle", "Alarm") and not self._check

    async def _system(self, number: int, text: str) -> int:
        body = text[1:]
        if body == "":
            self._line_out(_HELP)
            return 0
        if body.startswith("J="):
            return await self._jog(number, body[2:])
        if body == "$":
            if self.state in ("Run", "Hold"):
                return 8
            for key in sorted(self.settings):
                self._line_out(f"${key}={_fmt_setting(self.settings[key])}")
            return 0
        if body == "#":
            for i, offs in enumerate(self._wcs):
                self._line_out(f"[G{54 + i}:" + ",".join(f"{v:.3f}" for v in offs) + "]")
            self._line_out("[G28:" + ",".join(f"{v:.3f}" for v in self._g28) + "]")
            self._line_out("[G30:" + ",".join(f"{v:.3f}" for v in self._g30) + "]")
            self._line_out("[G92:" + ",".join(f"{v:.3f}" for v in self._g92) + "]")
            self._line_out("[TLO:0.000]")
            self._line_out("[PRB:0.000,0.000,0.000:0]")
            return 0
        if body == "G":
            self._line_out(self._gc_line())
            return 0
        if body == "I":
            for line in self._build_lines():
                self._line_out(line)
            return 0
        if body == "N":
            for i, line in enumerate(self.startup_lines):
                self._line_out(f"$N{i}={line}")
            return 0
        if body == "C":
            if self._check:
                self._line_out("[MSG:Disabled]")
                self._respond(number, "ok")
                self._silenced.add(number)  # the ok is out; the reset comes after it (report.c)
                asyncio.get_running_loop().call_soon(self._soft_reset)
                return 0
            if self.state != "Idle":
                return 8
            self._check = True
            self.state = "Check"
            self._line_out("[MSG:Enabled]")
            return 0
        if body == "X":
            if self.state == "Alarm":
                self.state = "Idle"
                self._line_out("[MSG:Caution: Unlocked]")
            return 0
        if body == "H":
            if not self.settings.get(22, 0):
                return 5
            if not self._idle_like():
                return 8
            await self._home(number)
            return 0
        if body == "SLP":
            self._cut_motion()
            self._planner.clear()
            self.spindle = "M5"
            self.state, self.substate = "Sleep", None
            self._line_out("[MSG:Sleeping]")
            return 0
        if body.startswith("RST="):
            what = body[4:]
            if what not in ("$", "#", "*"):
                return 3
            if not self._idle_like():
                return 8
            if what in ("$", "*"):
                self.settings = {k: float(v) for k, v in self.proto.settings.items()}
                self.settings.setdefault(10, 1.0)
                self._line_out("[MSG:Restoring defaults]")
            if what in ("#", "*"):
                self._wcs = [[0.0, 0.0, 0.0] for _ in range(6)]
            await self._eeprom_write()
            return 0
        if body.startswith("I="):
            self.build_info = body[2:]
            await self._eeprom_write()
            return 0
        if body.startswith("N") and "=" in body:
            index = body[1 : body.index("=")]
            if index not in ("0", "1"):
                return 3
            if not self._idle_like():
                return 8
            self.startup_lines[int(index)] = body[body.index("=") + 1 :]
            await self._eeprom_write()
            return 0
        if "=" in body:
            name, _, value = body.partition("=")
            if not name.isdigit():
                return 3
            try:
                number_value = float(value)
            except ValueError:
                return 2
            if not math.isfinite(number_value):
                return 2
            if int(name) not in self.settings and int(name) not in _KNOWN_SETTINGS:
                return 3
            if not self._idle_like():
                return 8
            if number_value < 0:
                return 4
            self.settings[int(name)] = number_value
            await self._eeprom_write()
            return 0
        return 3
