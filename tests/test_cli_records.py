"""``markctl records`` as a person uses it: init, the refusals that keep the wrong registry out,
show, register, verify with checkpoints, backup, export; plus ``items resolve`` of a stuck item."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from markctl.cli import main
from markctl.jobs.owner import this_process
from markctl.records import RecordStore, item_key_of

HEADER = "serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark\n"
SIM = {"machine": "sim://grbl-1.1", "simulated": True}


def _mark(
    store: RecordStore, maker: str, serial: str, *, batch: str = "B1", fields: dict[str, str] | None = None
) -> str:
    weapon = f"{maker}|{serial}".upper()
    key = item_key_of(weapon, "frame", "iti-import")
    store.append(key, "planned", "op", {"line": 2, "identity": {"manufacturer": maker, "serial": serial, "model": "92FS"}},
                 weapon_key=weapon, component="frame", mark_profile="iti-import", batch_id=batch)  # fmt: skip
    store.append(
        key,
        "started",
        "op",
        {**SIM, "request": {"fields": fields or {"serial": serial, "import_country": "KE"}}},
    )
    store.append(key, "marked", "op", {"verification": {"passed": True, "detail": "92% cut"}, "image": None})
    return key


@pytest.fixture
def db(records_db: Path) -> Path:
    with RecordStore.open(records_db) as store:
        for serial in ("A1", "A2"):
            _mark(store, "ACME", serial)
    return records_db


# --- §1 never the wrong registry ----------------------------------------------------------------


def test_init_makes_an_owner_only_registry_and_refuses_a_second_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "depot.db"
    assert main(["records", "init", str(path), "--site", "Depot North"]) == 0
    out = capsys.readouterr().out
    assert f"created the production registry of site 'Depot North' at {path}" in out and "fingerprint" in out
    with RecordStore.open(path) as store:  # while it is open, SQLite keeps its WAL and SHM files
        store.append("ACME|P1|frame|iti-import", "planned", "op", weapon_key="ACME|P1", component="frame",
                     mark_profile="iti-import")  # fmt: skip
        for name in ("depot.db", "depot.db-wal", "depot.db-shm", "depot.db.key"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert main(["records", "init", str(path), "--site", "Other"]) == 1
    assert "exists already" in capsys.readouterr().err


def test_a_misspelt_registry_is_refused_and_nothing_is_marked_or_created(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["records", "init", "depot.db", "--site", "Depot", "--training"]) == 0
    (tmp_path / "m.csv").write_text(HEADER + "T1,Beretta,92FS,iti-import,frame,KE,26,yes\n")
    parts = str(repo / "examples/import/parts.toml")
    capsys.readouterr()
    args = [
        "batch",
        "m.csv",
        "--parts",
        parts,
        "--machine",
        "sim://grbl-1.1?clock=instant",
        "--operator",
        "op",
    ]
    assert main([*args, "--records", "depto.db"]) == 2
    err = capsys.readouterr().err
    assert f"no registry at {tmp_path / 'depto.db'}" in err and "--records" in err and "records init" in err
    assert err.count("\n") == 1  # one line: cause and next step
    assert not (tmp_path / "depto.db").exists()
    with RecordStore.open(tmp_path / "depot.db") as store:
        assert store.items() == []
    # Inputs are judged before the registry: a misspelt option is named even with a bad registry.
    bad = ["batch", "m.csv", "--parts", parts, "--machine", "sim://grbl-1.1?clok=instant", "--operator", "op"]
    assert main([*bad, "--records", "depto.db"]) == 2
    assert "clok" in capsys.readouterr().err
    # The right registry works and says where it wrote.
    assert main([*args, "--records", "depot.db", "--out", "out", "--yes"]) == 0
    assert (
        f"wrote to the TRAINING registry of site 'Depot' at {tmp_path / 'depot.db'}"
        in capsys.readouterr().err
    )
    # The workpiece image is kept by content beside the registry, whatever happens to out/.
    assert main(["records", "show", "t1", "--records", "depot.db"]) == 0
    shown = capsys.readouterr().out
    image = Path(shown.split("image:")[1].split()[0])
    assert image.parent == tmp_path / "depot.db.images" and "(SIMULATED)" in shown
    assert hashlib.sha256(image.read_bytes()).hexdigest() == image.stem
    # The register shows the mark as it was cut (its lines), not a paraphrase of the request.
    assert main(["records", "register", "--records", "depot.db", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["serial"], r["mark_text"]) for r in rows] == [("T1", "KE 26")]


def test_a_database_without_a_registry_is_refused_by_every_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).close()
    for command in (["records", "list"], ["records", "verify"], ["records", "register"], ["tokens", "list"]):
        assert main([*command, "--records", str(plain)]) == 2, command
        assert "holds no initialised registry" in capsys.readouterr().err


# --- §2 simulated marks are never real marks ------------------------------------------------------


def test_production_registry_refuses_a_simulated_machine(
    repo: Path, production_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.csv").write_text(HEADER + "P1,Beretta,92FS,iti-import,frame,KE,26,yes\n")
    code = main(["batch", str(tmp_path / "m.csv"), "--parts", str(repo / "examples/import/parts.toml"),
                 "--machine", "sim://grbl-1.1?clock=instant", "--operator", "op", "--records", str(production_db)])  # fmt: skip
    assert code == 1
    assert "is simulated; the production registry of site 'test-depot'" in capsys.readouterr().err
    with RecordStore.open(production_db) as store:
        assert store.items() == [] and store.head()[0] == 1


def test_stuck_started_item_is_resolved_in_one_step_when_its_owner_is_gone(
    records_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    with RecordStore.open(records_db) as store:
        gone = item_key_of("ACME|K1", "frame", "iti-import")
        live = item_key_of("ACME|K2", "frame", "iti-import")
        for key, owner in ((gone, {**this_process(), "pid": int(dead.stdout)}), (live, this_process())):
            store.append(
                key,
                "planned",
                "op",
                weapon_key=key.rsplit("|", 2)[0],
                component="frame",
                mark_profile="iti-import",
            )
            store.append(key, "started", "op", {**SIM, "owner": owner})
    resolve = ["items", "resolve", "--outcome", "not-marked", "--reason", "no mark on the frame", "--supervisor", "ana",
               "--records", str(records_db)]  # fmt: skip
    assert main([*resolve[:2], gone, *resolve[2:]]) == 0
    out = capsys.readouterr().out
    assert "-> unknown" in out and "-> failed" in out
    assert main([*resolve[:2], live, *resolve[2:]]) == 1  # its owner (this process) still runs
    assert "is being marked right now (process" in capsys.readouterr().err
    with RecordStore.open(records_db) as store:
        assert [r.event for r in store.history(gone)] == ["planned", "started", "unknown", "resolved"]
        assert store.verify().ok


# --- §3 a register people can read --------------------------------------------------------------


def test_show_by_serial_alone_any_case_and_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["records", "show", "--records", str(db), "a2"]) == 0
    out = capsys.readouterr().out
    assert "ACME|A2" in out and "mark text:    import_country: KE / serial: A2" in out
    assert "(SIMULATED)" in out and "verification: pass: 92% cut" in out
    assert main(["records", "show", "--records", str(db), "acme|a2", "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert [r["event"] for r in full["items"][0]["history"]] == ["planned", "started", "marked"]
    with RecordStore.open(db) as store:
        _mark(store, "Other Maker", "A2")
    assert main(["records", "show", "--records", str(db), "A2"]) == 0
    assert "2 weapons carry serial A2" in capsys.readouterr().out
    assert main(["records", "show", "--records", str(db), "NOPE"]) == 2
    with RecordStore.open(db) as store:
        _mark(store, "Walther", "0012345")
    capsys.readouterr()
    assert main(["records", "show", "--records", str(db), "0012345"]) == 0  # digits that are a serial
    assert "WALTHER|0012345" in capsys.readouterr().out
    assert main(["records", "show", "--records", str(db), "3"]) == 0  # digits that are a record number
    assert json.loads(capsys.readouterr().out)["event"] == "started"


def test_register_csv_is_formula_safe_and_filters(
    records_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with RecordStore.open(records_db) as store:
        _mark(store, "=cmd|' /C calc'!A0", "X1", fields={"serial": "X1", "importer": "@SUM(1+1)"})
        _mark(store, "Beretta", "X2", batch="B2")
    assert main(["records", "register", "--records", str(records_db), "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0][:4] == ["weapon", "manufacturer", "model", "serial"] and len(rows) == 3
    cells = [c for row in rows for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert "'=cmd|' /C calc'!A0" in cells
    assert (
        main(["records", "register", "--records", str(records_db), "--format", "csv", "--batch", "B2"]) == 0
    )
    assert len(list(csv.reader(io.StringIO(capsys.readouterr().out)))) == 2
    assert main(["records", "register", "--records", str(records_db), "--since", "2999-01-01"]) == 0
    assert "0 weapon(s)" in capsys.readouterr().out


def test_register_xlsx_and_pdf(db: Path, tmp_path: Path) -> None:
    assert (
        main(
            ["records", "register", "--records", str(db), "--format", "xlsx", "-o", str(tmp_path / "r.xlsx")]
        )
        == 0
    )
    with zipfile.ZipFile(tmp_path / "r.xlsx") as book:
        sheet = book.read("xl/worksheets/sheet1.xml").decode()
    assert "ACME|A2" in sheet and "<f>" not in sheet
    assert (
        main(["records", "register", "--records", str(db), "--format", "pdf", "-o", str(tmp_path / "r.pdf")])
        == 0
    )
    pdf = (tmp_path / "r.pdf").read_bytes()
    assert (
        pdf.startswith(b"%PDF")
        and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page>") + pdf.count(b"/Type /Page ") >= 2
    )
    assert main(["records", "register", "--records", str(db), "--format", "xlsx"]) == 2  # needs a file


# --- §4 checkpoints ------------------------------------------------------------------------------


def _rewrite_consistently(path: Path, change: Callable[[str], str]) -> None:
    """What a forger with write access does: change content and recompute every hash after it."""
    con = sqlite3.connect(path)
    prev = "0" * 64
    for seq, body in con.execute("SELECT seq, body FROM journal ORDER BY seq").fetchall():
        new_body = change(body)
        content = json.loads(new_body)
        if content["event"] == "checkpoint":  # make it sign the new chain's head (without the key)
            content["data"].update(seq=seq - 1, hash=prev)
            new_body = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(f"{prev}\n{new_body}".encode()).hexdigest()
        con.execute(
            "UPDATE journal SET body = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (new_body, prev, digest, seq),
        )
        prev = digest
    con.execute("UPDATE chain_head SET hash = ?", (prev,))
    con.commit()
    con.close()


def test_checkpoint_catches_a_consistent_rewrite(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["records", "checkpoint", "--records", str(db), "-o", str(tmp_path / "cp.json")]) == 0
    out = capsys.readouterr()
    code = out.out.split("paper code: ")[1].split()[0]
    assert "wrote to the TRAINING registry" in out.err
    with RecordStore.open(db) as store:
        _mark(store, "ACME", "A3")  # a legitimate write after the checkpoint
    # Any earlier head on the chain passes: the paper code and the exported file.
    assert main(["records", "verify", "--records", str(db), "--expect-head", code]) == 0
    assert main(["records", "verify", "--records", str(db), "--checkpoint", str(tmp_path / "cp.json")]) == 0
    assert "1 signed checkpoint(s)" in capsys.readouterr().out
    _rewrite_consistently(db, lambda body: body.replace('"A1"', '"A9"'))
    assert main(["records", "verify", "--records", str(db)]) == 1
    assert "checkpoint: the signature is not the site key's" in capsys.readouterr().err


def test_checkpoint_file_catches_a_deleted_tail(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["records", "checkpoint", "--records", str(db), "-o", str(tmp_path / "cp.json")]) == 0
    capsys.readouterr()
    con = sqlite3.connect(
        db
    )  # delete the checkpoint and the last mark, and rewind the head: internally clean
    con.execute("DELETE FROM journal WHERE seq >= 7")
    prev = con.execute("SELECT hash FROM journal WHERE seq = 6").fetchone()[0]
    con.execute("UPDATE chain_head SET seq = 6, hash = ?", (prev,))
    con.execute("UPDATE items SET state = 'started', marks = 0, last_seq = 6 WHERE item_key LIKE 'ACME|A2|%'")
    con.commit()
    con.close()
    assert main(["records", "verify", "--records", str(db)]) == 0
    capsys.readouterr()
    assert main(["records", "verify", "--records", str(db), "--checkpoint", str(tmp_path / "cp.json")]) == 1
    assert "is not on this chain" in capsys.readouterr().err


def test_a_token_inserted_into_the_database_is_caught_and_refused(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from markctl.auth import TokenStore

    assert main(["tokens", "create", "ana", "--role", "auditor", "--records", str(db)]) == 0
    token = capsys.readouterr().out.strip()
    forged = "forged-token"
    con = sqlite3.connect(db)
    con.execute("INSERT INTO api_tokens VALUES (?, 'mallory', 'supervisor', '2026-01-01', 0)",
                (hashlib.sha256(forged.encode()).hexdigest(),))  # fmt: skip
    con.commit()
    con.close()
    with RecordStore.open(db) as store:
        tokens = TokenStore(store)
        assert tokens.identify(token) is not None and tokens.identify(forged) is None
    assert main(["records", "verify", "--records", str(db)]) == 1
    assert (
        "token: API token 'mallory' (supervisor) differs from its recorded events" in capsys.readouterr().err
    )


# --- §5 backups, verify and export ------------------------------------------------------------------


def test_backup_verifies_on_its_own_and_tampering_shows(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "archive" / "2026.db"
    assert main(["records", "backup", str(dest), "--records", str(db)]) == 0
    assert "verified; checkpoint" in capsys.readouterr().out
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert main(["records", "verify", "--archive", str(dest),
                 "--checkpoint", str(dest.with_name("2026.db.checkpoint.json"))]) == 0  # fmt: skip
    assert main(["records", "backup", str(dest), "--records", str(db)]) == 1  # never overwrites
    con = sqlite3.connect(dest)
    con.execute("UPDATE journal SET actor = 'forger' WHERE seq = 3")
    con.commit()
    con.close()
    capsys.readouterr()
    dest.chmod(0o400)  # archives are checked on read-only media too: verify never writes
    before = sorted(p.name for p in dest.parent.iterdir())
    assert main(["records", "verify", "--archive", str(dest)]) == 1
    assert sorted(p.name for p in dest.parent.iterdir()) == before
    assert "TAMPERED: row 3: altered" in capsys.readouterr().err


def test_verify_exit_codes(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["records", "verify", "--records", str(db)]) == 0
    assert "records intact: 7 rows" in capsys.readouterr().out
    assert main(["records", "verify", "--records", str(db), "--quick", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    con = sqlite3.connect(db)
    con.execute("UPDATE journal SET state = 'failed' WHERE seq = 4")
    con.commit()
    con.close()
    assert main(["records", "verify", "--records", str(db)]) == 1
    captured = capsys.readouterr()
    assert "TAMPERED: row 4: altered" in captured.err and "NOT intact" in captured.out


def test_list_and_export(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["records", "list", "--records", str(db), "--json"]) == 0
    assert [r["state"] for r in json.loads(capsys.readouterr().out)] == ["marked", "marked"]
    out = tmp_path / "export.csv"
    assert main(["records", "export", "--records", str(db), "--format", "csv", "-o", str(out)]) == 0
    assert out.read_text().count("\n") == 8 and "exported 7 records" in capsys.readouterr().err
    assert main(["records", "export", "--records", str(db), "--format", "xml"]) == 2
