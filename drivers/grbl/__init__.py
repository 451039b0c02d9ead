"""GRBL-family laser engravers (Grbl 1.1, grblHAL, FluidNC): codec, G-code, driver.

See README.md in this folder and PROTOCOLS.md §1, §2, §9.2-9.3.
"""

from markctl.drivers.grbl.driver import GRBLDriver, GRBLOptions

__all__ = ["GRBLDriver", "GRBLOptions"]
