"""markctl.drivers — the hardware abstraction layer: transports and one driver per protocol family."""

if not __name__.startswith("markctl."):
    raise ImportError(f"import this package as 'markctl.{__name__}', not '{__name__}' (see ARCHITECTURE.md)")
