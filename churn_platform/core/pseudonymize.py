"""Pseudonyms for customer ids, computed inside DuckDB.

Without a key: a random UUID per row and run, as the original pipeline did (nothing to reverse,
nothing to join across runs). With a key: HMAC-SHA256(key, id) shaped as a UUID, so one customer
keeps one pseudonym across runs while nobody without the key can recompute or reverse it.
HMAC is spelled out with DuckDB's sha256 over BLOBs; the padded keys are bound parameters, so the
key never appears in SQL text, logs or metadata.
"""

import hashlib
import hmac
import uuid

from churn_platform.core.errors import InputError

_BLOCK_SIZE = 64  # SHA-256 block size in bytes (RFC 2104)
# A key is secret only if it cannot be guessed: a 2-character key was found in 744 tries from one
# known (id, pseudonym) pair. 32 characters with some variety: a password-like key or a short
# word repeated is refused; `secrets.token_urlsafe(32)` (43 characters) or a 32-byte hex key pass.
KEY_MIN_CHARS = 32
KEY_MIN_DISTINCT = 10
MAKE_A_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


class WeakKeyError(InputError):
    """The pseudonymization key is too short or too uniform to keep pseudonyms unguessable."""


def checked_key(key: str, variable: str) -> bytes:
    """The key as bytes, or WeakKeyError (which never shows the key, nor its length)."""
    if len(key) < KEY_MIN_CHARS or len(set(key)) < KEY_MIN_DISTINCT:
        raise WeakKeyError(
            f"{variable} is too weak: a key needs at least {KEY_MIN_CHARS} characters, at least"
            f" {KEY_MIN_DISTINCT} of them different, or pseudonyms can be reversed by guessing"
            f" it. Make one with: {MAKE_A_KEY} (or unset {variable} for random pseudonyms per"
            " run)."
        )
    return key.encode()


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer padded keys of HMAC-SHA256."""
    if len(key) > _BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK_SIZE, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def pseudonym(customer_id: str, key: bytes) -> str:
    """The keyed pseudonym computed in Python: the reference the SQL is tested against."""
    return str(uuid.UUID(hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()[:32]))


def pseudonym_sql(id_expr: str, key: bytes | None) -> tuple[str, dict[str, bytes]]:
    """A SQL expression giving the pseudonym of `id_expr` (already trimmed), and its parameters."""
    if not key:
        return "uuid()", {}
    inner, outer = hmac_pads(key)
    digest = (
        f"sha256($hmac_outer::BLOB || unhex(sha256($hmac_inner::BLOB || encode({id_expr}))))"
    )
    # The first 128 bits as a UUID, so both modes give the same column type.
    return f"({digest}[1:32])::UUID", {"hmac_inner": inner, "hmac_outer": outer}
