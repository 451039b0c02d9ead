"""Records benchmark: hash-chained inserts and a full verify, as rates and same-run ratios.

Every insert is its own durable transaction (WAL, synchronous=FULL), as in production: an item's
``started`` must be on disk before the machine moves. Reports rows/s for inserts and for verify, and
the ratio of the time for the last 10 % of inserts to the first 10 % (goal <= 1.5: inserting
must not slow down as the table grows).

    .venv/bin/python bench/records.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from markctl.records import RecordStore, item_key_of


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    rows = args.rows
    tenth = max(1, rows // 10)
    with tempfile.TemporaryDirectory() as tmp, RecordStore.open(Path(tmp) / "bench.db") as store:
        chunk_times: list[float] = []
        start = time.perf_counter()
        chunk_start = start
        for i in range(rows):
            weapon = f"ACME|SN{i:08d}"
            key = item_key_of(weapon, "frame", "iti-import")
            store.append(key, "planned", "bench", {"line": i + 2, "fields": {"import_country": "GB", "import_year": "26"}},
                         weapon_key=weapon, component="frame", mark_profile="iti-import", batch_id="bench")  # fmt: skip
            if (i + 1) % tenth == 0:
                now = time.perf_counter()
                chunk_times.append(now - chunk_start)
                chunk_start = now
        insert_s = time.perf_counter() - start
        verify_start = time.perf_counter()
        report = store.verify()
        verify_s = time.perf_counter() - verify_start
    assert report.ok and report.rows == rows, report.problems[:3]
    print(f"rows                     {rows}")
    print(f"insert rate              {rows / insert_s:,.0f} rows/s (each its own durable transaction)")
    print(
        f"verify rate              {rows / verify_s:,.0f} rows/s (full chain + item index + integrity_check)"
    )
    print(f"last/first 10% ratio     {chunk_times[-1] / chunk_times[0]:.2f} (goal <= 1.5)")
    print(f"per-tenth seconds        {' '.join(f'{t:.2f}' for t in chunk_times)}")


if __name__ == "__main__":
    main()
