"""Programs: golden files per machine family, path ordering, cycle-time estimate, CLI outputs.

Goldens live in tests/layouts/golden/. After an intended change, regenerate them with
``MARKCTL_UPDATE_GOLDENS=1 .venv/bin/pytest tests/layouts/test_program.py`` and review the diff.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import typer

from markctl.errors import LayoutError
from markctl.layouts import MarkRequest, check, compose, ordering, program, program_stats
from markctl.layouts.program import MotionProgram, PatternProgram, StrokeKind, program_from_json
from markctl.layouts.toolpath import build_program, composed_strokes, estimate_cycle_time_s
from markctl.profiles import load_profile

from .conftest import request_dict

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = Path(__file__).parents[2] / "examples" / "requests"
UPDATE = os.environ.get("MARKCTL_UPDATE_GOLDENS") == "1"


def _example(name: str, machine: str | None = None, **options: object) -> MarkRequest:
    req = MarkRequest.from_toml((EXAMPLES / name).read_text())
    # Pin the date: the year plausibility check must not make a golden depend on the clock.
    data = req.model_dump(mode="json")
    data["options"].update(today="2026-11-27", **options)
    if machine is not None:
        data["machine"] = machine
    if machine == "telesis-tmp":
        # Its stored pattern places the fields (5, 19), (5, 14), ...: a surface where they fall.
        data["component"].update(zone=[[0, 0], [60, 0], [60, 25], [0, 25]], existing_marks=[])
        if "origin_mm" not in options:
            data["options"]["origin_mm"] = [0.0, 0.0]
    return MarkRequest.parse(data)


@pytest.mark.parametrize(
    ("golden", "example", "machine", "options"),
    [
        ("motion-grbl-iti-import.json", "iti-import-steel-frame.toml", None, {}),
        # a Telesis-style marker cannot cut the Data Matrix: its pattern carries the text lines only
        (
            "pattern-telesis-iti-stockpile.json",
            "iti-stockpile-datamatrix.toml",
            "telesis-tmp",
            {"datamatrix": False},
        ),
    ],
)
def test_golden_program(golden: str, example: str, machine: str | None, options: dict[str, object]) -> None:
    layout = compose(_example(example, machine, **options))
    assert check(layout).passed
    prog = program(layout)
    data = prog.to_dict()
    path = GOLDEN / golden
    if UPDATE:
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    expected = json.loads(path.read_text())
    assert data == expected, (
        f"{golden} changed; if intended, rerun with MARKCTL_UPDATE_GOLDENS=1 and review the diff"
    )
    assert program_from_json(expected).digest == prog.digest


def test_motion_program_content() -> None:
    layout = compose(_example("iti-import-steel-frame.toml", datamatrix=True))
    prog = program(layout)
    assert isinstance(prog, MotionProgram)
    x0, y0, x1, y1 = prog.bounds
    assert x0 >= 100 and y0 >= 100  # options.origin_mm shifts the component frame into the machine frame
    p = prog.params[0]
    assert p.passes == layout.process.passes and p.power_pct == 100 and p.speed_mm_min == 300
    assert all(s.kind is StrokeKind.LINE for s in prog.strokes)
    assert prog.params[1].passes == p.passes  # the code is cut like the text by default
    shallow = program(compose(_example("iti-import-steel-frame.toml", datamatrix=True, code_passes=2)))
    assert isinstance(shallow, MotionProgram) and shallow.params[1].passes == 2
    assert shallow.marking_length_mm < prog.marking_length_mm
    stats = program_stats(prog, layout.machine)
    assert stats.marking_length_mm == pytest.approx(prog.marking_length_mm)
    assert stats.cycle_time_s > prog.marking_length_mm / (300 / 60)  # never faster than the marking feed


def test_dot_peen_motion_machine_strikes_one_dot_per_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # A GRBL-driven XY dot-peen table, as a user profile would describe it.
    data = load_profile("grbl-1.1").model_dump(mode="json")
    data.update(id="grbl-peen", extends=None, laser=None)
    data["machine"]["kind"] = "dot-peen"
    data["dot_peen"] = {"force_min_n": 20, "force_max_n": 120, "dot_rate_hz": 80, "chars_per_s": 2}
    machine = type(load_profile("grbl-1.1")).model_validate(data)
    req = request_dict("iti-stockpile")
    req["options"].update(datamatrix=True, module_mm=0.4)
    layout = compose(MarkRequest.parse(req))  # composed for the laser; program for the peen table is refused
    with pytest.raises(LayoutError) as info:
        program(layout, machine)
    assert info.value.field == "machine"

    # markctl.layouts.compose the attribute is the function; patch the module's profile loader.
    monkeypatch.setattr(sys.modules["markctl.layouts.compose"], "load_profile", lambda _id: machine)
    layout = compose(MarkRequest.parse(req))
    prog = program(layout, machine)
    assert isinstance(prog, MotionProgram)
    assert layout.code is not None
    assert prog.dot_count == int(layout.code.symbol.modules.sum()) + sum(
        len(s) for line in layout.lines for gl in line.glyphs for s in gl.strokes
    )
    assert all(s.kind is StrokeKind.DOTS for s in prog.strokes) and prog.params[0].force_pct is not None
    # Code dots sit one module apart, text dots one font cell apart: two parameter sets.
    assert prog.params[1].dot_pitch_mm == pytest.approx(0.4)
    assert prog.params[0].dot_pitch_mm == pytest.approx(layout.char_height_mm / 6)
    code_dots = sum(len(s.points) for s in prog.strokes if s.params == 1)
    assert code_dots == int(layout.code.symbol.modules.sum())
    assert estimate_cycle_time_s(prog, machine) >= prog.dot_count / 80


def test_pattern_program_fields() -> None:
    layout = compose(_example("iti-stockpile-datamatrix.toml", "telesis-tmp"))
    prog = program(layout)
    assert isinstance(prog, PatternProgram)
    assert [f.text for f in prog.fields] == ["UG UPF 26", "0012345", "UG-UPF-0012345"]
    assert prog.fields[-1].font == "datamatrix" and prog.fields[0].font == "5x7"
    assert all(f.height_mm == layout.char_height_mm == 3.0 for f in prog.fields[:2])  # the pattern's
    # Its stored pattern places the text: the fields are where telesis-tmp's pattern_origins say.
    assert [(f.x_mm, f.y_mm) for f in prog.fields[:2]] == [(5.0, 19.0), (5.0, 14.0)]
    assert all(f.force_pct == 10.0 for f in prog.fields)  # and strikes with its own force


def test_a_pattern_machine_takes_no_rotation_height_font_or_force_from_the_request() -> None:
    asked: tuple[tuple[str, object], ...] = (
        ("rotation_deg", 90.0), ("char_height_mm", 4.0), ("font", "7x9"), ("force_pct", 60.0),
    )  # fmt: skip
    for option, value in asked:
        with pytest.raises(LayoutError) as info:
            compose(
                _example("iti-stockpile-datamatrix.toml", "telesis-tmp", datamatrix=False, **{option: value})
            )
        assert info.value.field == f"options.{option}", option
        assert "telesis-tmp" in str(info.value) and "stored pattern" in str(info.value)


def test_a_pattern_machine_layout_is_in_the_patterns_font() -> None:
    layout = compose(_example("iti-stockpile-datamatrix.toml", "telesis-tmp", datamatrix=False))
    assert layout.font.name == "5x7"  # telesis-tmp's [dot_peen] pattern_font
    same = compose(_example("iti-stockpile-datamatrix.toml", "telesis-tmp", datamatrix=False, font="5x7"))
    assert same.font.name == "5x7"


def test_dot_peen_character_height_must_suit_the_machine() -> None:
    # telesis-tmp draws 1.5-25 mm characters; a requested 1.2 mm is refused, not silently enlarged.
    with pytest.raises(LayoutError) as info:
        compose(_example("iti-stockpile-datamatrix.toml", "telesis-tmp", char_height_mm=1.2))
    assert info.value.field == "options.char_height_mm" and "1.5-25 mm" in str(info.value)


def test_rotated_pattern_field_keeps_its_baseline_start() -> None:
    req = _example("iti-stockpile-datamatrix.toml", "peen-modbus", rotation_deg=90.0, datamatrix=False)
    data = req.model_dump(mode="json")
    data["component"].update(zone=[[0, 0], [60, 0], [60, 19], [0, 19]], existing_marks=[])
    layout = compose(MarkRequest.parse(data))
    prog = program(layout)
    assert isinstance(prog, PatternProgram)
    assert all(f.angle_deg == 90.0 for f in prog.fields)
    first = layout.lines[0]
    assert (prog.fields[0].x_mm, prog.fields[0].y_mm) == pytest.approx(
        (first.origin[0] + 5.0, first.origin[1] + 5.0)
    )
    # Rotated 90 degrees, the text runs up: its glyphs share (almost) one x per line.
    xs = np.concatenate([s for gl in first.glyphs for s in gl.strokes])[:, 0]
    ys = np.concatenate([s for gl in first.glyphs for s in gl.strokes])[:, 1]
    assert np.ptp(ys) > 3 * np.ptp(xs)


def test_program_outside_work_area_is_refused() -> None:
    req = _example("iti-stockpile-datamatrix.toml", "peen-modbus", origin_mm=(110.0, 5.0))
    with pytest.raises(LayoutError) as info:
        program(compose(req))
    assert info.value.field == "options.origin_mm"


def _brute_force(starts: np.ndarray, ends: np.ndarray) -> float:
    n = len(starts)
    best = np.inf
    for perm in itertools.permutations(range(n)):
        for flips in itertools.product([False, True], repeat=n):
            idx, flip = np.array(perm), np.array(flips)
            best = min(best, ordering.travel(starts, ends, idx, flip))
    return float(best)


@pytest.mark.parametrize("seed", range(5))
def test_two_opt_never_worse_than_nearest_neighbour_and_close_to_optimal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    starts, ends = rng.uniform(0, 20, (6, 2)), rng.uniform(0, 20, (6, 2))
    nn_idx, nn_flip = ordering.nearest_neighbour(starts, ends)
    idx, flip = ordering.two_opt(starts, ends, nn_idx, nn_flip)
    assert sorted(idx.tolist()) == list(range(6))
    opt = ordering.travel(starts, ends, idx, flip)
    assert opt <= ordering.travel(starts, ends, nn_idx, nn_flip) + 1e-9
    assert opt <= _brute_force(starts, ends) * 1.5  # 2-opt is a local search, not exact


def test_two_opt_reverses_strokes() -> None:
    # Three horizontal strokes all drawn left to right: the best tour zig-zags, reversing the middle one.
    starts = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    ends = np.array([[10.0, 0.0], [10.0, 1.0], [10.0, 2.0]])
    idx, flip = ordering.two_opt(starts, ends, np.array([0, 1, 2]), np.zeros(3, dtype=bool))
    assert ordering.travel(starts, ends, idx, flip) == pytest.approx(2.0)
    assert flip.tolist().count(True) in (1, 2)


@pytest.mark.parametrize("seed", range(3))
def test_order_finds_the_optimum_of_small_tours(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    starts, ends = rng.uniform(0, 20, (5, 2)), rng.uniform(0, 20, (5, 2))
    idx, flip = ordering.order(starts, ends)
    assert sorted(idx.tolist()) == list(range(5))
    assert ordering.travel(starts, ends, idx, flip) == pytest.approx(_brute_force(starts, ends), abs=1e-9)


def _grid_strokes(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    # Short strokes on a grid, all drawn the same way, shuffled: the best tour is a boustrophedon.
    rng = np.random.default_rng(rows * cols)
    cells = rng.permutation(rows * cols)
    starts = np.column_stack((cells % cols * 2.0, cells // cols * 1.0))
    return starts, starts + (1.0, 0.0)


def test_order_on_hundreds_of_strokes_is_a_valid_near_optimal_deterministic_tour() -> None:
    starts, ends = _grid_strokes(20, 25)  # 500 strokes
    idx, flip = ordering.order(starts, ends)
    assert sorted(idx.tolist()) == list(range(500))
    again = ordering.order(starts, ends)
    assert np.array_equal(idx, again[0]) and np.array_equal(flip, again[1])  # goldens depend on it
    # A boustrophedon travels 1 mm per stroke in a row and 1 mm per row change: 499 mm.
    length = ordering.travel(starts, ends, idx, flip)
    assert 499.0 - 1e-6 <= length <= 499.0 * 1.05
    nn = ordering.travel(starts, ends, *ordering.nearest_neighbour(starts, ends))
    assert length <= nn + 1e-9
    # A smaller search budget still gives a valid tour, no shorter than the full one's optimum.
    quick = ordering.order(starts, ends, kicks=0)
    assert sorted(quick[0].tolist()) == list(range(500))
    assert ordering.travel(starts, ends, *quick) >= 499.0 - 1e-6


def test_order_keeps_duplicate_and_zero_length_strokes() -> None:
    starts = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.0], [1.0, 0.0]])
    ends = np.array([[0.0, 0.0], [0.0, 0.0], [6.0, 5.0], [5.0, 5.0], [1.0, 0.0]])
    idx, flip = ordering.order(starts, ends)
    assert sorted(idx.tolist()) == list(range(5))
    assert ordering.travel(starts, ends, idx, flip) == pytest.approx(_brute_force(starts, ends), abs=1e-9)


def test_optimised_order_cuts_travel_of_the_composed_order() -> None:
    layout = compose(_example("iti-import-steel-frame.toml", datamatrix=True))
    composed = build_program(layout, optimise=False)
    optimised = build_program(layout)
    assert isinstance(composed, MotionProgram) and isinstance(optimised, MotionProgram)
    assert optimised.travel_length_mm < 0.6 * composed.travel_length_mm
    assert optimised.marking_length_mm == pytest.approx(composed.marking_length_mm)
    assert len(composed_strokes(layout)) == len(optimised.strokes)


def _app() -> typer.Typer:
    from markctl.cli import layout as cli_layout

    app = typer.Typer()
    cli_layout.register(app)

    @app.callback()
    def _root() -> None:
        pass

    return app


def test_cli_layout_writes_outputs_and_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = _app()
    example = str(EXAMPLES / "ca-import.toml")
    code = app(args=["layout", example, "-o", str(tmp_path), "--name", "ca"], standalone_mode=False)
    assert code == 0
    assert {p.name for p in tmp_path.iterdir()} == {"ca.svg", "ca.png", "ca.program.json", "ca.findings.json"}
    prog = program_from_json(json.loads((tmp_path / "ca.program.json").read_text()))
    assert prog.kind == "motion"
    capsys.readouterr()
    code = app(args=["check", example, "--json", "--height", "1.2"], standalone_mode=False)
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["passed"] is False
    assert {f["rule"] for f in out["findings"] if f["severity"] == "error"} == {"CA-PHYS"}
    code = app(
        args=[
            "check",
            "--profile",
            "ca-import",
            "--machine",
            "grblhal",
            "-f",
            "country=CA",
            "-f",
            "import_year=26",
            "--component",
            "frame",
            "--material",
            "aluminium",
            "--wall",
            "4",
            "--zone",
            "20x6",
        ],
        standalone_mode=False,
    )
    assert code == 0
    rules = tmp_path.parent / f"{tmp_path.name}-xx.toml"
    rules.write_text(
        'schema_version = 1\nid = "xx-import"\nextends = "ca-import"\nname = "stricter"\n'
        '[[height]]\nrule = "XX-1"\nclause = "national rule: 3 mm"\nmin_mm = 3.0\n'
    )
    capsys.readouterr()
    code = app(
        args=["check", example, "--profile", "xx-import", "--rules", str(rules), "--json", "--height", "2"],
        standalone_mode=False,
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and {f["rule"] for f in out["findings"] if f["severity"] == "error"} == {"XX-1"}


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_every_sample_request_is_compliant_and_programs(example: str) -> None:
    import xml.etree.ElementTree as ET

    from markctl.layouts import render_svg

    layout = compose(_example(example))
    report = check(layout)
    assert report.passed, [(f.rule, f.message) for f in report.errors]
    prog = program(layout)
    assert program_from_json(json.loads(json.dumps(prog.to_dict()))).digest == prog.digest
    root = ET.fromstring(render_svg(layout, report.findings))  # well-formed XML
    assert root.tag.endswith("svg")


def test_rows_that_share_a_placement_compose_exactly_as_each_alone() -> None:
    # compose() shares the placement search between rows with the same part, profile and text
    # extent (a manifest); every layout must equal the one composed with nothing shared.
    import sys

    module = sys.modules["markctl.layouts.compose"]
    base = _example("iti-stockpile-datamatrix.toml")
    serials = ["0012345", "0012346", "0099999", "0012345", "1112345", "0012347"]
    module._FREE_CACHE.__dict__.clear()
    shared = [compose(base.with_fields(serial=s)) for s in serials]
    assert len(module._FREE_CACHE.__dict__["placements"]) < len(serials)  # some rows did share
    for serial, layout in zip(serials, shared, strict=True):
        module._FREE_CACHE.__dict__.clear()
        alone = compose(base.with_fields(serial=serial))
        assert [line.origin for line in layout.lines] == [line.origin for line in alone.lines]
        for got, want in zip(layout.lines, alone.lines, strict=True):
            for a, b in zip(got.glyphs, want.glyphs, strict=True):
                assert all(np.array_equal(x, y) for x, y in zip(a.strokes, b.strokes, strict=True))
        assert layout.code is not None and alone.code is not None and layout.code.origin == alone.code.origin
        assert layout.footprint.equals_exact(alone.footprint, 0.0)
        assert program(layout).digest == program(alone).digest


def test_a_dot_fonts_own_pitch_is_not_sent_only_an_asked_one() -> None:
    # The machine strikes a dot font at height / (rows - 1) when given no pitch; sending it would
    # round it to the register (0.28 for 0.2833 mm) and shift the line's last dots by 0.26 mm.
    req = _example("iti-stockpile-datamatrix.toml", "peen-modbus", datamatrix=False)
    prog = program(compose(req))
    assert isinstance(prog, PatternProgram) and {f.dot_pitch_mm for f in prog.fields} == {None}
    asked = program(
        compose(_example("iti-stockpile-datamatrix.toml", "peen-modbus", datamatrix=False, dot_pitch_mm=0.3))
    )
    assert isinstance(asked, PatternProgram) and {f.dot_pitch_mm for f in asked.fields} == {0.3}
