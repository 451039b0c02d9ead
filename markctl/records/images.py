"""Images of applied marks, kept by content beside the registry (ISSUE 10 §3).

A record names an image by the SHA-256 of its bytes, stored as ``<registry>.images/<sha256>.png``:
the path does not depend on the folder a batch ran in, a file can never be swapped for another
without the record noticing, and the same image is stored once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from markctl.records.store import RecordStore, sqlite_path

__all__ = ["image_root", "put_image"]


def image_root(store: RecordStore) -> Path | None:
    """The image folder of a SQLite registry (None for a database server: images stay where they are)."""
    path = sqlite_path(store.url)
    return None if path is None else path.with_name(path.name + ".images")


def put_image(store: RecordStore, source: Path) -> dict[str, Any]:
    """Copy ``source`` into the store; returns what a record keeps: its hash and its path in the store."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    root = image_root(store)
    if root is None:
        return {"sha256": digest, "path": str(source.resolve())}
    name = f"{digest}{source.suffix.lower() or '.png'}"
    target = root / name
    if not target.is_file():
        root.mkdir(mode=0o700, exist_ok=True)
        partial = root / f".{name}.{os.getpid()}.part"
        shutil.copyfile(source, partial)
        partial.chmod(0o600)
        partial.replace(target)  # atomic: a reader sees the whole image or none
    return {"sha256": digest, "path": name}
