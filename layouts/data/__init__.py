"""Data files of ``markctl.layouts``: rule profiles, materials table, dot-matrix fonts (read with importlib.resources)."""
