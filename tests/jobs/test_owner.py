"""Recovery takes only items whose owning process is gone; a live owner's cycle is left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from markctl.config import Settings
from markctl.jobs.owner import owner_is_gone, this_process
from markctl.records import ItemState, RecordStore, item_key_of
from markctl.service import MarkService


def _started(store: RecordStore, serial: str, owner: dict[str, object]) -> str:
    key = item_key_of(f"ACME|{serial}", "frame", "iti-import")
    store.append(
        key, "planned", "op", weapon_key=f"ACME|{serial}", component="frame", mark_profile="iti-import"
    )
    store.append(key, "started", "op", {"owner": owner, "simulated": True})
    return key


def test_owner_liveness() -> None:
    me = this_process()
    assert not owner_is_gone(me)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    assert owner_is_gone({**me, "pid": int(dead.stdout)})
    assert not owner_is_gone({**me, "host": "another-host", "pid": int(dead.stdout)})
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not owner_is_gone({**me, "pid": live.pid, "start": None})
        assert owner_is_gone({**me, "pid": live.pid, "start": "not-its-start-time"})  # pid reused
    finally:
        live.kill()
        live.wait()
    assert not owner_is_gone(None)


def test_service_start_recovers_only_dead_owners(records_db: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    with RecordStore.open(records_db) as store:
        gone = _started(store, "G1", {**this_process(), "pid": int(dead.stdout)})
        live = _started(store, "L1", this_process())
        remote = _started(store, "R1", {"host": "depot-pc-2", "pid": 4242, "start": "1"})
        service = MarkService(Settings(), store)
        assert service.recovered == [gone]
        assert store.item(gone).state is ItemState.UNKNOWN  # type: ignore[union-attr]
        assert store.item(live).state is ItemState.STARTED  # type: ignore[union-attr]
        assert store.item(remote).state is ItemState.STARTED  # type: ignore[union-attr]
        assert store.verify().ok
