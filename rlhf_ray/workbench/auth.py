"""Sign-in: bearer tokens of annotators and reviewers, turned into pseudonymous identities at load time.

The token table (JSON or YAML, from an environment variable or a file) maps names to tokens by role:

    {"annotators": {"alice": "<token>"}, "reviewers": {"rita": "<token>"}}

It is read once by the process that starts the workbench, which keeps only sha256(token) → (pseudonym, role):
neither a token nor a raw name reaches the Serve deployment, its logs or any output. Error messages name the
source and the entry, never a token.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rlhf_ray.governance import Pseudonymizer
from rlhf_ray.workbench.config import Identity

MIN_TOKEN_CHARS = 16
ROLES = {"annotators": "annotator", "reviewers": "reviewer"}


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, None when there is none."""
    scheme, _, value = (authorization or "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def person_pseudonym(pseudonymizer: Pseudonymizer, name: str) -> str:
    """`ann_<16 hex>` for a person, whatever their role, so one person is one annotator in the data."""
    return pseudonymizer.pseudonym(f"annotator-{name}")


def parse_tokens(table: Any, source: str, pseudonymizer: Pseudonymizer) -> dict[str, Identity]:
    if not isinstance(table, Mapping) or not set(table) <= set(ROLES):
        raise ValueError(f"token table from {source}: expected {{annotators: {{name: token}}, reviewers: "
                         "{name: token}}")
    identities: dict[str, Identity] = {}
    for group, role in ROLES.items():
        entries = table.get(group) or {}
        if not isinstance(entries, Mapping):
            raise ValueError(f"token table from {source}: '{group}' must map names to tokens")
        for name, token in entries.items():
            if not isinstance(token, str) or len(token.strip()) < MIN_TOKEN_CHARS:
                raise ValueError(f"token table from {source}: the token of {group}.{name} must be a string of at "
                                 f"least {MIN_TOKEN_CHARS} characters (python -c 'import secrets; "
                                 "print(secrets.token_hex(24))')")
            digest = token_digest(token.strip())
            if digest in identities:
                raise ValueError(f"token table from {source}: {group}.{name} reuses another entry's token")
            identities[digest] = Identity(actor=person_pseudonym(pseudonymizer, str(name)), role=role)
    if not identities:
        raise ValueError(f"token table from {source} has no annotators or reviewers")
    return identities


def load_identities(env_var: str, tokens_file: str | None, pseudonymizer: Pseudonymizer) -> dict[str, Identity]:
    """The environment variable's table if set, else the file's; a clear error when neither is there."""
    text = os.environ.get(env_var, "")
    source = f"environment variable {env_var}"
    if not text.strip() and tokens_file:
        path = Path(tokens_file).expanduser()
        if not path.is_file():
            raise ValueError(f"auth.tokens_file {str(path)!r} does not exist")
        text, source = path.read_text(encoding="utf-8"), f"auth.tokens_file {str(path)!r}"
    if not text.strip():
        raise ValueError(f"no sign-in tokens: set {env_var} or auth.tokens_file to "
                         "{annotators: {name: token}, reviewers: {name: token}} (JSON or YAML)")
    try:
        table = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError(f"token table from {source} is not JSON or YAML") from None
    return parse_tokens(table, source, pseudonymizer)
