"""The source registry, kept in staging so that every host sharing staging knows every source.

Write keys are stored as SHA-256 hashes: a copy of the database does not reveal them.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from loader.errors import ConfigError, SourceExistsError, UnknownSourceError
from loader.naming import is_safe
from loader.staging.store import Staging
from loader.staging.tables import sources


@dataclass(frozen=True)
class Source:
    """A registered source: its name, schema and secrets (hidden from repr)."""

    id: str
    name: str
    schema: str
    key_prefix: str
    write_key_hash: str = field(repr=False)
    signing_key: str | None = field(default=None, repr=False)


def hash_key(write_key: str) -> str:
    """The stored form of a write key."""
    return hashlib.sha256(write_key.encode("utf-8", "surrogatepass")).hexdigest()


def new_write_key() -> str:
    """A fresh write key: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


def add_source(
    staging: Staging, name: str, schema: str, write_key: str | None = None, signing_key: str | None = None
) -> tuple[Source, str]:
    """Register a source; returns it with its write key (the only time the key is shown in full)."""
    if not name.strip():
        raise ConfigError("a source needs a name")
    if not is_safe(schema):
        raise ConfigError(f"schema {schema!r} is not a safe name (lower-case letters, digits, _)")
    key = write_key or new_write_key()
    if not key.strip() or any(c.isspace() for c in key):
        raise ConfigError("a write key cannot be blank or contain spaces")
    source = Source(
        id=str(uuid.uuid4()),
        name=name,
        schema=schema,
        key_prefix=key[: min(4, len(key) // 4)],  # enough to tell keys apart, never most of one
        write_key_hash=hash_key(key),
        signing_key=signing_key or None,
    )
    try:
        with staging.engine.begin() as conn:
            conn.execute(
                sources.insert().values(
                    id=source.id,
                    name=source.name,
                    schema_name=source.schema,
                    write_key_hash=source.write_key_hash,
                    key_prefix=source.key_prefix,
                    signing_key=source.signing_key,
                    created_at=time.time(),
                )
            )
    except IntegrityError:
        raise SourceExistsError(
            f"a source with the name {name!r}, the schema {schema!r} or that write key already exists"
        ) from None
    return source, key


def load_sources(staging: Staging) -> list[Source]:
    """Every registered source, oldest first."""
    with staging.engine.connect() as conn:
        rows = conn.execute(select(sources).order_by(sources.c.created_at)).all()
    return [Source(r.id, r.name, r.schema_name, r.key_prefix, r.write_key_hash, r.signing_key) for r in rows]


def find_source(staging: Staging, name: str) -> Source:
    """A source by name (or schema name)."""
    for source in load_sources(staging):
        if name in (source.name, source.schema):
            return source
    raise UnknownSourceError(f"no source named {name!r}")
