"""A program composed by ``layouts`` (the stockpile example) marks where the layout put its text.

Layouts name the pattern after the rule profile (``iti-stockpile``) and give every line its own
origin; the generic map loads pattern 1 for such names and carries the origins in its field-origin
block, so the simulated marker puts each line where the layout wanted it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from markctl.drivers.base import Outcome
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import read_manifest
from markctl.jobs.runner import precheck
from markctl.layouts.program import PatternProgram
from markctl.profiles import load_profile


async def test_stockpile_mark_lands_on_the_layouts_lines(peen_rig, repo: Path) -> None:
    examples = repo / "examples" / "stockpile"
    plan = precheck(
        read_manifest(examples / "manifest.csv"),
        Catalogue.load(examples / "parts.toml"),
        load_profile("peen-modbus"),
    )
    program = plan.prepared[0].program
    assert isinstance(program, PatternProgram) and program.pattern == "iti-stockpile"
    async with peen_rig() as rig:
        result = await rig.driver.run(program)
        assert result.outcome is Outcome.DONE and result.total == program.char_count
        assert rig.sim.marker.pattern_name == "1"
        strikes = rig.sim.marker.strikes
        for number, f in enumerate(program.fields, 1):
            assert rig.sim.marker.texts[number] == f.text
            assert rig.sim.marker.origins[number] == pytest.approx((f.x_mm, f.y_mm), abs=0.01)
            # the lowest dots of the line sit on its origin's y, its first dots on its x
            line = [s for s in strikes if f.y_mm - 0.01 <= s.y <= f.y_mm + f.height_mm + 0.01]
            assert min(s.y for s in line) == pytest.approx(f.y_mm, abs=0.01)
            assert max(s.y for s in line) == pytest.approx(f.y_mm + f.height_mm, abs=0.01)
            assert min(s.x for s in line) == pytest.approx(f.x_mm, abs=0.01)
