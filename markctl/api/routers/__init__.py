"""One router per resource; each stays thin over markctl.service."""
