"""markctl.simulator — protocol-faithful emulators of the machines in firmware_profiles, with a model of the mark."""

if not __name__.startswith("markctl."):
    raise ImportError(f"import this package as 'markctl.{__name__}', not '{__name__}' (see ARCHITECTURE.md)")
