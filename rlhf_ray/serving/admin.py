"""Admin access and who a caller is.

Admin: one bearer token from an environment variable or a file, compared in constant time. There is no
default token: without one the admin endpoints are disabled, so a deployment cannot be left open by
forgetting to set it.

Users: the API key a client sends as `Authorization: Bearer` (what the openai client sends), mapped by a keys
table `{user name: api key}` (an environment variable or a file, JSON or YAML) to the user's keyed pseudonym.
The table is reduced to sha256(key) → pseudonym when loaded: no key and no raw name is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rlhf_ray.governance import Pseudonymizer
from rlhf_ray.serving.tokens import issue_user_id, issued_user

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
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8", "surrogatepass"),
                                                              token.encode())


# ---------------------------------------------------------------------------------------------- who the caller is

class AuthError(ValueError):
    """A bearer credential that names nobody (401); the message never shows the credential."""


@dataclass(frozen=True)
class Caller:
    """Who sent a request: `user` is a pseudonym (never a raw id), `authenticated` whether an API key (or the
    admin asserting a user) vouches for it, `admin` whether the admin token came with it, and `issued` the
    server-issued id to hand back when this request got a new one."""

    user: str
    authenticated: bool
    admin: bool = False
    issued: str | None = None


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` header, None when there is none."""
    scheme, _, value = (authorization or "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_api_keys(table: Any, source: str, pseudonymizer: Pseudonymizer) -> dict[str, str]:
    """`{user name: api key}` → {sha256(api key): pseudonym(user name)}: neither keys nor names are kept."""
    if not isinstance(table, Mapping) or not table:
        raise ValueError(f"API keys from {source}: expected a non-empty mapping {{user name: api key}}")
    users: dict[str, str] = {}
    for name, api_key in table.items():
        if not isinstance(api_key, str) or len(api_key.strip()) < MIN_TOKEN_CHARS:
            raise ValueError(f"API keys from {source}: the key of user {str(name)[:40]!r} must be a string of at "
                             f"least {MIN_TOKEN_CHARS} characters")
        digest = key_digest(api_key.strip())
        if digest in users:
            raise ValueError(f"API keys from {source}: user {str(name)[:40]!r} reuses another user's key")
        users[digest] = pseudonymizer.pseudonym(str(name))
    return users


def load_api_keys(env_var: str, keys_file: str | None, pseudonymizer: Pseudonymizer) -> dict[str, str]:
    """The table of `env_var` if set, else of `keys_file` (JSON or YAML); {} when neither is configured."""
    text, source = os.environ.get(env_var, ""), f"environment variable {env_var}"
    if not text.strip() and keys_file:
        path = Path(keys_file).expanduser()
        if not path.is_file():
            raise ValueError(f"auth.keys_file {str(path)!r} does not exist; expected a file {{user name: api key}}")
        text, source = path.read_text(encoding="utf-8"), f"auth.keys_file {str(path)!r}"
    if not text.strip():
        return {}
    try:
        table = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError(f"API keys from {source}: not JSON or YAML") from None
    return parse_api_keys(table, source, pseudonymizer)


def identify(authorization: str | None, asserted_user: str | None, issued_value: str | None,
             api_keys: Mapping[str, str], admin_token: str | None, pseudonymizer: Pseudonymizer,
             user_key: bytes) -> Caller:
    """Who a request comes from:

        Bearer <admin token>   admin; the user it asserts (`x-user-id`) is authenticated (a trusted front end)
        Bearer <API key>       the key's user, authenticated
        anything else          unauthenticated: the server-issued id the client sent back, or a new one

    A bearer that is neither the admin token nor a known key is refused (AuthError) when API keys are
    configured; without keys it is ignored (the openai client always sends one)."""
    credential = bearer_token(authorization)
    if credential is not None and admin_token is not None and \
            hmac.compare_digest(credential.encode("utf-8", "surrogatepass"), admin_token.encode()):
        if asserted_user:
            return Caller(pseudonymizer.pseudonym(asserted_user), authenticated=True, admin=True)
        return _unauthenticated(issued_value, pseudonymizer, user_key, admin=True)
    if credential is not None and api_keys:
        user = api_keys.get(key_digest(credential))
        if user is None:
            raise AuthError("header 'Authorization': unknown API key, expected 'Bearer <your API key>'")
        return Caller(user, authenticated=True)
    return _unauthenticated(issued_value, pseudonymizer, user_key, admin=False)


def _unauthenticated(issued_value: str | None, pseudonymizer: Pseudonymizer, user_key: bytes,
                     admin: bool) -> Caller:
    known = issued_user(user_key, issued_value)
    issued = known or issue_user_id(user_key)
    return Caller(pseudonymizer.pseudonym(issued), authenticated=False, admin=admin,
                  issued=None if known else issued)
