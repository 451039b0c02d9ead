"""An app on a fresh records database, with one token per role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from markctl.api import create_app
from markctl.auth import TokenStore
from markctl.config import MachineEntry, Settings
from markctl.records import RecordStore


@dataclass
class Api:
    client: TestClient
    store: RecordStore
    tokens: dict[str, str]

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture
def api(tmp_path: Path, records_db: Path) -> Iterator[Api]:
    store = RecordStore.open(records_db)
    tokens = TokenStore(store)
    issued = {role: tokens.create(f"{role}-1", role) for role in ("operator", "supervisor", "auditor")}
    settings = Settings(machines={"laser": MachineEntry(address="sim://grbl-1.1?clock=instant")})
    app = create_app(settings, store=store, out_dir=tmp_path / "out")
    with TestClient(app) as client:
        yield Api(client, store, issued)
    store.close()
