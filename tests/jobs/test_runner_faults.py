"""Faults during a batch: the weapon in the machine becomes unknown and the batch stops."""

from __future__ import annotations

import asyncio
from pathlib import Path

from markctl.config import MachineEntry, Settings
from markctl.records import ItemState, RecordStore
from markctl.service import MarkService

HEADER = "serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark\n"
ROWS = "F1,Beretta,92FS,iti-import,frame,KE,26,yes\nF2,Beretta,92FS,iti-import,frame,KE,26,yes\n"


async def test_link_drop_mid_cycle_stops_the_batch(repo: Path, tmp_path: Path, records_db: Path) -> None:
    address = "sim://grbl-1.1?clock=instant&faults=disconnect@line:400"
    settings = Settings(machines={"laser": MachineEntry(address=address)})
    with RecordStore.open(records_db) as store:
        service = MarkService(settings, store, out_dir=tmp_path)
        try:
            job = await service.submit((HEADER + ROWS).encode(), (repo / "examples/import/parts.toml").read_text(),
                                       machine="laser", operator="op", wait=True)  # fmt: skip
            machine = await service.machine("laser")
            burned_after_drop = machine.simulator.workpiece.marked().sum()
        finally:
            await service.close()
        assert job.report is not None
        states = [(r.item_key.split("|")[1], r.state) for r in job.report.results]
        assert states == [("F1", "unknown"), ("F2", "refused")]
        assert job.state == "failed"
        first = store.history("BERETTA|F1|frame|iti-import")
        assert [r.event for r in first] == ["planned", "started", "unknown"]
        assert first[-1].data["result"]["outcome"] == "connection-lost"
        assert first[-1].data["result"]["done"] > 0  # part of the mark was cut before the drop
        assert store.item("BERETTA|F2|frame|iti-import") is None  # never started
        assert store.items(state=ItemState.MARKED) == []
        assert store.verify().ok
        assert burned_after_drop > 0


async def test_abort_inside_the_first_character_is_unknown_not_failed(
    repo: Path, tmp_path: Path, records_db: Path
) -> None:
    # Progress counts whole characters: stopped during the first one it reads 0, yet dots were
    # struck. "failed" would let a re-run strike the weapon again; it must be "unknown".
    settings = Settings(machines={"peen": MachineEntry(address="sim://peen-modbus?clock=realtime")})
    manifest = (repo / "examples/stockpile/manifest.csv").read_bytes()
    with RecordStore.open(records_db) as store:
        service = MarkService(settings, store)
        try:
            job = await service.submit(manifest, (repo / "examples/stockpile/parts.toml").read_text(),
                                       machine="peen", operator="op")  # fmt: skip
            machine = await service.machine("peen")
            for _ in range(500):
                if machine.simulator.marker.strikes:
                    break
                await asyncio.sleep(0.01)
            assert machine.simulator.marker.strikes, "the cycle never started"
            await service.abort(job.id)
            struck = len(machine.simulator.marker.strikes)
        finally:
            await service.close()
        first = store.history("GLOCK|GP-000417|embedded-plate|iti-stockpile")
        assert [r.event for r in first] == ["planned", "started", "unknown"]
        assert first[-1].data["result"]["cycle_started"] is True and struck > 0
        # A re-run refuses the weapon until a supervisor has inspected it.
        service = MarkService(settings, store)
        try:
            rerun = await service.submit(manifest, (repo / "examples/stockpile/parts.toml").read_text(),
                                         machine="peen", operator="op", wait=True)  # fmt: skip
        finally:
            await service.close()
        assert rerun.report is not None and rerun.report.results[0].state == "refused"
