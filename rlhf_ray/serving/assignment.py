"""Sticky, weighted assignment of users to the incumbent or the canary.

    u(user) = int(sha256(salt ‖ 0x00 ‖ user)[:8]) / 2⁶⁴  ∈ [0, 1)
    variant = canary  if u(user) < w  else incumbent

Each user has one fixed point u in [0, 1), so the same user sees the same variant for as long as the weight
stays put, and raising w from 0.1 to 0.25 keeps every user already on the canary there (only users with
0.1 ≤ u < 0.25 move). The salt (the deployment id) reshuffles users between canaries, so one unlucky group
is not the guinea pig of every release. sha256 is uniform enough that the canary share over many users
converges to w.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Variant = Literal["incumbent", "canary"]
VARIANTS: tuple[Variant, Variant] = ("incumbent", "canary")
_SCALE = float(2**64)


def user_bucket(user_key: str, salt: str) -> float:
    """u(user) in [0, 1): the user's fixed point on the unit interval (see the module doc)."""
    digest = hashlib.sha256(salt.encode() + b"\x00" + user_key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign_variant(user_key: str, canary_weight: float, salt: str) -> Variant:
    """The variant of `user_key` at canary weight `w` in [0, 1]."""
    if not 0.0 <= canary_weight <= 1.0:
        raise ValueError(f"canary_weight must be in [0, 1]; got {canary_weight}")
    return "canary" if user_bucket(user_key, salt) < canary_weight else "incumbent"
