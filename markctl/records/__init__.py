"""Durable, tamper-evident records of every mark (see :mod:`markctl.records.store`)."""

from markctl.records.store import (
    Checkpoint,
    ItemState,
    ItemView,
    NoRegistryError,
    Problem,
    Record,
    RecordStore,
    RegistryInfo,
    RegistryModeError,
    VerifyReport,
    item_key_of,
)

__all__ = [
    "Checkpoint",
    "ItemState",
    "ItemView",
    "NoRegistryError",
    "Problem",
    "Record",
    "RecordStore",
    "RegistryInfo",
    "RegistryModeError",
    "VerifyReport",
    "item_key_of",
]
