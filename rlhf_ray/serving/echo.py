"""A policy that answers with the prompt itself: no model, constant microsecond cost.

Only for measuring the serving path (router overhead, HTTP, Serve handles) without generation time in the
figures; it implements the same `GenerationBackend` methods as the HF and vLLM backends.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from rlhf_ray.rollout.backends import GenerationParams
from rlhf_ray.rollout.batch import Sample

ECHO_DIGEST = "echo"


class EchoBackend:
    def __init__(self, model_path: str | None = None, **_: object) -> None:
        self.model_path = model_path

    def generate(self, prompts: list[str], prompt_ids: list[str], num_samples: int,
                 params: GenerationParams) -> list[Sample]:
        # word counts stand in for token counts so `usage` stays meaningful
        return [Sample(prompt_id=pid, prompt=prompt, response=prompt, prompt_ids=[0] * len(prompt.split()),
                       response_ids=[0] * len(prompt.split()), finished=True)
                for prompt, pid in zip(prompts, prompt_ids, strict=True) for _ in range(num_samples)]

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        raise NotImplementedError("the echo policy has no weights")

    def state_digest(self) -> str:
        return ECHO_DIGEST
