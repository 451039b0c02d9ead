"""A batch shows what it will cut before it cuts: the pre-check table with estimated times, a
confirmation asked on a terminal, a dry run that writes previews and a contact sheet, and a Ctrl-C
that says what became of the item in the middle of its cycle."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from markctl.cli import main
from markctl.records import RecordStore

MANIFEST = """serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark
K1,Beretta,92FS,iti-import,frame,KE,26,yes
K2,Beretta,92FS,iti-import,frame,KE,26,yes
"""


@pytest.fixture
def workdir(tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MARKCTL_RECORDS", str(tmp_path / "records.db"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "manifest.csv").write_text(MANIFEST)
    (tmp_path / "parts.toml").write_text((repo / "examples/import/parts.toml").read_text())
    return tmp_path


def _cmd(workdir: Path, clock: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "markctl", "batch", str(workdir / "manifest.csv"), "--parts",
            str(workdir / "parts.toml"), "--machine", f"sim://grbl-1.1?clock={clock}", "--operator", "op",
            "--records", str(workdir / "records.db"), *extra]  # fmt: skip


def test_dry_run_writes_previews_and_a_contact_sheet(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = workdir / "previews"
    assert main(["batch", "manifest.csv", "--parts", "parts.toml", "--machine", "sim://grbl-1.1",
                 "--dry-run", "--out", str(out)]) == 0  # fmt: skip
    seen = capsys.readouterr()
    assert "est. time" in seen.out and "2 item(s) to mark" in seen.out and "estimated cycle time" in seen.out
    assert "no machine was touched" in seen.err
    assert sorted(p.name for p in out.glob("*.svg")) == ["BERETTA_K1_frame_iti-import.svg",
                                                         "BERETTA_K2_frame_iti-import.svg"]  # fmt: skip
    assert len(list(out.glob("BERETTA_*.png"))) == 2
    with Image.open(out / "contact-sheet.png") as sheet:
        assert sheet.width >= 2 * 300 and sheet.getextrema() != ((255, 255), (255, 255), (255, 255))
    assert not (workdir / "records.db").exists(), "a dry run records nothing"


def test_terminal_is_asked_and_no_means_nothing_is_cut(
    workdir: Path, new_registry: Callable[..., Path]
) -> None:
    with RecordStore.open(new_registry(workdir / "records.db")) as store:
        before = store.head()
    master, slave = pty.openpty()
    proc = subprocess.Popen(_cmd(workdir, "instant"), stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=workdir, text=True)  # fmt: skip
    os.close(slave)
    try:
        os.write(master, b"n\n")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
    assert proc.returncode == 1, err
    assert "Mark these items on sim://grbl-1.1?clock=instant?" in err
    assert err.rstrip().endswith("markctl: declined: nothing was marked")
    assert "pre-check" in out and "estimated cycle time" in out
    with RecordStore.open(workdir / "records.db") as store:
        assert store.head() == before, "declined: nothing recorded, nothing cut"


@pytest.mark.slow
def test_ctrl_c_says_what_became_of_the_item_and_how_to_resolve_it(
    workdir: Path, new_registry: Callable[..., Path], read_states: Callable[[Path], dict[str, str]]
) -> None:
    new_registry(workdir / "records.db")
    proc = subprocess.Popen(_cmd(workdir, "scaled:30", "--yes"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=workdir, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "started" not in read_states(workdir / "records.db").values():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no item started"
            time.sleep(0.05)
        time.sleep(
            2.0
        )  # well inside the first item's cycle (about 9 s at scaled:30), even on a loaded machine
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    key = "BERETTA|K1|frame|iti-import"
    assert read_states(workdir / "records.db")[key] == "unknown"
    lines = [line for line in err.splitlines() if line.startswith("markctl: ")]
    assert lines[0].startswith("markctl: interrupted (Ctrl-C)")
    assert any(f"{key} is recorded 'unknown'" in line
               and f"markctl items resolve '{key}' --outcome marked|not-marked" in line for line in lines)  # fmt: skip


def test_the_table_shows_each_finding_with_its_rule(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "bad.csv").write_text(
        MANIFEST.splitlines()[0] + "\nB2,Beretta,92FS,iti-import,frame,QQ,26,yes\n"
    )
    assert main(["batch", "bad.csv", "--parts", "parts.toml", "--machine", "sim://grbl-1.1", "--dry-run",
                 "--out", str(workdir / "p")]) == 1  # fmt: skip
    out = capsys.readouterr().out
    assert "BERETTA|B2|frame|iti-import" in out and "[ITI-8b] country of import: 'QQ'" in out


def test_bracketed_text_in_the_table_is_shown_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    """A rule id from a user's own rule file ("[eu-depth]") is text, not rich markup."""
    from markctl.cli.jobs import print_rows

    print_rows([{"line": 2, "item": "A|B1|frame|mine", "verdict": "not compliant",
                 "problems": ["[eu-depth] engrave: 0.05 mm vs >= 0.1 mm"]}])  # fmt: skip
    assert "[eu-depth] engrave" in capsys.readouterr().out


def _count_orderings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every stroke ordering from here on: [whole marks, marks ordered by parts]."""
    from markctl.layouts import ordering

    calls = [0, 0]
    order, order_parts = ordering.order, ordering.order_parts

    def counted_order(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return order(*args, **kwargs)

    def counted_parts(*args: Any, **kwargs: Any) -> Any:
        calls[1] += 1
        return order_parts(*args, **kwargs)

    monkeypatch.setattr(ordering, "order", counted_order)
    monkeypatch.setattr(ordering, "order_parts", counted_parts)
    return calls


def test_the_pre_check_table_and_previews_order_no_stroke(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table's times come with the verdicts (strokes in reading order); previews need no program."""
    calls = _count_orderings(monkeypatch)
    assert main(["batch", "manifest.csv", "--parts", "parts.toml", "--machine", "sim://grbl-1.1",
                 "--dry-run", "--out", str(workdir / "previews")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert calls == [0, 0], "a dry run ordered strokes"
    assert "2 item(s) to mark" in out and "estimated cycle time 0:00" not in out  # the times are there
    assert (workdir / "previews" / "contact-sheet.png").exists()


def test_a_dry_run_without_out_shows_the_table_and_writes_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in workdir.iterdir())
    assert (
        main(["batch", "manifest.csv", "--parts", "parts.toml", "--machine", "sim://grbl-1.1", "--dry-run"])
        == 0
    )
    seen = capsys.readouterr()
    assert "BERETTA|K2|frame|iti-import" in seen.out and "2 item(s) to mark" in seen.out
    err = " ".join(seen.err.split())  # rich wraps lines at the terminal's width
    assert "no machine was touched" in err and "--out DIR writes previews" in err
    assert sorted(p.name for p in workdir.iterdir()) == before


def test_marking_orders_each_item_once(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, new_registry: Callable[..., Path]
) -> None:
    new_registry(workdir / "records.db")
    calls = _count_orderings(monkeypatch)
    assert main(_cmd(workdir, "instant", "--yes")[3:]) == 0
    assert calls[1] == 2, "each of the two items is ordered once, when it is marked"
