"""Telesis-style dot-peen markers over the Extended framed protocol (PROTOCOLS.md §5.1, §5.2)."""

from markctl.drivers.telesis.driver import TelesisDriver, TelesisOptions

__all__ = ["TelesisDriver", "TelesisOptions"]
