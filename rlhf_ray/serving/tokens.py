"""What makes served feedback hard to game: feedback tokens, server-issued user ids, one rating per
(response, user, kind), and a per-user rate limit. Pure functions and small in-memory structures.

Every key derives from the deployment's pseudonym key (one secret to manage, shared by every router replica):

    K_purpose         = HMAC-SHA256(pseudonym key, "rlhf-ray/" ‖ purpose)
    feedback token    = "ft1." ‖ hex(HMAC-SHA256(K_feedback, response_id ‖ 0x00 ‖ user ‖ 0x00 ‖ variant))[:32]
    issued user id    = "anon." ‖ r ‖ "." ‖ hex(HMAC-SHA256(K_user, r))[:16]        (r: 16 random hex digits)

A token names the answer, the user it was served to and the variant that gave it, so feedback that presents it
can be checked without trusting anything the client says: another user's token, a token of another answer, or
a made-up one does not match (128 bits: unguessable). Comparison is constant-time.

The token bucket (per user, per router replica) refills `rate` tokens per second up to `burst`:

    tokens(t) = min(burst, tokens(t₀) + rate · (t − t₀));   allow ⇔ tokens(t) ≥ 1, then tokens −= 1
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

TOKEN_PREFIX = "ft1."
ISSUED_PREFIX = "anon."
_TOKEN_HEX = 32
_ISSUED_HEX = 16


def derive_key(secret: bytes, purpose: str) -> bytes:
    """K_purpose = HMAC-SHA256(secret, "rlhf-ray/" ‖ purpose): one independent key per use of one secret."""
    return hmac.new(secret, f"rlhf-ray/{purpose}".encode(), hashlib.sha256).digest()


def feedback_token(key: bytes, response_id: str, user: str, variant: str) -> str:
    """The token of the answer `response_id` served to `user` by `variant` (see the module doc)."""
    message = "\x00".join((response_id, user, variant)).encode("utf-8", "surrogatepass")
    return TOKEN_PREFIX + hmac.new(key, message, hashlib.sha256).hexdigest()[:_TOKEN_HEX]


def token_matches(key: bytes, token: str | None, response_id: str, user: str, variant: str) -> bool:
    """Whether `token` is the feedback token of (response_id, user, variant); constant-time."""
    if not token:
        return False
    expected = feedback_token(key, response_id, user, variant)
    return hmac.compare_digest(token.encode("utf-8", "surrogatepass"), expected.encode())


def issue_user_id(key: bytes) -> str:
    """A fresh server-issued id for a client without an API key; it may send it back to keep its variant."""
    random_part = secrets.token_hex(_ISSUED_HEX // 2)
    return f"{ISSUED_PREFIX}{random_part}.{hmac.new(key, random_part.encode(), hashlib.sha256).hexdigest()[:16]}"


def issued_user(key: bytes, value: str | None) -> str | None:
    """`value` if it is an id this server issued (its MAC matches), else None: a client cannot make one up,
    so it cannot pick the user, and so the variant, it is assigned."""
    if not value or not value.startswith(ISSUED_PREFIX):
        return None
    random_part, _, mac = value[len(ISSUED_PREFIX):].partition(".")
    if len(random_part) != _ISSUED_HEX:
        return None
    expected = hmac.new(key, random_part.encode(), hashlib.sha256).hexdigest()[:16]
    return value if hmac.compare_digest(mac.encode("utf-8", "surrogatepass"), expected.encode()) else None


@dataclass
class TokenBucket:
    """`burst` requests at once, then `rate` per second (see the module doc); `now` in seconds (monotonic)."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + self.rate * max(0.0, now - self.updated))
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class UserRateLimiter:
    """One token bucket per user; the least recently seen users are forgotten beyond `max_users` (a forgotten
    user starts again with a full bucket, which bounds memory, not fairness)."""

    def __init__(self, rate: float, burst: float, max_users: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate limit needs rate > 0 and burst ≥ 1; got rate={rate}, burst={burst}")
        self.rate, self.burst, self.max_users = rate, burst, max_users
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, user: str, now: float) -> bool:
        bucket = self._buckets.pop(user, None) or TokenBucket(self.rate, self.burst, self.burst, now)
        self._buckets[user] = bucket
        while len(self._buckets) > self.max_users:
            self._buckets.popitem(last=False)
        return bucket.allow(now)


class SeenKeys:
    """A bounded set of keys, e.g. (response id, user, kind) of recorded feedback: `add` is True the first time
    a key is seen, False on a repeat; the oldest keys are forgotten beyond `capacity`."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"SeenKeys capacity must be ≥ 1; got {capacity}")
        self.capacity = capacity
        self._keys: OrderedDict[tuple[str, ...], None] = OrderedDict()

    def __contains__(self, key: tuple[str, ...]) -> bool:
        return key in self._keys

    def add(self, key: tuple[str, ...]) -> bool:
        if key in self._keys:
            return False
        self._keys[key] = None
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return True
