"""Faults during a batch: the weapon in the machine becomes unknown and the batch stops."""

from __future__ import annotations

from pathlib import Path

from markctl.config import MachineEntry, Settings
from markctl.records import ItemState, RecordStore
from markctl.service import MarkService

HEADER = "serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark\n"
ROWS = "F1,Beretta,92FS,iti-import,frame,KE,26,yes\nF2,Beretta,92FS,iti-import,frame,KE,26,yes\n"


async def test_link_drop_mid_cycle_stops_the_batch(repo: Path, tmp_path: Path) -> None:
    address = "sim://grbl-1.1?clock=instant&faults=disconnect@line:400"
    settings = Settings(machines={"laser": MachineEntry(address=address)})
    with RecordStore.open(tmp_path / "records.db") as store:
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
