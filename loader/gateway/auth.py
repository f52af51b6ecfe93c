"""Write keys (query or Basic auth, RudderStack's rule) and Customer.io's request signatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from urllib.parse import parse_qsl

from starlette.types import Scope


def write_key_from(scope: Scope) -> str | None:
    """The write key: `writeKey` in the query, else the user name of HTTP Basic auth."""
    key = _query_write_key(scope.get("query_string", b"").decode("latin-1"))
    if key:
        return key
    header = header_value(scope, b"authorization") or ""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user = decoded.partition(":")[0]
    return user or None


def _query_write_key(query: str) -> str | None:
    """`writeKey`'s last value in the query, as Starlette's query_params would give it; a plain query
    (no escapes) is split here instead of by parse_qsl, which was 6% of the gateway's time."""
    if "%" in query or "+" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
    else:
        pairs = [(name, value) for name, _, value in (part.partition("=") for part in query.split("&"))]
    found = None
    for name, value in pairs:
        if name == "writeKey":
            found = value
    return found


def header_value(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (`name` lower-case), read from the ASGI scope."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def signature(signing_key: str, timestamp: str, body: bytes | bytearray) -> str:
    """Customer.io's signature: hex HMAC-SHA256 of `v0:<timestamp>:<body>` keyed with the key's UTF-8."""
    mac = hmac.new(signing_key.encode("utf-8"), b"v0:" + timestamp.encode("utf-8") + b":", hashlib.sha256)
    mac.update(body)  # not joined to the prefix: a large body is not copied
    return mac.hexdigest()


def signature_ok(
    signing_key: str,
    timestamp: str | None,
    given: str | None,
    body: bytes | bytearray,
    max_age_s: int = 0,
    now: float | None = None,
) -> bool:
    """True when `given` is the body's signature (constant-time) and, if asked, the timestamp is fresh."""
    if not timestamp or not given:
        return False
    if max_age_s > 0:
        try:
            sent = int(timestamp)
        except ValueError:
            return False
        if abs((time.time() if now is None else now) - sent) > max_age_s:
            return False
    expected = signature(signing_key, timestamp, body)
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode("utf-8", "replace"))
