"""Held-out pairs labelled by the hidden utility: simulation-only ground truth for evaluating reward models.

Never a training input: the prompts come from the validation split (to choose on) or the test split (to report
on), seen intents only, and the labels from `true_utility`.
"""

from __future__ import annotations

from rlhf_ray.sim.judgments import TIE_MARGIN
from rlhf_ray.sim.prompts import EVAL_SPLITS
from rlhf_ray.sim.responses import POLICY_STYLE_MIX, STYLES, draw_style
from rlhf_ray.sim.world import World, rng_for

STREAM_EVALUATION = 7


def truth_pairs(world: World, per_prompt: int = 4, min_gap: float = TIE_MARGIN,
                split: str = "validation") -> list[dict]:
    """Two answers per draw from the production policy mix, ordered by true utility; near-ties skipped."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"truth pairs come from {EVAL_SPLITS}, never from train; got split {split!r}")
    rng = rng_for(world.seed, STREAM_EVALUATION, EVAL_SPLITS.index(split))
    mix = POLICY_STYLE_MIX[max(POLICY_STYLE_MIX)]
    pairs = []
    for spec in world.split(split):
        for _ in range(per_prompt):
            a, b = (world.respond(spec, STYLES[draw_style(mix, rng)], rng) for _ in range(2))
            ua, ub = world.utility(spec.prompt_id, a).total, world.utility(spec.prompt_id, b).total
            if abs(ua - ub) < min_gap:
                continue
            (chosen, u_chosen), (rejected, u_rejected) = sorted([(a, ua), (b, ub)], key=lambda x: -x[1])
            pairs.append({"prompt": spec.text, "chosen": chosen, "rejected": rejected,
                          "chosen_utility": u_chosen, "rejected_utility": u_rejected})
    return pairs
