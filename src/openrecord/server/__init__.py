"""The HTTP server: the FHIR REST API as an ASGI application."""

from openrecord.server.app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
