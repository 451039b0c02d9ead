"""Records benchmark: same-run ratios against plain ``sqlite3`` doing the same work (issue 16, issue 10).

1. insert: ``RecordStore.append`` (a new item's ``planned`` event) vs a plain ``sqlite3`` loop that
   runs the same statements with the same durability: one transaction per row, WAL,
   ``synchronous=FULL``, canonical JSON body and SHA-256 chain hash. Goal: ratio >= 0.7.
2. verify: ``RecordStore.verify()`` (chain, columns, item index, registry, tokens, checkpoints,
   ``integrity_check``) vs a plain read of the same rows with a SHA-256 re-check. Goal: >= 0.3.
3. register: ``markctl records register --format csv`` over N weapons (default 100,000) in a child
   process: time and its peak RSS, and the same for ``--format table``.
4. checkpoint verify over many rows (``--million``: 1,000,000) vs plain SHA-256 over the same bytes.

The registers for 3 and 4 are filled by this script with a bulk writer (one transaction) that builds
the same chain the store builds; ``verify`` checks them like any other registry.

    .venv/bin/python bench/records.py [--rows 3000] [--weapons 100000] [--million]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from markctl.records import RecordStore, item_key_of
from markctl.records.keys import load_key
from markctl.records.store import default_key_path

GENESIS = "0" * 64


def _canonical(content: object) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _data(i: int) -> dict[str, object]:
    return {"line": i + 2, "identity": {"manufacturer": "ACME", "serial": f"SN{i:08d}", "model": "P9"}}


def _plain_schema(con: sqlite3.Connection) -> None:
    con.executescript(
        """
        CREATE TABLE journal (seq INTEGER PRIMARY KEY, at TEXT NOT NULL, item_key TEXT NOT NULL, event TEXT NOT NULL,
            state TEXT NOT NULL, actor TEXT NOT NULL, body TEXT NOT NULL, prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE);
        CREATE INDEX ix_journal_item ON journal (item_key, seq);
        CREATE TABLE chain_head (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL);
        INSERT INTO chain_head VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
        CREATE TABLE items (item_key TEXT PRIMARY KEY, weapon_key TEXT NOT NULL, component TEXT NOT NULL,
            mark_profile TEXT NOT NULL, batch_id TEXT, state TEXT NOT NULL, attempts INTEGER NOT NULL,
            marks INTEGER NOT NULL, last_seq INTEGER NOT NULL, updated_at TEXT NOT NULL);
        CREATE INDEX ix_items_weapon ON items (weapon_key);
        CREATE INDEX ix_items_batch ON items (batch_id);
        """
    )


class PlainWriter:
    """The same statements, the same durability, no SQLAlchemy: the floor the store is compared with."""

    def __init__(self, path: Path) -> None:
        self.con = sqlite3.connect(path, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")
        _plain_schema(self.con)

    def append(self, i: int) -> None:
        con = self.con
        weapon = f"ACME|SN{i:08d}"
        key = item_key_of(weapon, "frame", "iti-import")
        data = _data(i)
        con.execute("BEGIN")
        seq, prev = con.execute(
            "UPDATE chain_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash"
        ).fetchone()
        current = con.execute(
            "SELECT state, attempts, marks FROM items WHERE item_key = ?", (key,)
        ).fetchone()
        assert current is None
        at = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        body = _canonical({"seq": seq, "at": at, "item": key, "event": "planned", "state": "planned",
                           "actor": "bench", "data": data})  # fmt: skip
        digest = hashlib.sha256(f"{prev}\n{body}".encode()).hexdigest()
        con.execute("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, at, key, "planned", "planned", "bench", body, prev, digest))  # fmt: skip
        con.execute("UPDATE chain_head SET hash = ? WHERE id = 1", (digest,))
        con.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, weapon, "frame", "iti-import", "bench", "planned", 0, 0, seq, at))  # fmt: skip
        con.execute("COMMIT")


def bench_insert(base: Path, rows: int, block: int = 50) -> tuple[float, float]:
    """Seconds for ``rows`` inserts, plain and store, run in alternating blocks so both see the same disk."""
    plain = PlainWriter(base / "plain.db")
    store = RecordStore.init(base / "store.db", site="bench", training=True)
    plain_s = store_s = 0.0
    try:
        for first in range(0, rows, block):
            todo = range(first, min(rows, first + block))
            start = time.perf_counter()
            for i in todo:
                plain.append(i)
            middle = time.perf_counter()
            for i in todo:
                weapon = f"ACME|SN{i:08d}"
                store.append(item_key_of(weapon, "frame", "iti-import"), "planned", "bench", _data(i),
                             weapon_key=weapon, component="frame", mark_profile="iti-import", batch_id="bench")  # fmt: skip
            plain_s, store_s = plain_s + middle - start, store_s + time.perf_counter() - middle
    finally:
        plain.con.close()
        store.close()
    return plain_s, store_s


def plain_verify(path: Path) -> tuple[float, int]:
    """Read every row and re-check its SHA-256 link: the floor for verify."""
    con = sqlite3.connect(path)
    start = time.perf_counter()
    prev, rows = GENESIS, 0
    for seq, body, prev_hash, digest in con.execute(
        "SELECT seq, body, prev_hash, hash FROM journal ORDER BY seq"
    ):
        assert prev_hash == prev and hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest() == digest, (
            seq
        )
        prev, rows = digest, rows + 1
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed, rows


def bulk_fill(
    path: Path, weapons: int, *, components: tuple[str, ...] = ("frame", "slide"), training: bool = True
) -> None:
    """A registry with ``weapons`` weapons marked (planned, started, marked per component), one transaction.

    A training registry holds simulated marks; a production one (``training=False``) real ones.
    """
    RecordStore.init(path, site="bench", training=training).close()
    machine = "sim://grbl-1.1" if training else "grbl+tcp://10.0.0.5:23"
    con = sqlite3.connect(path, isolation_level=None)
    seq, prev = con.execute("SELECT seq, hash FROM chain_head").fetchone()
    con.execute("BEGIN")
    journal_rows: list[tuple[object, ...]] = []
    item_rows: list[tuple[object, ...]] = []
    at = "2026-11-29T06:00:00.000000Z"
    for w in range(weapons):
        weapon = f"ACME|SN{w:08d}"
        for component in components:
            key = item_key_of(weapon, component, "iti-import")
            events = (
                ("planned", "planned", {"line": w + 2, "identity": {"manufacturer": "ACME", "serial": f"SN{w:08d}",
                                                                     "model": "P9", "calibre": "9mm"}}),
                ("started", "started", {"machine": machine, "simulated": training, "program_digest": "d" * 64,
                                        "request": {"fields": {"serial": f"SN{w:08d}", "import_country": "KE",
                                                               "import_year": "26"}}, "findings": []}),
                ("marked", "marked", {"result": {"outcome": "done"}, "verification": {"passed": True, "detail": "ok"},
                                      "image": None, "simulated": training}),
            )  # fmt: skip
            for event, state, data in events:
                seq += 1
                body = _canonical({"seq": seq, "at": at, "item": key, "event": event, "state": state,
                                   "actor": "bench", "data": data})  # fmt: skip
                digest = hashlib.sha256(f"{prev}\n{body}".encode()).hexdigest()
                journal_rows.append((seq, at, key, event, state, "bench", body, prev, digest))
                prev = digest
            item_rows.append((key, weapon, component, "iti-import", f"B{w // 1000}", "marked", 1, 1, seq, at))
        if len(journal_rows) >= 30_000:
            con.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", journal_rows)
            con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", item_rows)
            journal_rows, item_rows = [], []
    con.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", journal_rows)
    con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", item_rows)
    con.execute("UPDATE chain_head SET seq = ?, hash = ?", (seq, prev))
    con.execute("COMMIT")
    con.close()


_MEASURED = (
    "import resource, sys\n"
    "from markctl.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "sys.stderr.write(f'\\nMAXRSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')\n"
    "sys.exit(code)\n"
)


def child_run(args: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MB, the child's own) of ``markctl ARGS`` in a fresh interpreter."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURED, *args], check=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)  # fmt: skip
    elapsed = time.perf_counter() - start
    peak_kb = int(done.stderr.rsplit("MAXRSS ", 1)[1].split()[0])
    return elapsed, peak_kb / 1024


def run_insert(base: Path, rows: int) -> None:
    plain_s, store_s = bench_insert(base, rows)
    print(f"insert   {rows} rows, one durable transaction each (WAL, synchronous=FULL)")
    print(f"  plain sqlite3  {rows / plain_s:10,.0f} rows/s")
    print(f"  RecordStore    {rows / store_s:10,.0f} rows/s")
    print(f"  ratio          {plain_s / store_s:10.2f}   (goal >= 0.7)")


def run_verify(path: Path) -> None:
    plain_v, rows = plain_verify(path)
    with RecordStore.open(path) as store:
        start = time.perf_counter()
        report = store.verify(deep=False)
        quick_v = time.perf_counter() - start
        start = time.perf_counter()
        report = store.verify()
        store_v = time.perf_counter() - start
    assert report.ok and report.rows == rows, report.problems[:3]
    print(f"verify   {rows:,} rows (chain, columns, item index, registry, tokens, checkpoints)")
    print(f"  plain read + sha256           {rows / plain_v:10,.0f} rows/s")
    print(
        f"  verify --quick (quick_check)  {rows / quick_v:10,.0f} rows/s  ratio {plain_v / quick_v:.2f} (goal >= 0.3)"
    )
    print(f"  verify (integrity_check)      {rows / store_v:10,.0f} rows/s  ratio {plain_v / store_v:.2f}")


def run_register(path: Path, weapons: int) -> None:
    cli = ["records", "register", "--records", str(path)]
    out = path.with_name("register")
    small_s, small_peak = child_run(
        [*cli, "--format", "csv", "--batch", "B0", "-o", str(out.with_suffix(".b0"))]
    )
    print(f"register {weapons:,} weapons (6 journal rows each); one batch of 1,000 weapons for scale:")
    print(f"  --format csv --batch B0  1,000 weapons: {small_s:6.1f} s, peak RSS {small_peak:4.0f} MB")
    for fmt in ("csv", "table"):
        seconds, peak = child_run([*cli, "--format", fmt, "-o", str(out.with_suffix(f".{fmt}"))])
        size = out.with_suffix(f".{fmt}").stat().st_size / 1e6
        print(
            f"  --format {fmt:<5} {weapons:,} weapons: {seconds:6.1f} s, peak RSS {peak:4.0f} MB, {size:.0f} MB written"
        )


def run_million(base: Path) -> None:
    weapons = 1_000_000 // 6 + 1
    path = base / "million.db"
    bulk_fill(path, weapons)
    with RecordStore.open(path) as store:
        store.checkpoint(load_key(default_key_path(path)), "bench")
    con = sqlite3.connect(path)
    blobs = [f"{p}\n{b}".encode() for p, b in con.execute("SELECT prev_hash, body FROM journal ORDER BY seq")]
    con.close()
    start = time.perf_counter()
    for blob in blobs:
        hashlib.sha256(blob).hexdigest()
    sha_s = time.perf_counter() - start
    del blobs
    with RecordStore.open(path) as store:
        start = time.perf_counter()
        report = store.verify(deep=False)
        quick_s = time.perf_counter() - start
        start = time.perf_counter()
        report = store.verify()
        deep_s = time.perf_counter() - start
    assert report.ok and report.checkpoints == 1, report.problems[:3]
    print(
        f"checkpoint verify {report.rows:,} rows (1 signed checkpoint); sha256 over the same bytes {sha_s:.1f} s"
    )
    print(f"  verify --quick  {quick_s:6.1f} s  ratio {sha_s / quick_s:.2f}")
    print(f"  verify          {deep_s:6.1f} s  ratio {sha_s / deep_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=3000, help="rows for the insert comparison")
    parser.add_argument(
        "--weapons", type=int, default=100_000, help="weapons for the verify and register runs"
    )
    parser.add_argument("--million", action="store_true", help="also checkpoint-verify 1,000,000 rows")
    parser.add_argument("--only", choices=("insert", "verify", "register"), help="run one part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if args.only in (None, "insert"):
            run_insert(base, args.rows)
        if args.only in (None, "verify", "register"):
            bulk_fill(base / "big.db", args.weapons)
        if args.only in (None, "verify"):
            run_verify(base / "big.db")
        if args.only in (None, "register"):
            run_register(base / "big.db", args.weapons)
        if args.million:
            run_million(base)


if __name__ == "__main__":
    main()
