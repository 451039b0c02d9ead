"""Jobs: one mark, or a batch from a manifest, run by one runner shared by the CLI and the service."""
