"""``markctl records``: list, show, verify (exit 1 on tampering), export."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from markctl.cli import main
from markctl.records import RecordStore, item_key_of


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "r.db"
    with RecordStore.open(path) as store:
        for serial in ("A1", "A2"):
            key = item_key_of(f"ACME|{serial}", "frame", "iti-import")
            store.append(key, "planned", "op", weapon_key=f"ACME|{serial}", component="frame",
                         mark_profile="iti-import", batch_id="B1")  # fmt: skip
            store.append(key, "started", "op")
            store.append(key, "marked", "op")
    return path


def test_list_and_show(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["records", "list", "--records", str(db), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in rows] == ["marked", "marked"]
    assert main(["records", "show", "--records", str(db), "ACME|A2|frame|iti-import"]) == 0
    assert [r["event"] for r in json.loads(capsys.readouterr().out)] == ["planned", "started", "marked"]
    assert main(["records", "show", "--records", str(db), "2"]) == 0
    assert json.loads(capsys.readouterr().out)["event"] == "started"
    assert main(["records", "show", "--records", str(db), "NOPE"]) == 2


def test_verify_exit_codes(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["records", "verify", "--records", str(db)]) == 0
    assert "records intact: 6 rows" in capsys.readouterr().out
    con = sqlite3.connect(db)
    con.execute("UPDATE journal SET state = 'failed' WHERE seq = 3")
    con.commit()
    con.close()
    assert main(["records", "verify", "--records", str(db)]) == 1
    captured = capsys.readouterr()
    assert "TAMPERED: row 3: altered" in captured.err and "NOT intact" in captured.out


def test_export_csv_to_file(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export.csv"
    assert main(["records", "export", "--records", str(db), "--format", "csv", "-o", str(out)]) == 0
    assert out.read_text().count("\n") == 7 and "exported 6 records" in capsys.readouterr().err
    assert main(["records", "export", "--records", str(db), "--format", "xml"]) == 2
