"""Data governance at capture: PII masking and keyed pseudonyms for user/annotator ids."""

from rlhf_ray.governance.ner import NerModel
from rlhf_ray.governance.pii import (
    ADDRESS,
    CARD,
    EMAIL,
    IPV4,
    IPV6,
    NATIONAL_ID,
    PERSON,
    PHONE,
    PII_KINDS,
    PiiMasker,
    PiiSection,
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
    "ADDRESS",
    "CARD",
    "DEFAULT_KEY_ENV",
    "EMAIL",
    "IPV4",
    "IPV6",
    "NATIONAL_ID",
    "PERSON",
    "PHONE",
    "PII_KINDS",
    "NerModel",
    "PiiMasker",
    "PiiSection",
    "PseudonymSection",
    "Pseudonymizer",
    "generate_key_file",
    "load_key",
    "luhn_valid",
    "placeholder",
]
