"""What a failed check does: flags the item, stops the batch, reaches the person in one line."""

from __future__ import annotations

import asyncio
import base64
import zlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from markctl.api import create_app
from markctl.auth import TokenStore
from markctl.cli import main
from markctl.config import MachineEntry, Settings
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import parse_manifest
from markctl.jobs.runner import BatchReport, Prepared, precheck, run_plan
from markctl.machines import Machine, open_machine
from markctl.profiles import load_profile
from markctl.records import ItemState, RecordStore
from markctl.service import verify_item

REPO = Path(__file__).resolve().parents[2]
MANIFEST = (
    b"serial,manufacturer,model,calibre,mark_profile,components,owner_country,agency,year\n"
    b"GP-000417,Glock,G17,9x19mm,iti-stockpile,embedded-plate,KE,KDF,26\n"
    b"GP-000418,Glock,G17,9x19mm,iti-stockpile,embedded-plate,KE,KDF,26\n"
)


async def _run(repo: Path, store: RecordStore, *, go_on: bool, images: Path) -> BatchReport:
    plan = precheck(parse_manifest(MANIFEST), Catalogue.load(repo / "examples/stockpile/parts.toml"),
                    load_profile("grbl-1.1"))  # fmt: skip
    from markctl.service import load_part

    def check_first_against_the_next(prepared: Prepared, machine: Machine) -> dict[str, Any] | None:
        # The real check; for the first weapon, against the record of the next one (serial ...418):
        # what an inspector would see if the wrong serial had been cut.
        if prepared.item.item_key == plan.verdicts[0].item.item_key:  # items are rebuilt when marked
            return verify_item(plan.prepared[1], machine)
        return verify_item(prepared, machine)

    async with await open_machine("sim://grbl-1.1?clock=instant") as machine:
        return await run_plan(plan, machine, store, operator="op", load_part=load_part, images=images,
                              verify=check_first_against_the_next, continue_on_verify_fail=go_on)  # fmt: skip


async def test_a_failed_check_flags_the_item_and_stops_the_batch(
    repo: Path, tmp_path: Path, records_db: Path
) -> None:
    with RecordStore.open(records_db) as store:
        report = await _run(repo, store, go_on=False, images=tmp_path / "img")
        first, second = report.results
        assert first.state == "marked" and first.inspect and not report.ok
        assert "verification failed" in first.message and "reads '7', expected '8'" in first.message
        assert second.state == "refused" and "--continue-on-verify-fail" in second.message
        assert report.counts() == {"marked": 1, "refused": 1, "flagged for inspection": 1}
        # The mark's record stays as written; the flag is a record of its own, in the register.
        history = store.history(first.item_key)
        assert [r.event for r in history] == ["planned", "started", "marked", "verified"]
        assert history[2].data["verification"]["passed"] is False
        assert history[3].data["inspect"] is True and history[3].data["marked"] == history[2].seq
        item = store.item(first.item_key)
        assert item is not None and item.state is ItemState.MARKED  # cut: never marked again by accident


@pytest.fixture(scope="module")
def went_on(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BatchReport]:
    """A batch run with --continue-on-verify-fail (marking on the simulator is the slow part: once)."""
    folder = tmp_path_factory.mktemp("went-on")
    RecordStore.init(folder / "records.db", site="test-depot", training=True).close()
    with RecordStore.open(folder / "records.db") as store:
        report = asyncio.run(_run(REPO, store, go_on=True, images=folder / "img"))
    return folder / "records.db", report


def test_continue_on_verify_fail_goes_on(went_on: tuple[Path, BatchReport]) -> None:
    _, report = went_on
    assert [r.state for r in report.results] == ["marked", "marked"]
    assert [r.inspect for r in report.results] == [True, False]
    assert report.results[1].verification and report.results[1].verification["passed"]


@pytest.fixture
def marked(went_on: tuple[Path, BatchReport], tmp_path: Path) -> tuple[RecordStore, int, Path]:
    """A copy of those records, the second weapon's marked record and the simulator's image of it."""
    db, report = went_on
    copy = tmp_path / "records.db"
    copy.write_bytes(db.read_bytes())
    second = report.results[1]
    assert second.record is not None and second.image is not None
    return RecordStore.open(copy), second.record, Path(second.image)


def test_verify_image_endpoint_limits(marked: tuple[RecordStore, int, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    store, seq, image = marked
    token = TokenStore(store).create("auditor-1", "auditor")
    app = create_app(Settings(machines={"laser": MachineEntry(address="sim://grbl-1.1?clock=instant")}),
                     store=store, out_dir=tmp_path / "out")  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}

    def post(raw: bytes) -> Any:
        body = {"image_base64": base64.b64encode(raw).decode()}
        return client.post(f"/records/{seq}/verify-image", json=body, headers=headers)

    with TestClient(app) as client:
        ok = post(image.read_bytes())
        assert ok.status_code == 200, ok.text
        verification = ok.json()["data"]["verification"]
        assert verification["passed"] and verification["text_read"][-1] == "GP-000418"
        # A header claiming 60000 x 60000 pixels: refused before decoding.
        ihdr = (60000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
        claim = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + ihdr
        claim += (
            zlib.crc32(b"IHDR" + ihdr).to_bytes(4, "big") + (100).to_bytes(4, "big") + b"IDAT" + bytes(100)
        )
        huge = post(claim)
        assert huge.status_code == 413 and "megapixels" in huge.json()["detail"]
        truncated = post(image.read_bytes()[:-200])
        assert truncated.status_code == 422 and "truncated or corrupt" in truncated.json()["detail"]
        monkeypatch.setenv("MARKCTL_PHOTO_MAX_BYTES", "1000")
        assert post(image.read_bytes()).status_code == 413
    # Each check is a record of its own: one verified record, the refusals none.
    assert [r.event for r in store.history(store.get(seq).item_key)].count("verified") == 1  # type: ignore[union-attr]
    store.close()


def test_cli_verify_says_a_wrong_scale_and_refuses_a_bad_photo_in_one_line(
    marked: tuple[RecordStore, int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, seq, image = marked
    path = str(tmp_path / "records.db")
    store.close()
    assert main(["verify", "--image", str(image), "--record", str(seq), "--px-per-mm", "10",
                 "--records", path, "--operator", "inspector"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("PASS: matches the layout") and "--px-per-mm 10 does not match the photo" in out
    broken = tmp_path / "broken.png"
    Image.new("L", (300, 200), 128).save(broken)
    broken.write_bytes(broken.read_bytes()[:-30])
    assert main(["verify", "--image", str(broken), "--record", str(seq), "--records", path,
                 "--operator", "inspector"]) != 0  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated or corrupt" in err[0] and "Traceback" not in err[0]
