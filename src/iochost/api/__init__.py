"""The REST API: a FastAPI app over one Supervisor, under /api/v1."""

from iochost.api.app import create_app

__all__ = ["create_app"]
