"""The reward sources themselves: each scores a batch of (prompt, response) pairs with one number per pair.

    rm         a trained reward model: (RM(x, y) − μ)/σ with its saved statistics (or raw, normalize: false)
    http       a remote scorer: POST {"prompts": [...], "responses": [...]} → {"scores": [...]}
               (`rlhf-ray serve-rm` answers this; so may any other service)
    function   a Python function f(prompt, response, meta) → float, for verifiable or rule rewards
    llm_judge  a causal LM asked, with a rubric, for a score that `parse_score` reads from its answer; an
               unparseable answer scores `failure_score` and is counted in `failures`

Plain classes (no Ray): the reward scorer actor and the `serve-rm` deployment hold them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from rlhf_ray.rewards.judge import JUDGE_RUBRIC, judge_prompt, parse_score
from rlhf_ray.rewards.spec import RewardSourceSpec, load_function


class RewardSource(Protocol):
    """Scores pairs; `failures` counts the answers of the latest call it could not score properly."""

    failures: int

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              metas: Sequence[Mapping[str, Any]]) -> list[float]:
        ...


class RMSource:
    """A trained reward model (`RewardModel.save_pretrained` directory with its tokenizer)."""

    def __init__(self, path: str, normalize: bool = True, max_length: int = 512, batch_size: int = 16,
                 device: torch.device | str = "cpu", dtype: torch.dtype | str = "float32") -> None:
        from rlhf_ray.models.loading import load_tokenizer, resolve_model_path
        from rlhf_ray.models.placement import resolve_device, torch_dtype
        from rlhf_ray.training.reward_model import RewardModel

        resolved = resolve_model_path(path)
        self.device = resolve_device(device)
        self.tokenizer = load_tokenizer(resolved)
        self.model = RewardModel.load(resolved, torch_dtype(dtype)).to(self.device).eval().requires_grad_(False)
        self.normalize, self.max_length, self.batch_size, self.failures = normalize, max_length, batch_size, 0

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              metas: Sequence[Mapping[str, Any]] = ()) -> list[float]:
        from rlhf_ray.training.encoding import encode_chat

        out: list[float] = []
        with torch.no_grad():
            for first in range(0, len(prompts), self.batch_size):
                batch = encode_chat(self.tokenizer, prompts[first: first + self.batch_size],
                                    responses[first: first + self.batch_size], self.max_length)
                # a bf16/fp16 model's raw reward is normalised in float32
                raw = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)).float()
                out.extend((self.model.normalized(raw) if self.normalize else raw).cpu().tolist())
        return out


class HTTPSource:
    """A scorer behind a URL, asked `batch_size` pairs per request."""

    def __init__(self, url: str, timeout_s: float = 30.0, batch_size: int = 16) -> None:
        self.url, self.timeout_s, self.batch_size, self.failures = url, timeout_s, batch_size, 0

    def _post(self, prompts: list[str], responses: list[str]) -> list[float]:
        body = json.dumps({"prompts": prompts, "responses": responses}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"},
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:  # the spec allows http(s) only
                answer = json.loads(reply.read())
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{self.url} answered HTTP {error.code}: {error.read()[:200]!r}") from None
        scores = answer.get("scores") if isinstance(answer, dict) else None
        if not isinstance(scores, list) or len(scores) != len(prompts):
            raise ValueError(f"{self.url} must answer {{'scores': [one number per response]}} for {len(prompts)} "
                             f"responses; got {str(answer)[:200]}")
        return [float(s) for s in scores]

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              metas: Sequence[Mapping[str, Any]] = ()) -> list[float]:
        out: list[float] = []
        for first in range(0, len(prompts), self.batch_size):
            out.extend(self._post(list(prompts[first: first + self.batch_size]),
                                  list(responses[first: first + self.batch_size])))
        return out


class FunctionSource:
    """`package.module:function(prompt, response, meta) -> float`, called once per pair."""

    def __init__(self, spec: str) -> None:
        self.spec, self.function, self.failures = spec, load_function(spec), 0

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              metas: Sequence[Mapping[str, Any]] = ()) -> list[float]:
        metas = list(metas) or [{} for _ in prompts]
        out = []
        for prompt, response, meta in zip(prompts, responses, metas, strict=True):
            value = self.function(prompt, response, dict(meta))
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{self.spec} must return a number; got {value!r}")
            out.append(float(value))
        return out


class LLMJudgeSource:
    """A local causal-LM checkpoint as judge: greedy answer to `judge_prompt`, score read by `parse_score`."""

    def __init__(self, path: str, rubric: str | None = None, score_range: tuple[float, float] = (1.0, 10.0),
                 max_new_tokens: int = 16, failure_score: float | None = None, batch_size: int = 16,
                 device: torch.device | str = "cpu", dtype: torch.dtype | str = "float32") -> None:
        from rlhf_ray.rollout.backends import HFBackend

        self.backend = HFBackend(path, device=str(device), dtype=dtype, max_batch_size=batch_size)
        self.rubric = rubric or JUDGE_RUBRIC
        self.low, self.high = score_range
        # an unparseable verdict is neither good nor bad: the middle of the scale unless configured
        self.failure_score = (self.low + self.high) / 2 if failure_score is None else failure_score
        self.max_new_tokens, self.failures = max_new_tokens, 0
        self.last_outputs: list[str] = []

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              metas: Sequence[Mapping[str, Any]] = ()) -> list[float]:
        from rlhf_ray.rollout.backends import GenerationParams

        asks = [judge_prompt(self.rubric, p, r, self.low, self.high) for p, r in zip(prompts, responses, strict=True)]
        samples = self.backend.generate(asks, [str(i) for i in range(len(asks))], 1,
                                        GenerationParams(max_new_tokens=self.max_new_tokens, temperature=0.0))
        self.last_outputs = [s.response for s in samples]
        parsed = [parse_score(text, self.low, self.high) for text in self.last_outputs]
        self.failures = sum(value is None for value in parsed)
        return [self.failure_score if value is None else value for value in parsed]


def build_source(spec: RewardSourceSpec, max_length: int = 512, device: torch.device | str = "cpu",
                 dtype: torch.dtype | str = "float32") -> RewardSource:
    """The source a spec names, loaded (models on `device`, their weights in `dtype`)."""
    if spec.kind == "rm":
        return RMSource(spec.path, spec.normalize, max_length, spec.batch_size, device, dtype)
    if spec.kind == "http":
        return HTTPSource(spec.url, spec.timeout_s, spec.batch_size)
    if spec.kind == "function":
        return FunctionSource(spec.function)
    return LLMJudgeSource(spec.path, spec.rubric, spec.score_range, spec.max_new_tokens, spec.failure_score,
                          spec.batch_size, device, dtype)
