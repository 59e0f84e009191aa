"""Simulated production traffic for a canary: the world's users ask the world's prompts, and judge each
answer from its hidden true utility (`rlhf_ray.sim.judgments.thumbs_up`, P(up) = σ((U − θ_user)/T_user)).

Only the simulation sees the utility; the server sees requests and thumbs, exactly as in production.
`SimulatedTraffic` offers them to the canary job as a traffic source, like `rlhf_ray.serving.replay.ReplayTraffic`.
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


class SimulatedTraffic:
    """The world's users as a canary's traffic source: their requests, and a thumb on a `feedback_rate` share of the
    answers; records each judged answer's true utility per variant."""

    def __init__(self, users: SimulatedUsers, model: str, max_tokens: int, temperature: float,
                 feedback_rate: float) -> None:
        self.users, self.model, self.max_tokens, self.temperature = users, model, max_tokens, temperature
        self.feedback_rate = feedback_rate
        self.utilities: dict[str, list[float]] = {"incumbent": [], "canary": []}

    def next_request(self) -> SimulatedRequest:
        return self.users.next_request()

    def chat_body(self, request: SimulatedRequest) -> dict[str, Any]:
        return request.chat_body(self.model, self.max_tokens, self.temperature)

    def judge_reply(self, request: SimulatedRequest, reply: dict[str, Any]) -> dict[str, Any] | None:
        if self.users.rng.random() >= self.feedback_rate:
            return None
        thumbs, utility = self.users.thumbs(request, reply["choices"][0]["message"]["content"])
        self.utilities[reply["variant"]].append(utility)
        return {"kind": "thumbs", "response_id": reply["id"], "value": thumbs}

    def figures(self) -> dict[str, Any]:
        return {"true_utility": {variant: round(sum(u) / len(u), 4) if u else None
                                 for variant, u in self.utilities.items()}}
