"""Admin access: one bearer token from an environment variable or a file, compared in constant time.

There is no default token: without one the admin endpoints are disabled, so a deployment cannot be left
open by forgetting to set it.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

MIN_TOKEN_CHARS = 16


def load_admin_token(env_var: str, token_file: str | None) -> str | None:
    """The token from `env_var` if set, else from `token_file`; None when neither is configured.

    A token shorter than 16 characters is refused (ValueError): it could be guessed.
    """
    value = os.environ.get(env_var, "").strip()
    source = f"environment variable {env_var}"
    if not value and token_file:
        path = Path(token_file).expanduser()
        if not path.is_file():
            raise ValueError(f"admin token file {str(path)!r} does not exist; expected a file holding the token")
        value, source = path.read_text(encoding="utf-8").strip(), f"admin token file {str(path)!r}"
    if not value:
        return None
    if len(value) < MIN_TOKEN_CHARS:
        raise ValueError(f"admin token from {source} has {len(value)} characters; expected at least "
                         f"{MIN_TOKEN_CHARS} (e.g. python -c 'import secrets; print(secrets.token_hex(32))')")
    return value


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an `Authorization: Bearer <token>` header carries `token` (constant-time comparison)."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
