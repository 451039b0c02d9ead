"""Durable, tamper-evident records of every mark (see :mod:`markctl.records.store`)."""

from markctl.records.store import ItemState, ItemView, Problem, Record, RecordStore, VerifyReport, item_key_of

__all__ = ["ItemState", "ItemView", "Problem", "Record", "RecordStore", "VerifyReport", "item_key_of"]
