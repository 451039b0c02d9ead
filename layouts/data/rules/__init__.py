"""Bundled rule profiles, one TOML file each (see ``markctl.layouts.rules``)."""
