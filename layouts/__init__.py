"""markctl.layouts — compliant mark layouts: content rules, fonts, 2D codes, placement, checks, programs. Pure: no I/O."""

if not __name__.startswith("markctl."):
    raise ImportError(f"import this package as 'markctl.{__name__}', not '{__name__}' (see ARCHITECTURE.md)")
