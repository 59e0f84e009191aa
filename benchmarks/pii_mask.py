"""Throughput of `PiiMasker.mask`: texts/s on simulated prompts and answers with planted PII.

    python benchmarks/pii_mask.py --texts 100000 --pii-fraction 0.05

Draws prompt/answer texts from the synthetic world, plants one PII value (`rlhf_ray.sim.pii`) in a
`--pii-fraction` share of them, then masks every text in one process: with the fast path (skip a pass
when its trigger character or cue word is absent), without it, and with the digit/email kinds only
(no name or address recognizers). Prints one JSON line, including how many planted values survived
(must be 0). Precision and recall for names and addresses: `benchmarks/pii_recall.py`. Not part of
the test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time

import numpy as np

from rlhf_ray.governance import CARD, EMAIL, IPV4, IPV6, NATIONAL_ID, PHONE, PiiMasker
from rlhf_ray.governance.recognizers import triggered
from rlhf_ray.sim import World, WorldConfig
from rlhf_ray.sim.pii import plant_pii


def simulated_texts(count: int, pii_fraction: float, seed: int) -> tuple[list[str], list[tuple[int, str]]]:
    """`count` prompt-like texts and the (text index, value) of every planted PII value."""
    pool = list(World(WorldConfig(num_prompts=200), seed=seed).corpus(samples_per_prompt=3))
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    planted: list[tuple[int, str]] = []
    for index in rng.integers(0, len(pool), size=count):
        text = pool[int(index)]
        if rng.random() < pii_fraction:
            text, _, value = plant_pii(text, rng)
            planted.append((len(texts), value))
        texts.append(text)
    return texts, planted


def time_masking(masker: PiiMasker, texts: list[str], repeats: int) -> tuple[float, list[str], int]:
    """Best wall time over `repeats` runs, the masked texts and the number of masked entities."""
    best = float("inf")
    masked: list[str] = []
    entities = 0
    for _ in range(repeats):
        start = time.perf_counter()
        results = [masker.mask(text) for text in texts]
        best = min(best, time.perf_counter() - start)
        masked = [text for text, _ in results]
        entities = sum(sum(counts.values()) for _, counts in results)
    return best, masked, entities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--pii-fraction", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timed passes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    texts, planted = simulated_texts(args.texts, args.pii_fraction, args.seed)
    fast_seconds, masked, entities = time_masking(PiiMasker(), texts, args.repeats)
    slow_seconds, slow_masked, _ = time_masking(PiiMasker(fast_path=False), texts, args.repeats)
    structured = PiiMasker(kinds=frozenset({EMAIL, IPV6, CARD, IPV4, PHONE, NATIONAL_ID}))
    structured_seconds, _, _ = time_masking(structured, texts, args.repeats)
    survived = sum(value in masked[index] for index, value in planted)
    no_trigger = sum(not ("@" in t or ":" in t or re.search("[0-9]", t) or triggered(t)) for t in texts)
    print(json.dumps({
        "benchmark": "pii_mask",
        "texts": len(texts),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "planted_pii": len(planted),
        "masked_entities": entities,
        "planted_survived": survived,
        "fast_path_share": round(no_trigger / len(texts), 4),
        "texts_per_s": round(len(texts) / fast_seconds),
        "texts_per_s_no_fast_path": round(len(texts) / slow_seconds),
        "fast_path_speedup": round(slow_seconds / fast_seconds, 2),
        "texts_per_s_without_names_and_addresses": round(len(texts) / structured_seconds),
        "same_output_without_fast_path": masked == slow_masked,
        "python": platform.python_version(),
        "processes": 1,
    }))


if __name__ == "__main__":
    main()
