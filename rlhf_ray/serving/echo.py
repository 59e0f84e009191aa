"""A policy that answers with the prompt itself: no model, constant microsecond cost.

Only for measuring the serving path (router overhead, HTTP, Serve handles) without generation time in the
figures; it implements the same `GenerationBackend` methods as the HF and vLLM backends.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from rlhf_ray.inputs.prompts import conversation_text
from rlhf_ray.rollout.backends import GenerationParams
from rlhf_ray.rollout.batch import Sample
from rlhf_ray.training.encoding import Prompt

ECHO_DIGEST = "echo"


class EchoBackend:
    def __init__(self, model_path: str | None = None, **_: object) -> None:
        self.model_path = model_path

    def generate(self, prompts: list[Prompt], prompt_ids: list[str], num_samples: int,
                 params: GenerationParams) -> list[Sample]:
        # a conversation is echoed as its transcript; word counts stand in for token counts so `usage` stays
        # meaningful
        texts = [conversation_text(prompt) for prompt in prompts]
        return [Sample(prompt_id=pid, prompt=text, response=text, prompt_ids=[0] * len(text.split()),
                       response_ids=[0] * len(text.split()), finished=True)
                for text, pid in zip(texts, prompt_ids, strict=True) for _ in range(num_samples)]

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        raise NotImplementedError("the echo policy has no weights")

    def state_digest(self) -> str:
        return ECHO_DIGEST
