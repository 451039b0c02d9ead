"""The pre-check's cycle estimate: from the strokes in reading order, without making the program."""

from __future__ import annotations

from pathlib import Path

import pytest

from markctl.errors import LayoutError
from markctl.layouts import MarkRequest, compose
from markctl.layouts.toolpath import build_program, estimate_cycle_time_s, estimate_layout_cycle_s
from markctl.profiles import load_profile

EXAMPLES = Path(__file__).parents[2] / "examples" / "requests"


def _layout(name: str, machine: str, **fields: str):  # type: ignore[no-untyped-def]
    data = MarkRequest.from_toml((EXAMPLES / name).read_text()).model_dump(mode="json")
    data["machine"] = machine
    data["fields"].update(fields)
    data["options"]["today"] = "2026-11-27"
    if machine == "telesis-tmp":
        # Its stored pattern places the fields (5, 19), (5, 14), ... in its own font, height and
        # force, and it has no Data Matrix: a surface where they fall, and nothing else asked.
        data["component"].update(zone=[[0, 0], [100, 0], [100, 25], [0, 25]], existing_marks=[], keepouts=[])
        data["options"].update(origin_mm=[0.0, 0.0], datamatrix=False)
        for option in ("font", "char_height_mm", "force_pct", "rotation_deg"):
            data["options"].pop(option, None)
    return compose(MarkRequest.parse(data))


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.toml")))
@pytest.mark.parametrize("machine", ["grbl-1.1", "telesis-tmp"])
def test_the_estimate_without_a_program_is_the_unordered_programs_and_close_to_the_ordered(
    name: str, machine: str
) -> None:
    profile = load_profile(machine)
    try:
        layout = _layout(name, machine)
        quick = estimate_layout_cycle_s(layout, profile)
    except LayoutError as exc:  # an example this machine cannot mark (its fonts, its work area)
        with pytest.raises(LayoutError):
            build_program(_layout(name, machine), profile)  # the program is refused alike
        pytest.skip(f"{name} on {machine}: {exc}")
    unordered = estimate_cycle_time_s(build_program(layout, profile, optimise=False), profile)
    ordered = estimate_cycle_time_s(build_program(layout, profile), profile)
    assert quick == pytest.approx(unordered, rel=1e-9)
    # Ordering shortens the moves between strokes, a small part of a cycle (bench/precheck.py: +0.05
    # to +0.13 % on its mix): never more than 1 % here.
    assert ordered <= quick * (1 + 1e-9) and quick <= ordered * 1.01
