"""Durable staging: raw bodies appended before the 200, claimed and marked by landers, kept as an archive."""

from loader.staging.store import (
    LANDED,
    PENDING,
    QUARANTINED,
    Incoming,
    Staged,
    Staging,
)

__all__ = ["LANDED", "PENDING", "QUARANTINED", "Incoming", "Staged", "Staging"]
