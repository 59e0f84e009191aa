"""Data governance at capture: PII masking and keyed pseudonyms for user/annotator ids."""

from rlhf_ray.governance.pii import (
    CARD,
    EMAIL,
    IPV4,
    IPV6,
    NATIONAL_ID,
    PHONE,
    PII_KINDS,
    PiiMasker,
    luhn_valid,
    placeholder,
)
from rlhf_ray.governance.pseudonyms import (
    DEFAULT_KEY_ENV,
    Pseudonymizer,
    PseudonymSection,
    generate_key_file,
    load_key,
)

__all__ = [
    "CARD",
    "DEFAULT_KEY_ENV",
    "EMAIL",
    "IPV4",
    "IPV6",
    "NATIONAL_ID",
    "PHONE",
    "PII_KINDS",
    "PiiMasker",
    "PseudonymSection",
    "Pseudonymizer",
    "generate_key_file",
    "load_key",
    "luhn_valid",
    "placeholder",
]
