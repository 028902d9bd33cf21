"""The FastAPI app the REST and metrics pages read, built as ``iochost serve`` builds it with
every setting at its default, and never started: no worker runs and no port is opened."""

from __future__ import annotations

from fastapi import FastAPI

from iochost.api.app import create_app
from iochost.settings import Settings


def app() -> FastAPI:
    """A fresh app; its routes, OpenAPI document and metrics registry are the daemon's."""
    return create_app(Settings())
