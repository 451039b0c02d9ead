"""Bundled firmware profiles (TOML data, read with importlib.resources by markctl.profiles)."""

if not __name__.startswith("markctl."):
    raise ImportError(f"import this package as 'markctl.{__name__}', not '{__name__}' (see ARCHITECTURE.md)")
