"""The operator's CLI flows on a simulated laser: batch, re-run, verify a photo, resolve, tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from markctl.cli import main
from markctl.records import ItemState, RecordStore, item_key_of

HEADER = "serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark\n"


@pytest.fixture
def env(repo: Path, tmp_path: Path, records_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MARKCTL_RECORDS", str(records_db))
    monkeypatch.setenv("MARKCTL_MACHINE", "sim://grbl-1.1?clock=instant")
    monkeypatch.setenv("MARKCTL_OPERATOR", "armourer-7")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "parts.toml").write_text((repo / "examples/import/parts.toml").read_text())
    return tmp_path


def _batch(env: Path, rows: str, *extra: str) -> int:
    (env / "manifest.csv").write_text(HEADER + rows)
    return main(
        [
            "batch",
            str(env / "manifest.csv"),
            "--parts",
            str(env / "parts.toml"),
            "--out",
            str(env / "out"),
            "--yes",
            *extra,
        ]
    )


def test_bad_rows_stop_the_batch_and_name_line_and_field(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        _batch(
            env, "B1,Beretta,92FS,iti-import,frame,KE,26,yes\nB2,Beretta,92FS,iti-import,frame,QQ,26,yes\n"
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "lines 3" in err and "nothing was marked" in err and "import_country" in err
    with RecordStore.open(env / "records.db") as store:
        assert store.head()[0] == 1  # only the registry's creation


@pytest.mark.slow
def test_batch_rerun_verify_photo(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _batch(env, "C1,Beretta,92FS,iti-import,frame,KE,26,yes\n") == 0
    capsys.readouterr()
    assert _batch(env, "C1,Beretta,92FS,iti-import,frame,KE,26,yes\n", "--json") == 0
    rerun = json.loads(capsys.readouterr().out)
    assert rerun["counts"] == {"skipped": 1}
    key = item_key_of("BERETTA|C1", "frame", "iti-import")
    with RecordStore.open(env / "records.db") as store:
        history = store.history(key)
        assert [r.event for r in history] == ["planned", "started", "marked"]
        photo = history[-1].data["image"]
    assert Path(photo).is_file()
    assert main(["verify", "--image", photo, "--record", str(history[-1].seq), "--px-per-mm", "20"]) == 0
    assert "PASS" in capsys.readouterr().out
    with RecordStore.open(env / "records.db") as store:
        verified = store.history(key)[-1]
        assert (
            verified.event == "verified"
            and verified.data["verification"]["passed"]
            and verified.actor == "armourer-7"
        )
    assert main(["records", "verify"]) == 0


def test_unknown_item_is_refused_until_a_supervisor_resolves_it(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = item_key_of("BERETTA|D1", "frame", "iti-import")
    with RecordStore.open(env / "records.db") as store:
        store.append(
            key, "planned", "op", weapon_key="BERETTA|D1", component="frame", mark_profile="iti-import"
        )
        store.append(key, "started", "op", {"machine": "sim://grbl-1.1", "simulated": True})
        store.append(key, "unknown", "op", {"reason": "link lost"})
    assert _batch(env, "D1,Beretta,92FS,iti-import,frame,KE,26,yes\n", "--json") == 1
    seen = capsys.readouterr()
    assert json.loads(seen.out)["counts"] == {"refused": 1}
    # The refusal names the whole item key and the exact command that resolves it.
    assert f"markctl items resolve '{key}' --outcome marked|not-marked" in seen.err
    assert main(["items", "resolve", key, "--outcome", "marked", "--reason", "mark present and legible",
                 "--supervisor", "sgt-ana"]) == 0  # fmt: skip
    with RecordStore.open(env / "records.db") as store:
        item = store.item(key)
        assert item is not None and item.state is ItemState.MARKED
        assert store.history(key)[-1].actor == "supervisor:sgt-ana"


def test_tokens_are_shown_once_and_stored_hashed(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokens", "create", "depot-1", "--role", "operator"]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) > 30
    stored = b"".join(p.read_bytes() for p in env.glob("records.db*"))  # the WAL file too
    assert stored and token.encode() not in stored
    assert main(["tokens", "create", "x", "--role", "admiral"]) == 2
    assert main(["tokens", "revoke", "depot-1"]) == 0
    capsys.readouterr()
    assert main(["tokens", "list"]) == 0
    assert "depot-1\toperator\trevoked" in capsys.readouterr().out
