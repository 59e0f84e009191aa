"""Keyed pseudonyms for user, annotator and session ids: stable joins, no raw id in any output.

    pseudonym(raw) = prefix + "_" + hex(HMAC-SHA256(key, "id\\0" + raw))[:16]

The same id under the same key always maps to the same pseudonym (annotation QA can still group by
annotator), a different key gives unrelated pseudonyms, and without the key the mapping cannot be
recomputed or reversed (unlike a plain hash of a small id space such as `user-000123`). 16 hex
characters are 64 bits: the chance of any collision among a million ids is about 3e-8.

`digest(raw)` is the same keyed hash for values that are not ids of people but must not be stored as they
are (a malformed identifier that may hold free text): `dig_<16 hex>`.

The key comes from an environment variable or a key file (`load_key`); there is no default key. Jobs name
theirs with one settings section, `PseudonymSection`, so ingest, the canary and the workbench read the
same `pseudonyms.*` keys and, given the same key, write the same pseudonyms.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from pathlib import Path

from pydantic import Field

from rlhf_ray.config import StrictModel

DEFAULT_KEY_ENV = "RLHF_RAY_PSEUDONYM_KEY"
DIGEST_HEX_CHARS = 16
MIN_KEY_BYTES = 16
KEY_FILE_BYTES = 32
KEY_FILE_MODE = 0o600

# Readable prefixes by the kind of id, read from its leading word: `annotator-003` -> `ann_…`.
KIND_PREFIXES: dict[str, str] = {"annotator": "ann", "ann": "ann", "user": "usr", "usr": "usr"}
DEFAULT_PREFIX = "id"
SESSION_PREFIX = "ses"
_LEADING_WORD = re.compile(r"([A-Za-z]+)[-_:.]")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")

DIGEST_PREFIX = "dig"
_ID_DOMAIN = b"id\x00"
_SESSION_DOMAIN = b"session\x00"
_DIGEST_DOMAIN = b"digest\x00"


class Pseudonymizer:
    """Map raw ids to keyed pseudonyms. Picklable; its repr never shows the key."""

    __slots__ = ("_key", "prefix_by_kind")

    def __init__(self, key: bytes, prefix_by_kind: bool = True) -> None:
        if not isinstance(key, (bytes, bytearray)):
            raise TypeError(f"Pseudonymizer key must be bytes, got {type(key).__name__} (use load_key)")
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"Pseudonymizer key is {len(key)} bytes; use at least {MIN_KEY_BYTES} random bytes")
        self._key = bytes(key)
        self.prefix_by_kind = prefix_by_kind

    def __repr__(self) -> str:
        return f"Pseudonymizer(key=<{len(self._key)} bytes, hidden>, prefix_by_kind={self.prefix_by_kind})"

    def __getstate__(self) -> tuple[bytes, bool]:
        return self._key, self.prefix_by_kind

    def __setstate__(self, state: tuple[bytes, bool]) -> None:
        self._key, self.prefix_by_kind = state

    def _digest(self, domain: bytes, raw: str) -> str:
        mac = hmac.new(self._key, domain + raw.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return mac.hexdigest()[:DIGEST_HEX_CHARS]

    def prefix(self, raw_id: str) -> str:
        """`ann`, `usr` or `id`: the kind of id, read from its leading word (`id` when prefix_by_kind=False)."""
        if not self.prefix_by_kind:
            return DEFAULT_PREFIX
        match = _LEADING_WORD.match(raw_id)
        return KIND_PREFIXES.get(match.group(1).lower(), DEFAULT_PREFIX) if match else DEFAULT_PREFIX

    def pseudonym(self, raw_id: str) -> str:
        """`annotator-003` -> `ann_<16 hex>`, `user-000123` -> `usr_<16 hex>`, anything else `id_<16 hex>`."""
        if not isinstance(raw_id, str):
            raise TypeError(f"pseudonym expects a str id, got {type(raw_id).__name__}")
        return f"{self.prefix(raw_id)}_{self._digest(_ID_DOMAIN, raw_id)}"

    def digest(self, raw: str) -> str:
        """`dig_<16 hex>`: a keyed digest of any value that must not be stored (a malformed id, a raw field name).

        Whoever holds the key can check a candidate value against it (debugging a quarantined row); nobody
        else can recompute or reverse it. Its own HMAC domain: never equal to a pseudonym's digest.
        """
        if not isinstance(raw, str):
            raise TypeError(f"digest expects a str, got {type(raw).__name__}")
        return f"{DIGEST_PREFIX}_{self._digest(_DIGEST_DOMAIN, raw)}"

    def pseudonymize_session(self, session_id: str) -> str:
        """`<actor id>/<suffix>` -> `<pseudonym(actor id)>/ses_<16 hex>`.

        The actor part equals `pseudonym(actor id)`, so sessions still join to their actor; the
        suffix is replaced by a keyed hash of the whole session id (so equal suffixes of different
        actors stay distinct). A session id without `/` becomes `ses_<16 hex>`.
        """
        if not isinstance(session_id, str):
            raise TypeError(f"pseudonymize_session expects a str id, got {type(session_id).__name__}")
        session = f"{SESSION_PREFIX}_{self._digest(_SESSION_DOMAIN, session_id)}"
        actor, slash, _ = session_id.partition("/")
        return f"{self.pseudonym(actor)}/{session}" if slash else session


def _decode_key(text: str, source: str) -> bytes:
    """Hex text (an even number of hex digits) decodes to bytes; anything else is used as raw UTF-8."""
    value = text.strip()
    key = bytes.fromhex(value) if _HEX.fullmatch(value) else value.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"pseudonym key from {source} is {len(key)} bytes; use at least {MIN_KEY_BYTES} "
            f"(e.g. {KEY_FILE_BYTES} random bytes as hex: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return key


def load_key(env_var: str = DEFAULT_KEY_ENV, key_file: str | os.PathLike[str] | None = None) -> bytes:
    """The HMAC key: environment variable `env_var` if set and non-empty, else the contents of `key_file`.

    Either holds hex (e.g. 64 hex digits) or raw text of at least 16 bytes. With neither, raise a
    `ValueError` naming both options; there is deliberately no default key.
    """
    value = os.environ.get(env_var, "")
    if value.strip():
        return _decode_key(value, f"environment variable {env_var}")
    if key_file is not None:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise ValueError(
                f"pseudonym key file {str(path)!r} does not exist (and {env_var} is not set); "
                f"create one with rlhf_ray.governance.generate_key_file({str(path)!r})"
            )
        return _decode_key(path.read_text(encoding="utf-8"), f"key file {str(path)!r}")
    raise ValueError(
        f"no pseudonym key: set the environment variable {env_var} (hex, e.g. from "
        "`python -c 'import secrets; print(secrets.token_hex(32))'`) or set the key-file option "
        "(pseudonyms.key_file=PATH; create one with rlhf_ray.governance.generate_key_file(PATH)). "
        "There is no default key."
    )


def generate_key_file(path: str | os.PathLike[str], overwrite: bool = False) -> bytes:
    """Write 32 random bytes as hex to `path` with mode 0600, atomically; return the key.

    The file appears complete or not at all (temp file in the same folder, then rename/link). An
    existing file is kept and `FileExistsError` raised unless `overwrite=True`.
    """
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_FILE_BYTES)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(descriptor, KEY_FILE_MODE)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(key.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temp_name, target)
        else:
            _link_new(temp_name, target)
            os.unlink(temp_name)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
    return key


def _link_new(temp_name: str, target: Path) -> None:
    """Publish `temp_name` as `target` unless it exists: never clobbers a key in use."""
    try:
        os.link(temp_name, target)  # atomic and fails if target exists
    except FileExistsError:
        raise FileExistsError(f"pseudonym key file {str(target)!r} already exists; "
                              "pass overwrite=True to replace it (old pseudonyms stop matching)") from None
    except OSError:  # a filesystem without hard links
        if target.exists():
            raise FileExistsError(f"pseudonym key file {str(target)!r} already exists; "
                                  "pass overwrite=True to replace it (old pseudonyms stop matching)") from None
        os.replace(temp_name, target)


class PseudonymSection(StrictModel):
    """A job's `pseudonyms` settings: where the HMAC key comes from, and whether to create a missing key file.

    One schema for every job that pseudonymizes (ingest, the canary's router, the workbench): ids pseudonymized
    by one job must join with another's, which only holds if they read the key the same way.
    """

    key_env: str = Field(DEFAULT_KEY_ENV, description="environment variable holding the HMAC key")
    key_file: str | None = Field(None, description="file holding the HMAC key (hex), used when the env var is unset")
    create_key_file: bool = Field(False, description="write a new random key to key_file (mode 0600) if it is missing")

    def create_missing_key_file(self) -> bool:
        """Write a new key to `key_file` when `create_key_file` asks for one and no file is there; True if written.

        An existing file is never replaced: a new key would stop every earlier pseudonym from matching.
        """
        if not self.create_key_file or not self.key_file or Path(self.key_file).expanduser().exists():
            return False
        try:
            generate_key_file(self.key_file)
        except FileExistsError:  # another process created it first; theirs is the key
            return False
        return True

    def pseudonymizer(self) -> Pseudonymizer:
        """The keyed pseudonymizer; `ValueError` naming both settings if there is no usable key."""
        return Pseudonymizer(load_key(self.key_env, self.key_file))
