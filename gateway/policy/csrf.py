"""CSRF tokens for the portal's forms: stateless, bound to the visitor and the form's target."""

from __future__ import annotations

import hashlib
import hmac


def derive_key(secret: str) -> bytes:
    """A key for CSRF tokens derived from a configured secret, so no token doubles as a JWT signature."""
    return hmac.new(secret.encode(), b"portal-gateway csrf v1", hashlib.sha256).digest()


def csrf_token(key: bytes, user_id: str, action: str) -> str:
    """The token a form for ``action`` (e.g. ``join:1042``) carries for ``user_id``."""
    message = f"{len(user_id)}:{user_id}|{action}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def csrf_valid(key: bytes, user_id: str, action: str, token: str) -> bool:
    """Whether ``token`` is this visitor's token for ``action``; compared in constant time."""
    # SECURITY: a cross-site form cannot know the token: it needs the key, and it names the user and the action.
    return hmac.compare_digest(csrf_token(key, user_id, action).encode(), token.encode("utf-8", "replace"))
