"""Everything Grbl prints about itself (report.c): ``<...>`` status reports with the WCO/Ov refresh
rhythm, ``[GC:...]``, ``$I`` build lines."""

from __future__ import annotations

import asyncio

from markctl.simulator.grbl.defaults import format_number
from markctl.simulator.grbl.stepper import _Stepper


class _Report(_Stepper):
    """Status and information reports."""

    def _status_request(self) -> None:
        if self._critical or self.state == "Home" or self._pending_report:
            return  # ignored after a critical alarm and while homing; duplicates coalesce (§1.4)
        self._pending_report = True
        asyncio.get_running_loop().call_soon(self._send_report)

    def _send_report(self) -> None:
        self._pending_report = False
        if self._critical or self.state == "Home":
            return
        self.status_reports += 1
        self._line_out(self.status_line())

    def status_line(self) -> str:
        """The ``<...>`` report as the firmware would print it now (advances WCO/Ov counters)."""
        state = self.state if self.substate is None else f"{self.state}:{self.substate}"
        mask = int(self.settings.get(10, 1))
        mpos = self._position_now()
        wco = self._wco()
        fields = [state]
        if mask & 1:
            fields.append("MPos:" + ",".join(f"{v:.3f}" for v in mpos))
        else:
            fields.append("WPos:" + ",".join(f"{m - o:.3f}" for m, o in zip(mpos, wco, strict=True)))
        if mask & 2:
            fields.append(f"Bf:{self.proto.planner_blocks - len(self._planner)},{self.rx_free}")
        # FS: the actual rate and the S actually applied (M4 scaling, override), one instant.
        v, block = self._speed_now()
        spindle_s, spindle_word = self._spindle_at(v, block)
        fields.append(f"FS:{format_number(v * 60)},{format_number(spindle_s)}")
        if self._door_open:
            fields.append("Pn:D")
        busy = self.state in ("Run", "Jog", "Hold", "Home", "Door")
        if self._wco_counter > 0:
            self._wco_counter -= 1
            show_wco = False
        else:
            self._wco_counter = (30 if busy else 10) - 1
            show_wco = True
            self._ovr_counter = max(self._ovr_counter, 1)  # Ov waits one report (report.c)
        if show_wco:
            fields.append("WCO:" + ",".join(f"{o:.3f}" for o in wco))
            if self.dialect == "grblhal":
                fields.append(f"WCS:G{54 + self.wcs_index}")
        if self._ovr_counter > 0:
            self._ovr_counter -= 1
        else:
            self._ovr_counter = (20 if busy else 10) - 1
            fields.append(f"Ov:{self.feed_ovr},{self.rapid_ovr},{self.spindle_ovr}")
            acc = ""
            if spindle_s > 0:  # spindle_get_state(): the output, not the modal word
                acc += "S" if spindle_word == "M3" else "C"
            if self.coolant == "M8":
                acc += "F"
            elif self.coolant == "M7":
                acc += "M"
            if acc:
                fields.append(f"A:{acc}")
        return "<" + "|".join(fields) + ">"

    def _wco(self) -> list[float]:
        wco = [w + g for w, g in zip(self._wcs[self.wcs_index], self._g92, strict=True)]
        wco[2] += self._tlo  # report_realtime_status(): WCO includes the tool length offset on Z
        return wco

    def _build_lines(self) -> list[str]:
        blocks, rx = self.proto.planner_blocks, self.proto.rx_buffer_bytes
        if self.dialect == "grblhal":
            return [
                f"[VER:{self.proto.version}.20260817:{self.build_info}]",
                f"[OPT:VNMSL,{blocks},{rx},3,0]",
                "[NEWOPT:ENUMS,RT+,SED]",
                "[FIRMWARE:grblHAL]",
            ]
        if self.dialect == "fluidnc":
            return [
                f"[VER:{self.proto.banner.split()[1]} FluidNC {self.proto.version}:{self.build_info}]",
                "[OPT:PHS]",
            ]
        return [f"[VER:{self.proto.version}.20190830:{self.build_info}]", f"[OPT:V,{blocks},{rx}]"]

    def _gc_line(self) -> str:
        words = [
            f"G{int(self.motion_mode)}",
            f"G{54 + self.wcs_index}",
            f"G{int(self.plane)}",
            f"G{int(self.units)}",
            f"G{int(self.distance)}",
            f"G{int(self.feed_mode)}",
            self.spindle,
            self.coolant,
            f"T{self.tool}",
            f"F{format_number(self.feed)}",
            f"S{format_number(self.s)}",
        ]
        return "[GC:" + " ".join(words) + "]"

    def _report_parameters(self) -> None:
        """``$#``: coordinate systems, G28/G30, G92, tool length offset and the last probe."""
        for i, offs in enumerate(self._wcs):
            self._line_out(f"[G{54 + i}:" + ",".join(f"{v:.3f}" for v in offs) + "]")
        self._line_out("[G28:" + ",".join(f"{v:.3f}" for v in self._g28) + "]")
        self._line_out("[G30:" + ",".join(f"{v:.3f}" for v in self._g30) + "]")
        self._line_out("[G92:" + ",".join(f"{v:.3f}" for v in self._g92) + "]")
        self._line_out(f"[TLO:{self._tlo:.3f}]")
        self._line_out("[PRB:0.000,0.000,0.000:0]")
