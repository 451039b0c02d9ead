"""A pattern machine strikes where its stored pattern says, and the layout says the same.

A Telesis-style marker takes no position from the host: its stored pattern puts each field. The
layout is composed at the profile's ``pattern_origins`` (and, as the protocol sends no height, at
``pattern_char_height_mm``), so the compliance check judges what the machine strikes. Checked from
outside: ``markctl batch`` runs as a subprocess against ``sim://telesis-tmp``; the dots found in the
burned-workpiece image are compared one by one with the layout composed again from the recorded
request; the check after marking (the dot-peen judge: each character, each dot) passes, and
``markctl verify`` reads every character and finds every dot in that image as a photo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from markctl.layouts import MarkRequest, compose
from markctl.layouts import program as make_program
from markctl.profiles import load_profile
from markctl.records import RecordStore, item_key_of

HEADER = "serial,manufacturer,model,calibre,mark_profile,components,owner_country,agency,year\n"
ROW = "GP-000417,Glock,G17,9x19mm,iti-stockpile,embedded-plate,KE,KDF,26\n"
# The example's embedded plate, 32 x 16 mm, put under the head where telesis-tmp's pattern fields
# 1 and 2 (5, 19 and 5, 14 mm) fall on it; 3 mm thick, since the pattern's dents (about 0.24 mm in
# this plate) would be too deep for a 2 mm wall (ENG-WALL: at most 10 %).
PARTS = """
[parts.embedded-plate]
material = "embedded-steel-plate"
wall_thickness_mm = 3.0
zone = [[0, 0], [32, 0], [32, 16], [0, 16]]
[parts.embedded-plate.options]
origin_mm = [2, {y}]
"""
PX_PER_MM = 20.0  # the service's simulated workpiece resolution
PLATE_MARGIN_MM = 5.0  # the simulated plate extends this far around the zone (service.load_part)


def markctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "markctl", *args], env=env, cwd=env["HOME"], capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture
def env(tmp_path: Path, records_db: Path) -> dict[str, str]:
    (tmp_path / "manifest.csv").write_text(HEADER + ROW)
    return {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "MARKCTL_RECORDS": str(records_db),
        "MARKCTL_MACHINE": "sim://telesis-tmp?clock=instant",
        "MARKCTL_OPERATOR": "armourer-7",
    }


def batch(env: dict[str, str], plate_y: float) -> subprocess.CompletedProcess[str]:
    home = Path(env["HOME"])
    (home / "parts.toml").write_text(PARTS.format(y=plate_y))
    return markctl(env, "batch", "manifest.csv", "--parts", "parts.toml", "--out", "out", "--yes", "--json")


def struck_dots(image: Path, origin: tuple[float, float]) -> np.ndarray:
    """Centres (mm, machine frame) of the dents in a simulated workpiece image.

    Neighbouring dents touch, so each is found by its deepest (darkest) point: a local maximum of
    darkness, a few equal pixels when the centre falls on a pixel corner.
    """
    pixels = np.asarray(Image.open(image), dtype=np.float64)
    dark = np.clip(225.0 - pixels, 0.0, None)
    peaks = (dark == ndimage.maximum_filter(dark, size=5)) & (dark > 0.5 * dark.max())
    labels, count = ndimage.label(peaks)
    rows_cols = np.array(ndimage.center_of_mass(peaks, labels, range(1, count + 1)))
    height_mm = pixels.shape[0] / PX_PER_MM
    xs = origin[0] + (rows_cols[:, 1] + 0.5) / PX_PER_MM
    ys = origin[1] + height_mm - (rows_cols[:, 0] + 0.5) / PX_PER_MM
    return np.column_stack((xs, ys))


@pytest.mark.slow
def test_the_dots_struck_are_the_layouts_and_verification_passes(env: dict[str, str]) -> None:
    done = batch(env, plate_y=7)
    assert done.returncode == 0, done.stdout + done.stderr
    key = item_key_of("GLOCK|GP-000417", "embedded-plate", "iti-stockpile")
    with RecordStore.open(Path(env["MARKCTL_RECORDS"])) as store:
        history = store.history(key)
    assert [r.event for r in history] == ["planned", "started", "marked"]
    started, marked = history[1].data, history[2].data

    # The layout, composed again from the recorded request, is the one whose program was sent.
    request = MarkRequest.parse(started["request"])
    layout = compose(request)
    profile = load_profile("telesis-tmp")
    assert make_program(layout, profile).digest == started["program_digest"]
    spec = profile.dot_peen
    assert spec is not None
    assert [line.origin for line in layout.lines] == [
        (x - 2.0, y - 7.0) for x, y in spec.pattern_origins[: len(layout.lines)]
    ]
    assert {line.height_mm for line in layout.lines} == {spec.pattern_char_height_mm}

    # Every dot the simulator struck is one the layout has, and every dot of the layout was struck.
    expected = np.concatenate([s for line in layout.lines for s in line.strokes()]) + np.array([2.0, 7.0])
    zx, zy = min(x for x, _ in request.component.zone), min(y for _, y in request.component.zone)
    image = Path(env["HOME"]) / marked["image"]  # relative to the batch's working folder
    found = struck_dots(image, (2.0 + zx - PLATE_MARGIN_MM, 7.0 + zy - PLATE_MARGIN_MM))
    gaps = np.hypot(*(found[:, None, :] - expected[None, :, :]).transpose(2, 0, 1))

    assert len(found) == len(expected)
    gaps = np.hypot(*(found[:, None, :] - expected[None, :, :]).transpose(2, 0, 1))
    assert gaps.min(axis=1).max() < 0.05 and gaps.min(axis=0).max() < 0.05

    # The batch's own check after marking is the dot-peen judge: each character read, each dot found
    # and none extra, at the size of the dents the machine made.
    verification = marked["verification"]
    assert verification["passed"], verification
    assert verification["dots"] == {"total": len(expected), "missing": [], "extra": [],
                                    "missing_count": 0, "extra_count": 0}  # fmt: skip
    assert verification["text_read"] == [line.text for line in layout.lines] == ["KE KDF 26", "GP-000417"]

    # Read back from the image as a photo (registered from the image itself), every character and
    # every dot is found too. (Its extra-dot count is not asserted: a photo does not say how wide the
    # dents are, and the layout's process model plans narrower ones than the simulator strikes.)
    checked = markctl(
        env, "verify", "--image", str(image), "--record", str(history[2].seq), "--px-per-mm", "20"
    )
    assert "recorded as" in checked.stdout, checked.stdout + checked.stderr
    with RecordStore.open(Path(env["MARKCTL_RECORDS"])) as store:
        photo = store.history(key)[-1].data["verification"]
    assert photo["text_read"] == verification["text_read"] and not photo["mismatches"]
    assert photo["dots"]["missing_count"] == 0 and photo["coverage"] == 1.0


def test_a_pattern_field_off_the_part_is_refused_naming_field_origin_and_key(env: dict[str, str]) -> None:
    # The plate 5 mm lower (y 2-18 mm): the pattern's field 1 (5, 19 mm) lies above it.
    refused = batch(env, plate_y=2)
    assert refused.returncode != 0
    report = json.loads(refused.stdout) if refused.stdout.strip().startswith("{") else None
    text = refused.stdout + refused.stderr
    assert "telesis-tmp's stored pattern strikes field 1 (fields.owner_country" in text, text
    assert "(5, 19) mm ([dot_peen] pattern_origins[0])" in text and "runs off the zone" in text
    assert "change the pattern on the controller" in text
    assert report is None or report.get("counts", {}).get("marked", 0) == 0
    with RecordStore.open(Path(env["MARKCTL_RECORDS"])) as store:
        assert store.head()[0] == 1  # nothing recorded beyond the registry's creation
