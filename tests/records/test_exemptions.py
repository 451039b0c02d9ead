"""The exempt state (ISSUE 15, ITI 8(b) temporary imports) in the registry, on SQLite and PostgreSQL.

An exempt item is recorded, never started; only a supervisor's recorded ``exemption-ended`` lets it
be marked; ``verify`` keeps the chain whole and warns (without failing) about a weapon still
exempt after its expected re-export date.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from markctl.errors import ItemStateError
from markctl.records import ItemState, RecordStore, item_key_of
from markctl.records.register import Filters, entries

from .test_backends import postgres_url, url  # noqa: F401 - the fixtures: SQLite and PostgreSQL

SIM = {"simulated": True}


def _exemption(days: int = 90, **over: Any) -> dict[str, Any]:
    return {
        "kind": "temporary-import",
        "purpose": "shooting competition, Nairobi Open 2027",
        "re_export_by": (date.today() + timedelta(days=days)).isoformat(),
        "recorded_by": "supervisor-1",
        "reference": "KE-TI-2026-0042",
        **over,
    }


def _exempt(store: RecordStore, serial: str, days: int = 90) -> str:
    weapon = f"GLOCK|{serial}"
    key = item_key_of(weapon, "frame", "iti-import")
    store.append(key, "planned", "op", {"identity": {"serial": serial}}, weapon_key=weapon, component="frame",
                 mark_profile="iti-import", batch_id="B1")  # fmt: skip
    store.append(key, "exempted", "op", {"exemption": _exemption(days)}, batch_id="B1")
    return key


def test_exempt_life_cycle(url: str) -> None:  # noqa: F811
    with RecordStore.open(url) as store:
        key = _exempt(store, "T1")
        item = store.item(key)
        assert item is not None and item.state is ItemState.EXEMPT and item.attempts == 0 and item.marks == 0
        assert [i.item_key for i in store.items(state=ItemState.EXEMPT)] == [key]
        # Marking it by accident is refused, naming the supervisor's step.
        with pytest.raises(ItemStateError, match="exempt") as refused:
            store.append(key, "started", "op", SIM)
        assert "end-exemption" in (refused.value.hint or "")
        with pytest.raises(ValueError, match="needs a reason"):
            store.append(key, "exemption-ended", "supervisor:ana")
        store.append(key, "exemption-ended", "supervisor:ana", {"reason": "the weapon stays: sold locally"})
        assert store.item(key).state is ItemState.PLANNED  # type: ignore[union-attr]
        store.append(key, "started", "op", SIM)
        store.append(key, "marked", "op")
        assert [r.event for r in store.history(key)] == [
            "planned", "exempted", "exemption-ended", "started", "marked"
        ]  # fmt: skip
        report = store.verify()
        assert report.ok and not report.warnings


def test_exemption_tampering_is_named(url: str) -> None:  # noqa: F811
    with RecordStore.open(url) as store:
        key = _exempt(store, "T2")
        assert store.verify().ok
        # Moving a re-export date forward in the database breaks the chain at that row.
        seq = store.item(key).last_seq  # type: ignore[union-attr]
        was = (date.today() + timedelta(days=90)).isoformat()
        later = (date.today() + timedelta(days=900)).isoformat()
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE journal SET body = replace(body, :was, :later) WHERE seq = :s"),
                         {"was": was, "later": later, "s": seq})  # fmt: skip
        assert [(p.seq, p.kind) for p in store.verify().problems] == [(seq, "altered")]


def test_an_exempted_record_carries_its_facts(records_db: Path) -> None:
    with RecordStore.open(records_db) as store:
        key = item_key_of("GLOCK|T3", "frame", "iti-import")
        store.append(
            key, "planned", "op", {}, weapon_key="GLOCK|T3", component="frame", mark_profile="iti-import"
        )
        with pytest.raises(ValueError, match="carries data"):
            store.append(key, "exempted", "op", {})
        with pytest.raises(ValueError, match="purpose, recorded_by"):
            store.append(key, "exempted", "op", {"exemption": _exemption(purpose=" ", recorded_by="")})
        with pytest.raises(ValueError, match="not a date"):
            store.append(key, "exempted", "op", {"exemption": _exemption(re_export_by="next spring")})
        assert store.item(key).state is ItemState.PLANNED  # type: ignore[union-attr]  # nothing half-written
        assert store.verify().ok


def test_no_exemption_after_a_mark(records_db: Path) -> None:
    with RecordStore.open(records_db) as store:
        key = item_key_of("GLOCK|T4", "frame", "iti-import")
        store.append(
            key, "planned", "op", {}, weapon_key="GLOCK|T4", component="frame", mark_profile="iti-import"
        )
        store.append(key, "started", "op", SIM)
        store.append(key, "marked", "op")
        with pytest.raises(ItemStateError, match="cannot be recorded exempt while marked"):
            store.append(key, "exempted", "op", {"exemption": _exemption()})
        with pytest.raises(ItemStateError, match="exemption-ended"):
            store.append(key, "exemption-ended", "supervisor:ana", {"reason": "not exempt at all"})


def test_verify_warns_of_a_passed_re_export_date_and_names_the_weapon(url: str) -> None:  # noqa: F811
    with RecordStore.open(url) as store:
        late = _exempt(store, "LATE1", days=-3)  # recorded earlier; the date has passed since
        _exempt(store, "ONTIME", days=30)
        ended = _exempt(store, "LATE2", days=-10)
        store.append(ended, "exemption-ended", "supervisor:ana", {"reason": "the weapon stays"})
        report = store.verify()
        assert report.ok  # a lead for an auditor, not damage to the chain
        assert len(report.warnings) == 1 and report.warnings[0].startswith(late)
        assert (date.today() - timedelta(days=3)).isoformat() in report.warnings[0]
        assert report.as_dict()["warnings"] == list(report.warnings)


def test_register_shows_the_exemption(records_db: Path) -> None:
    with RecordStore.open(records_db) as store:
        key = _exempt(store, "T5", days=-1)
        (weapon,) = entries(store, Filters(weapon_key="GLOCK|T5"))
        (mark,) = weapon.marks
        assert mark.state == "exempt" and mark.item_key == key
        assert mark.text.startswith("NOT MARKED: exempt (temporary-import): shooting competition")
        assert (
            "DATE PASSED" in mark.text
            and "recorded by supervisor-1" in mark.text
            and "KE-TI-2026-0042" in mark.text
        )
        assert (
            mark.as_dict()["re_export_overdue"] is True
            and mark.as_dict()["exemption"]["recorded_by"] == "supervisor-1"
        )
