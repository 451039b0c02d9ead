"""The shared dot-peen marker model: fonts, cycle rate, depth, faults, the workpiece and its PNG."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from markctl.layouts.fonts import get_font
from markctl.layouts.materials import get_material, plan_process
from markctl.layouts.request import MarkOptions
from markctl.profiles import FirmwareProfile, load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.faults import parse_faults
from markctl.simulator.peen import (
    FONTS,
    HV_PER_HB,
    FieldSlot,
    MarkerStatus,
    Pattern,
    PeenMarker,
    default_pattern,
)

REQUIRED = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-/. "


@pytest.mark.parametrize(("font", "cols", "rows"), [("5x7", 5, 7), ("7x9", 7, 9)])
def test_fonts_cover_the_marking_alphabet(font: str, cols: int, rows: int) -> None:
    f = FONTS[font]
    assert (f.cols, f.rows) == (cols, rows)
    assert set(REQUIRED) <= set(f.glyphs)
    assert f.dots(" ") == ()
    for char in REQUIRED.strip():
        dots = f.dots(char)
        assert dots, char
        assert all(0 <= c < cols and 0 <= r < rows for c, r in dots)
    # every letter and digit differs from every other one
    shapes = {frozenset(f.dots(c)) for c in REQUIRED if c.isalnum()}
    assert len(shapes) == 36


def test_glyphs_match_their_drawings() -> None:
    # counted by hand on the drawings
    assert len(FONTS["5x7"].dots("A")) == 18
    assert len(FONTS["5x7"].dots("1")) == 10
    assert len(FONTS["5x7"].dots(".")) == 1
    assert len(FONTS["7x9"].dots("I")) == 17
    assert FONTS["5x7"].dots("-") == ((1, 3), (2, 3), (3, 3))
    assert FONTS["5x7"].dots("a") == FONTS["5x7"].dots("A")  # marked in capitals


@pytest.mark.parametrize("font", ["5x7", "7x9"])
def test_the_simulated_controller_strikes_the_font_the_layout_is_composed_in(font: str) -> None:
    # One source: what the simulated marker strikes is what the layout shows and verification reads.
    # The controller is sent ASCII and draws those characters only (non-ASCII is refused up front).
    composed = get_font(font)
    ascii_glyphs = {c: shape for c, shape in composed.glyphs.items() if c.isascii()}
    for char, shape in ascii_glyphs.items():
        cells = {
            (round(x / composed.pitch_em), round(y / composed.pitch_em)) for s in shape.strokes for x, y in s
        }
        assert cells == set(FONTS[font].dots(char)), char
    assert set(FONTS[font].glyphs) == set(ascii_glyphs)


def marker(profile_id: str = "telesis-tmp", **kwargs: object) -> PeenMarker:
    pattern = Pattern((FieldSlot(5.0, 5.0, 3.175), FieldSlot(5.0, 15.0, 3.175, font="7x9")))
    return PeenMarker(
        load_profile(profile_id), clock=make_clock("instant"), patterns={"P": pattern}, **kwargs
    )  # type: ignore[arg-type]


async def run_cycle(m: PeenMarker) -> None:
    assert m.start()
    assert m.status is MarkerStatus.BUSY and m.busy and not m.ready
    while m.busy:
        await asyncio.sleep(0)


@pytest.mark.parametrize("profile_id", ["telesis-tmp", "peen-modbus"])
async def test_cycle_rate_is_the_profiles_chars_per_s(profile_id: str) -> None:
    # 36 characters: the whole alphabet, so the average character is the font's average; three
    # fields of 12 so that every line fits the marking window (a longer one is refused at Go).
    rows = Pattern(tuple(FieldSlot(2.0, 2.0 + 6.0 * i, 3.175) for i in range(3)))
    m = PeenMarker(load_profile(profile_id), clock=make_clock("instant"), patterns={"P": rows})
    assert m.load_pattern("P")
    alphabet = REQUIRED.replace(" ", "").replace("-", "").replace("/", "").replace(".", "")
    for i in range(3):
        assert m.set_text(i + 1, alphabet[12 * i : 12 * (i + 1)])
    await run_cycle(m)
    cycle = m.cycles[-1]
    assert cycle.outcome == "done" and m.status is MarkerStatus.DONE and m.progress_pct == 100
    assert cycle.ended_t is not None
    rate = cycle.chars_total / (cycle.ended_t - cycle.started_t)
    spec = load_profile(profile_id).dot_peen
    assert spec is not None and rate == pytest.approx(spec.chars_per_s, rel=0.02)
    assert m.job_counter == 1


async def test_taller_and_slower_text_takes_longer() -> None:
    m = marker()
    m.load_pattern("P")
    m.set_text(1, "AB")
    base = m.expected_seconds()
    m.char_height_mm = 6.35
    taller = m.expected_seconds()
    m.speed_pct = 50
    slower = m.expected_seconds()
    assert base < taller < slower


def test_depth_from_force_and_hardness() -> None:
    m = marker()  # telesis-tmp: 20-120 N, the TMP4500E figure 0.45 mm at 75 % in mild steel
    m.force_pct = 75  # 95 N, 150 HB: the data sheet's point
    assert m.depth_mm() == pytest.approx(0.45)
    m.force_pct = 100  # 120 N: depth grows as the square root of force
    assert m.depth_mm() == pytest.approx(0.45 * math.sqrt(120 / 95))
    hard = marker(hardness_hb=300)
    hard.force_pct = 75
    assert hard.depth_mm() == pytest.approx(0.45 / math.sqrt(2))  # twice as hard


def test_the_simulator_strikes_the_depth_the_layout_planned() -> None:
    """One depth model: what the layout's depth and wall checks judged is what the dents are."""
    profile = load_profile("telesis-tmp")
    steel = get_material("steel")
    process = plan_process(steel, profile, MarkOptions(force_pct=40.0), min_depth_mm=0.05, max_depth_mm=1.0)
    m = marker(hardness_hb=steel.hardness_hv / HV_PER_HB)
    m.force_pct = 40.0
    assert m.depth_mm() == pytest.approx(process.depth_mm)


