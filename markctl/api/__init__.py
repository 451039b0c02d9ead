"""The HTTP service (FastAPI): ``create_app`` builds it; ``markctl serve`` runs it with uvicorn."""

from markctl.api.main import create_app

__all__ = ["create_app"]
