"""Simulated production traffic for a canary: the world's users ask the world's prompts, and judge each
answer from its hidden true utility (`rlhf_ray.sim.judgments.thumbs_up`, P(up) = σ((U − θ_user)/T_user)).

Only the simulation sees the utility; the server sees requests and thumbs, exactly as in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rlhf_ray.sim import World, WorldConfig
from rlhf_ray.sim.judgments import thumbs_up
from rlhf_ray.sim.population import UserProfile
from rlhf_ray.sim.prompts import PromptSpec


@dataclass(frozen=True)
class SimulatedRequest:
    user: UserProfile
    prompt: PromptSpec

    def chat_body(self, model: str, max_tokens: int, temperature: float) -> dict[str, Any]:
        return {"model": model, "messages": [{"role": "user", "content": self.prompt.text}],
                "max_tokens": max_tokens, "temperature": temperature, "user": self.user.user_id,
                "metadata": {"prompt_id": self.prompt.prompt_id, "region": self.user.region}}


class SimulatedUsers:
    """Draws (user, prompt) pairs from the first `num_prompts` training prompts; judges answers."""

    def __init__(self, world: WorldConfig, seed: int, num_prompts: int | None = None) -> None:
        self.world = world = World(world, seed)
        prompts = world.split("train")
        self.prompts = prompts[:num_prompts] if num_prompts else prompts
        self.users = world.users
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 8]))

    def next_request(self) -> SimulatedRequest:
        user = self.users[int(self.rng.integers(len(self.users)))]
        return SimulatedRequest(user, self.prompts[int(self.rng.integers(len(self.prompts)))])

    def thumbs(self, request: SimulatedRequest, response: str) -> tuple[int, float]:
        """(thumbs 0/1, true utility) of the user's judgment of `response`."""
        utility = self.world.utility(request.prompt.prompt_id, response)
        return int(thumbs_up(request.user, utility, self.rng)), utility.total