async def test_dots_land_in_the_workpiece_and_render(tmp_path: Path) -> None:
    m = marker()
    m.load_pattern("P")
    m.set_text(1, "T")
    await run_cycle(m)
    wp = m.workpiece
    # 'T' in 5x7 at 3.175 mm: a bar of 5 dots on top and a stem of 6
    assert wp.strikes == 11
    pitch = 3.175 / 6
    xs = sorted({round(s.x, 6) for s in m.strikes})
    assert xs == pytest.approx([5.0 + i * pitch for i in range(5)])
    assert float(wp.depth.max()) == pytest.approx(m.depth_mm(), abs=0.02)
    png = wp.save_png(tmp_path / "t.png")
    pixels = np.asarray(Image.open(png))
    assert pixels.shape == wp.shape and pixels.min() < pixels.max()


async def test_text_the_machine_cannot_mark_is_refused() -> None:
    m = marker()
    m.load_pattern("P")
    assert m.text_problem(1, "A#B") == "characters '#' are not in font 5x7"
    assert not m.set_text(1, "A#B")
    assert m.text_problem(3, "A") == "pattern P has 2 field(s)"
    assert m.text_problem(9, "A") == "field 9 does not exist (1-8)"


async def test_unknown_pattern_faults_with_the_profiles_code() -> None:
    m = marker()
    assert not m.load_pattern("NOPE")
    assert m.status is MarkerStatus.FAULT and m.fault_code == 5  # telesis-tmp: "Pattern not found"
    assert not m.start()
    m.reset()
    assert m.status is MarkerStatus.IDLE and m.fault_code == 0


@pytest.mark.parametrize(
    ("profile_id", "roles"),
    [
        ("telesis-tmp", {"estop": 1, "jam": 2, "pattern": 5, "overflow": 6, "aborted": 7}),
        ("peen-modbus", {"estop": 1, "jam": 2, "pattern": 4, "overflow": 5, "aborted": 6}),
    ],
)
def test_fault_roles_are_found_in_each_profiles_table(profile_id: str, roles: dict[str, int]) -> None:
    m = marker(profile_id)
    assert {role: m.code_for(role) for role in roles} == roles


async def test_abort_stops_striking_at_once() -> None:
    m = PeenMarker(
        load_profile("telesis-tmp"),
        clock=make_clock("scaled:50"),
        patterns={"*": Pattern((FieldSlot(1, 1),))},
    )
    m.load_pattern("X")
    m.set_text(1, "ABCDEFGH")
    assert m.start()
    while m.cycles[-1].dots_struck < 10:
        await asyncio.sleep(0.001)
    m.abort()
    struck = m.workpiece.strikes
    await asyncio.sleep(0.05)
    assert m.workpiece.strikes == struck and not m.stylus_down
    assert m.status is MarkerStatus.FAULT and m.fault_code == 7 and m.cycles[-1].outcome == "aborted"
    await m.stop_background()


async def test_timed_estop_faults_an_idle_machine() -> None:
    faults = parse_faults("estop@t:5", {"estop"})
    m = PeenMarker(load_profile("peen-modbus"), clock=make_clock("instant"), faults=faults)
    await m.start_background()
    for _ in range(50):
        await asyncio.sleep(0)
    assert m.status is MarkerStatus.FAULT and m.fault_code == 1
    assert m.clock.now() == pytest.approx(5.0)
    await m.stop_background()


def test_default_store_serves_any_pattern_name() -> None:
    m = PeenMarker(load_profile("telesis-tmp"), clock=make_clock("instant"))
    assert m.load_pattern("ANYTHING") and m.pattern is not None and len(m.pattern.fields) == 8


async def test_reset_during_a_cycle_stops_it_and_stays_online() -> None:
    m = PeenMarker(
        load_profile("telesis-tmp"),
        clock=make_clock("scaled:50"),
        patterns={"*": Pattern((FieldSlot(1, 1),))},
    )
    m.load_pattern("X")
    m.set_text(1, "ABCDEFGH")
    assert m.start()
    while m.cycles[-1].dots_struck < 5:
        await asyncio.sleep(0.001)
    m.reset()
    struck = m.workpiece.strikes
    await asyncio.sleep(0.05)  # the stopped cycle task winds down
    assert m.workpiece.strikes == struck
    assert m.status is MarkerStatus.IDLE and m.fault_code == 0 and m.ready
    assert m.cycles[-1].outcome == "aborted" and m.cycles[-1].fault_code == 7
    await m.stop_background()


def test_the_default_pattern_is_the_profiles_pattern_origins_when_given() -> None:
    data = load_profile("telesis-tmp").model_dump()
    data["dot_peen"]["pattern_origins"] = [[2.0, 18.0], [2.0, 12.0]]
    pattern = default_pattern(FirmwareProfile.model_validate(data))
    assert [(f.x_mm, f.y_mm) for f in pattern.fields] == [(2.0, 18.0), (2.0, 12.0)]
    assert len(default_pattern(load_profile("telesis-tmp")).fields) == 8  # none given: 8 stacked fields
