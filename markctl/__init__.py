"""markctl: drivers, simulators and a controller for firearm marking machines.

The public API is small and imported lazily (module ``__getattr__``), so ``import markctl`` is
cheap and never creates import cycles.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("markctl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {
    "MachineAddress": "markctl.address",
    "parse_address": "markctl.address",
    "FirmwareProfile": "markctl.profiles",
    "load_profile": "markctl.profiles",
    "MarkctlError": "markctl.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'markctl' has no attribute {name!r}")
    return getattr(import_module(module), name)
