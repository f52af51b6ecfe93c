"""The HTTP gateway: authenticate, check, commit the raw body to staging, answer. No warehouse work."""

from loader.gateway.app import create_app

__all__ = ["create_app"]
