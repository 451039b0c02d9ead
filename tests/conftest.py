"""Shared fixtures and options.

``pytest --machine URL`` points the tests marked ``hardware`` at a real machine (e.g.
``--machine grbl+serial:///dev/ttyUSB0``); without it they are skipped. With ``CI`` set, hypothesis
runs derandomized.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

from markctl.records import RecordStore

# CI runs each submission once: the same examples every time, and no per-example deadline on a
# shared, noisy machine. Local runs stay random so they keep finding new cases.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--machine", default=None, help="address of a real machine for tests marked 'hardware'")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--machine"):
        return
    skip = pytest.mark.skip(reason="needs a real machine: pytest --machine URL")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture
def machine_url(request: pytest.FixtureRequest) -> str | None:
    """The --machine address, or None."""
    value = request.config.getoption("--machine")
    return str(value) if value else None


def make_registry(path: Path, *, training: bool = True, site: str = "test-depot") -> Path:
    """Create a registry at ``path`` (as ``markctl records init`` does) and return the path.

    Training by default: the tests mark on simulators, which only a training registry accepts.
    """
    RecordStore.init(path, site=site, training=training).close()
    return path


@pytest.fixture
def records_db(tmp_path: Path) -> Path:
    """An initialised training registry, ``tmp_path / "records.db"`` (its site key beside it)."""
    return make_registry(tmp_path / "records.db")


@pytest.fixture
def production_db(tmp_path: Path) -> Path:
    """An initialised production registry, ``tmp_path / "production.db"``."""
    return make_registry(tmp_path / "production.db", training=False)


@pytest.fixture
def new_registry() -> Callable[..., Path]:
    """``new_registry(path, training=True, site=...)``: create a registry where a test needs one."""
    return make_registry


def item_states(db: Path) -> dict[str, str]:
    """Each item's state, read with plain sqlite3 while another process writes (empty until it exists)."""
    try:
        con = sqlite3.connect(db, timeout=5)
        rows = con.execute("SELECT item_key, state FROM items").fetchall()
        con.close()
    except sqlite3.OperationalError:
        return {}
    return dict(rows)


@pytest.fixture
def read_states() -> Callable[[Path], dict[str, str]]:
    """``read_states(db)``: the items' states of a registry another process is writing."""
    return item_states
