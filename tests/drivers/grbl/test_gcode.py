"""G-code generation and the modal tracker (PROTOCOLS.md §1.7, §9.2, §9.3)."""

from __future__ import annotations

import numpy as np
import pytest

from markctl.drivers.grbl.gcode import ModalState, frame_lines, num, program_lines, resume_lines
from markctl.layouts.program import MotionProgram, ProcessParams, Stroke, StrokeKind


def _program() -> MotionProgram:
    return MotionProgram(
        strokes=(
            Stroke(StrokeKind.LINE, np.array([[1.0, 2.0], [3.25, 2.0], [3.25, 4.125]]), 0),
            Stroke(StrokeKind.LINE, np.array([[10.0, 10.0], [12.0, 10.0]]), 1),
            Stroke(StrokeKind.DOTS, np.array([[20.0, 20.0]]), 1),
        ),
        params=(
            ProcessParams(speed_mm_min=1500, power_pct=60),
            ProcessParams(speed_mm_min=900, power_pct=25, passes=2),
        ),
    )


def test_program_lines_golden() -> None:
    assert program_lines(_program(), s_max=1000, spot_mm=0.1) == [
        "G21G90G17G94G54",
        "M4S0",  # dynamic power, beam off
        "G0X1Y2",  # travel is G0: never fires in laser mode
        "G1X3.25Y2F1500S600",  # S scaled to $30
        "X3.25Y4.125",  # modal: the shortest line that does the job
        "G0X10Y10",
        "G1X12Y10F900S250",
        "G0X10Y10",  # second pass
        "G1X12Y10S250",
        "G0X20Y20",  # a dot: constant power while standing still, two passes
        "G1M3S250",  # G1 mode: laser mode syncs an M3 given in G0 mode *off* (row07 transcript)
        "G4P0.007",
        "M5",
        "G0X20Y20",
        "G1M3S250",
        "G4P0.007",
        "M5",
        "M5S0",
    ]


def test_s_scales_to_dollar_30_and_m3_on_request() -> None:
    lines = program_lines(_program(), s_max=255, dynamic_power=False)
    assert lines[1] == "M3S0"
    assert "G1X3.25Y2F1500S153" in lines


def test_num() -> None:
    assert [num(v) for v in (1.0, 1.5, -0.0004, 12.34567, 0.1)] == ["1", "1.5", "0", "12.346", "0.1"]


def test_frame_beam_off_and_explicit_low_power() -> None:
    off = frame_lines((1, 2, 11, 7), speed_mm_min=3000)
    assert off == ["G21G90G17G94G54", "M5S0", "G0X1Y2", "G0X11Y2", "G0X11Y7", "G0X1Y7", "G0X1Y2", "M5S0"]
    low = frame_lines((1, 2, 11, 7), speed_mm_min=3000, power_s=10, repeat=2)
    assert low[3:5] == ["M3S10", "G1F3000"] and low.count("G1X11Y2") == 2 and low[-1] == "M5S0"
    with pytest.raises(ValueError):
        frame_lines((0, 0, 1, 1), speed_mm_min=100, repeat=0)


def test_modal_state_tracks_groups_and_position() -> None:
    state = ModalState().feed_lines(
        ["G21G90G17G94G55", "M4S0", "G0X1Y2", "G1X3Y2F1500S600", "G91", "X1Y1", "G20", "G0X1", "M8"]
    )
    assert (state.motion, state.distance, state.units, state.wcs, state.spindle) == (
        "G0",
        "G91",
        "G20",
        "G55",
        "M4",
    )
    assert state.feed == 1500 and state.power == 600 and state.coolant == "M8"
    assert state.position[:2] == pytest.approx([4 + 25.4, 3.0])


def test_non_modal_axis_words_do_not_move_the_tracker() -> None:
    state = ModalState().feed_lines(["G0X5Y5", "G92X0Y0", "G10L2P1X3", "G4P1"])
    assert state.position[:2] == [5.0, 5.0]


def test_resume_restores_modal_state_before_continuing() -> None:
    lines = program_lines(_program(), s_max=1000)
    resumed = resume_lines(lines, 4)  # at "X3.25Y4.125", mid-stroke
    assert resumed[:6] == [
        "G21G90G17G94G54",
        "M5S0",  # beam off for the approach
        "G0X3.25Y2",  # to where line 4 left the head, with G0 (never fires)
        "G21G90",
        "M4S600",  # laser mode and power back
        "G1F1500",  # motion mode and feed last
    ]
    assert resumed[6:] == lines[4:]
    with pytest.raises(ValueError):
        resume_lines(lines, len(lines) + 1)
