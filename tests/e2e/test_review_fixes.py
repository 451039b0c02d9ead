"""Controller review fixes: identities, overrides, precedence, API statuses, demo folder, late errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from markctl.cli import main
from markctl.config import Settings, load_settings
from markctl.errors import ConfigError
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import parse_manifest
from markctl.jobs.runner import precheck, run_plan
from markctl.machines import open_machine
from markctl.profiles import load_profile
from markctl.records import ItemState, RecordStore

REQUEST = "examples/requests/iti-stockpile-datamatrix.toml"  # engraves serial 0012345


def test_mark_refuses_an_identity_that_is_not_what_it_engraves(repo: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    # The registry does not exist: the inputs are judged (and refused) before it is looked for.
    base = ["mark", str(repo / REQUEST), "--machine", "sim://telesis-tmp", "--operator", "op",
            "--records", str(tmp_path / "r.db")]  # fmt: skip
    assert main([*base, "--serial", "AAA111", "--manufacturer", "ACME"]) == 2
    assert "engraves serial '0012345' but --serial says 'AAA111'" in capsys.readouterr().err
    assert main([*base, "--serial", "", "--manufacturer", "ACME"]) == 2
    assert main([*base, "--serial", "0012345", "--manufacturer", " "]) == 2
    assert not (tmp_path / "r.db").exists()


def test_environment_machine_beats_the_file_default(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.model_validate({"defaults": {"machine": "laser"}})
    monkeypatch.setenv("MARKCTL_MACHINE", "peen")
    assert settings.machine_name() == "peen" and settings.machine_name("flag") == "flag"
    monkeypatch.delenv("MARKCTL_MACHINE")
    assert settings.machine_name() == "laser"
    assert isinstance(load_settings, object)


async def test_blank_override_reasons_are_refused(repo: Path, records_db: Path) -> None:
    manifest = parse_manifest(b"serial,manufacturer,model,mark_profile,components,import_country,import_year,"
                              b"has_unique_mark\nO1,Beretta,92FS,iti-import,frame,KE,26,yes\n")  # fmt: skip
    plan = precheck(manifest, Catalogue.load(repo / "examples/import/parts.toml"), load_profile("grbl-1.1"))
    with RecordStore.open(records_db) as store:
        machine = await open_machine("sim://grbl-1.1", connect=False)
        try:
            with pytest.raises(ConfigError, match="needs a reason"):
                await run_plan(plan, machine, store, operator="op", overrides={2: "  "}, override_by="sup")
            with pytest.raises(ConfigError, match="names the supervisor"):
                await run_plan(plan, machine, store, operator="op", overrides={2: "waived"}, override_by=" ")
        finally:
            await machine.close()
        assert store.head()[0] == 1  # only the registry's creation


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path: Path, repo: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    precious = tmp_path / "records"
    precious.mkdir()
    (precious / "records.db").write_bytes(b"the national register")
    assert main(["demo", "--out", str(precious), "--examples", str(repo / "examples")]) == 2
    assert (precious / "records.db").read_bytes() == b"the national register"
    assert "was not made by markctl demo" in capsys.readouterr().err


async def test_a_failing_check_after_marking_does_not_lose_the_mark(
    repo: Path, tmp_path: Path, records_db: Path
) -> None:
    manifest = parse_manifest(b"serial,manufacturer,model,mark_profile,components,import_country,import_year,"
                              b"has_unique_mark\nV1,Beretta,92FS,iti-import,frame,KE,26,yes\n")  # fmt: skip
    plan = precheck(manifest, Catalogue.load(repo / "examples/import/parts.toml"), load_profile("grbl-1.1"))

    def broken_verify(prepared: object, machine: object) -> dict[str, object]:
        raise RuntimeError("camera unplugged")

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with RecordStore.open(records_db) as store:
        async with await open_machine("sim://grbl-1.1") as machine:
            report = await run_plan(
                plan, machine, store, operator="op", verify=broken_verify, images=not_a_folder
            )
        (result,) = report.results
        assert result.state == "marked" and "verification could not run" in result.message
        item = store.item(result.item_key)
        assert item is not None and item.state is ItemState.MARKED
        last = store.history(result.item_key)[-1]
        assert last.data["verification"]["passed"] is False and last.data["image"].startswith("not saved")
