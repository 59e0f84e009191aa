"""PPO's frozen scorers: the reward scorer (reward model + rule penalties) and the reference model.

Both are plain classes that run in one process without Ray; a job makes them Ray actors with
`ray.remote(num_cpus=..., num_gpus=...)(Cls)` (imported from `actors.scoring`).
They hold a model in eval mode, never build a graph (`torch.no_grad`, not inference mode: the learner must be
able to mix the results into its autograd graph), work through their input in micro-batches to bound memory,
and keep the seconds their last call took (`timing()`), so the controller can report `timing/reward` and
`timing/reference` as time spent computing, apart from queueing and transfer.

Reward (per response b):

    rm[b]    = Σ_k w_k · s_k(x_b, y_b)        the weighted reward sources (`rlhf_ray.rewards`): a reward model
                                              (RM − μ)/σ, a remote RM over HTTP, a Python function, an LLM judge
             | keyword_coverage(y_b)          or, with no source, the configured rule reward
    total[b] = rm[b] − verbosity_penalty[b] − canned_penalty[b] − repetition_penalty[b]

`reward_model_path` is one `rm` source of weight 1. A source that raises is retried (`retries`), then the call
fails with `SourceFailedError` naming it; each source's mean score, seconds and failures of the latest call are
in `source_figures()`.

(`rlhf_ray.algos.penalties` has the penalty equations.) The world's hidden utility is never used here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rlhf_ray.algos.penalties import RulePenaltySettings, keyword_coverage
from rlhf_ray.models.heads import DEFAULT_TOKEN_BUDGET, causal_lm_token_logprobs_entropy
from rlhf_ray.models.loading import load_causal_lm
from rlhf_ray.models.placement import resolve_device, torch_dtype
from rlhf_ray.rewards.combine import combine_scores, with_retries
from rlhf_ray.rewards.sources import RewardSource, build_source
from rlhf_ray.rewards.spec import RewardSourceSpec

RULE_REWARD_KEYS = ("keywords", "scale")


def set_threads(num_threads: int | None) -> None:
    """`torch.set_num_threads` for an actor holding a fraction of a node's CPUs; None leaves torch's default."""
    if num_threads is None:
        return
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be an integer >= 1 (or None); got {num_threads!r}")
    torch.set_num_threads(num_threads)


def _check_batch_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Position of each token among its row's real tokens, whatever the padding side:

        pos[b, t] = (Σ_{s ≤ t} a[b, s]) − 1   for real tokens,   1 for padding (any valid index; masked out)

    the convention HF `generate` uses, so a left-padded rollout is scored at the positions it was sampled at.
    For right-padded rows the real tokens get 0, 1, 2, ... exactly as with no `position_ids`.
    """
    positions = attention_mask.long().cumsum(dim=-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def causal_lm_token_logprobs(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor,
                             token_budget: int | None = None) -> Tensor:
    """`token_logprobs` of a causal LM on its own input: out[b, t] = log p(input_ids[b, t+1] | input_ids[b, ≤t]).

    Positions come from `position_ids_from_mask`. Columns whose target token is padding hold meaningless
    values: mask with `attention_mask[:, 1:]` (or a response mask's `[:, 1:]`), as everywhere in `algos`.
    `token_budget`: at most this many tokens' logits exist at once (`causal_lm_token_logprobs_entropy`);
    None forms all [B, T, V] logits at once.
    """
    return causal_lm_token_logprobs_entropy(model, input_ids, attention_mask, position_ids_from_mask(attention_mask),
                                            token_budget)[0]


class _Timed:
    """Seconds of computation per call, kept for the controller's `timing/*` metrics."""

    def __init__(self) -> None:
        self._last = 0.0
        self._total = 0.0
        self._calls = 0

    def _record(self, start: float) -> None:
        self._last = time.perf_counter() - start
        self._total += self._last
        self._calls += 1

    def timing(self) -> dict[str, float]:
        """last_s: seconds the latest call computed; total_s and calls: over the actor's life."""
        return {"last_s": self._last, "total_s": self._total, "calls": float(self._calls)}


class RewardScorer(_Timed):
    """Scores (prompt, response) pairs: the weighted reward sources (or a rule reward) minus the rule penalties.

    Args:
        reward_model_path: a directory written by `RewardModel.save_pretrained` with its tokenizer beside it:
            an `rm` source named "rm" of weight 1 (with `normalize`), before any `sources`; None for none.
        penalties: `RulePenaltySettings` (or a dict of its fields); None means the defaults.
        max_length: token budget per prompt+response, as in training (`encode_chat` keeps the start).
        normalize: report the RM reward as (r − μ)/σ with the statistics saved beside the model.
        rule_reward: with no reward source, `{"keywords": [...], "scale": 1.0}`: rm = scale · fraction of the
            keywords the response mentions (`keyword_coverage`: presence, not count, so length earns nothing).
        sources: further reward sources (`RewardSourceSpec` or dicts of its fields), combined with their weights.
        retries: tries after the first failure of a source before the call fails naming it.
        batch_size: responses per reward-model forward pass.
        num_threads: `torch.set_num_threads` for this process (None: leave as is).
        device: auto | cpu | cuda | cuda:N for the model sources (`rlhf_ray.models.placement`; auto: CUDA when
            visible).
        dtype: float32 | bfloat16 | float16: the model sources load their weights in it.
    """

    def __init__(self, reward_model_path: str | None, penalties: RulePenaltySettings | Mapping[str, Any] | None = None,
                 max_length: int = 512, normalize: bool = True, rule_reward: Mapping[str, Any] | None = None, *,
                 sources: Sequence[RewardSourceSpec | Mapping[str, Any]] = (), retries: int = 2,
                 batch_size: int = 16, num_threads: int | None = None, device: str = "auto",
                 dtype: str = "float32") -> None:
        super().__init__()
        set_threads(num_threads)
        _check_batch_size("batch_size", batch_size)
        _check_batch_size("max_length", max_length)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0; got {retries!r}")
        specs = [s if isinstance(s, RewardSourceSpec) else RewardSourceSpec(**s) for s in sources]
        if reward_model_path is not None:
            specs.insert(0, RewardSourceSpec(kind="rm", name="rm", path=reward_model_path, normalize=normalize,
                                             batch_size=batch_size))
        if not specs and rule_reward is None:
            raise ValueError("RewardScorer needs a reward: set reward_model_path (a trained reward model directory), "
                             "sources, or rule_reward (e.g. {'keywords': [...]})")
        if specs and rule_reward is not None:
            raise ValueError("RewardScorer takes one reward: set reward_model_path / sources or rule_reward, not "
                             f"both; got reward_model_path={reward_model_path!r}, {len(sources)} source(s) and "
                             f"rule_reward={dict(rule_reward)!r}")
        names = [spec.label(index) for index, spec in enumerate(specs)]
        if len(set(names)) != len(names):
            raise ValueError(f"reward source names must be unique; got {names}")
        if penalties is None:
            penalties = RulePenaltySettings()
        elif isinstance(penalties, Mapping):
            penalties = RulePenaltySettings(**penalties)
        self.penalties = penalties
        self.max_length = max_length
        self.normalize = normalize
        self.batch_size = batch_size
        self.retries = retries
        self.device = resolve_device(device)
        self.dtype = torch_dtype(dtype)
        self.weights = {name: spec.weight for name, spec in zip(names, specs, strict=True)}
        self.sources: dict[str, RewardSource] = {name: build_source(spec, max_length, self.device, self.dtype)
                                                 for name, spec in zip(names, specs, strict=True)}
        self._sources: dict[str, dict[str, float]] = {}
        self.keywords: tuple[str, ...] = ()
        self.rule_scale = 1.0
        if rule_reward is not None:
            self._configure_rule(rule_reward)

    def _configure_rule(self, rule: Mapping[str, Any]) -> None:
        unknown = sorted(set(rule) - set(RULE_REWARD_KEYS))
        if unknown:
            raise ValueError(f"rule_reward has unknown key {unknown[0]!r}; expected keys {list(RULE_REWARD_KEYS)}")
        keywords = rule.get("keywords")
        if isinstance(keywords, str) or not keywords:
            raise ValueError(f"rule_reward.keywords must be a non-empty list of strings; got {keywords!r}")
        scale = rule.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"rule_reward.scale must be a number > 0; got {scale!r}")
        keyword_coverage([], keywords)  # a blank keyword fails here, naming it
        self.keywords, self.rule_scale = tuple(keywords), float(scale)

    def ready(self) -> bool:
        return True

    def _reward(self, prompts: list[str], responses: list[str],
                metas: Sequence[Mapping[str, Any]]) -> tuple[list[float], dict[str, dict[str, float]]]:
        """The combined reward and, per source, its mean score, seconds and failures (failed tries plus answers
        it could not score, e.g. an LLM judge's unparseable verdicts)."""
        if not self.sources:
            return keyword_coverage(responses, self.keywords, self.rule_scale).tolist(), {}
        scores, figures = {}, {}
        for name, source in self.sources.items():
            started = time.perf_counter()
            scores[name], failed = with_retries(name, lambda s=source: s.score(prompts, responses, metas),
                                                self.retries)
            figures[name] = {"mean": float(sum(scores[name]) / len(scores[name])) if scores[name] else 0.0,
                             "latency_s": time.perf_counter() - started,
                             "failures": float(failed + source.failures)}
        return combine_scores(scores, self.weights), figures

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              metas: Sequence[Mapping[str, Any]] = ()) -> dict[str, list[float] | list[int]]:
        """Per-response reward terms as plain lists (cheap to ship through Ray), all of length B:

        rm (the combined reward), verbosity_penalty, canned_penalty, repetition_penalty, total (floats; total =
        rm − the three penalties, computed in Python floats from the listed values), canned_hits, repeats and
        words (ints). `metas` (one dict per pair, default empty) reach function sources as their third argument;
        `source_figures()` has each source's figures of this call.
        """
        start = time.perf_counter()
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"prompts and responses must have the same length; got {len(prompts)} and "
                             f"{len(responses)}")
        if metas and len(metas) != len(prompts):
            raise ValueError(f"metas must hold one dict per response ({len(prompts)}); got {len(metas)}")
        rm, sources = self._reward(prompts, responses, metas)
        terms = self.penalties.penalties(responses)
        verbosity = terms["verbosity_penalty"].tolist()
        canned = terms["canned_penalty"].tolist()
        repetition = terms["repetition_penalty"].tolist()
        result = {
            "rm": rm,
            "verbosity_penalty": verbosity,
            "canned_penalty": canned,
            "repetition_penalty": repetition,
            "canned_hits": terms["canned_hits"],
            "repeats": terms["repeats"],
            "words": terms["words"],
            "total": [r - v - c - p for r, v, c, p in zip(rm, verbosity, canned, repetition, strict=True)],
        }
        self._sources = sources
        self._record(start)
        return result

    def source_figures(self) -> dict[str, float]:
        """Each source's figures of the latest `score` call as metric names: reward_source/<name>/mean (its mean
        score), reward_source/<name>/latency_s (seconds, retries included) and reward_source/<name>/failures
        (failed tries plus answers it could not score, e.g. an LLM judge's unparseable verdicts)."""
        return {f"reward_source/{name}/{figure}": value for name, figures in self._sources.items()
                for figure, value in figures.items()}


class ReferenceModel(_Timed):
    """The frozen initial policy: per-token log-probs for PPO's KL term.

    Args:
        model_path: a local causal-LM checkpoint directory (the SFT policy PPO starts from).
        micro_batch_size: rows per forward pass; bounds activation memory.
        num_threads: `torch.set_num_threads` for this process (None: leave as is).
        token_budget: at most this many tokens' logits at once (`causal_lm_token_logprobs`), so memory does not
            grow with micro_batch × T × V; None forms each micro-batch's [micro_batch, T, V] logits whole.
        device: auto | cpu | cuda | cuda:N (`rlhf_ray.models.placement`; auto: CUDA when visible).
        dtype: float32 | bfloat16 | float16, the dtype the weights are loaded in (bfloat16 halves the memory on a
            GPU). Log-probs are float32 whatever the dtype (`token_logprobs` normalises in float32).
    """

    def __init__(self, model_path: str, micro_batch_size: int = 8, *, num_threads: int | None = None,
                 token_budget: int | None = DEFAULT_TOKEN_BUDGET, device: str = "auto",
                 dtype: str | torch.dtype = "float32") -> None:
        super().__init__()
        set_threads(num_threads)
        _check_batch_size("micro_batch_size", micro_batch_size)
        if token_budget is not None:
            _check_batch_size("token_budget", token_budget)
        self.micro_batch_size = micro_batch_size
        self.token_budget = token_budget
        self.device = resolve_device(device)
        self.model = load_causal_lm(model_path, dtype=torch_dtype(dtype)).to(self.device).eval().requires_grad_(False)

    def ready(self) -> bool:
        return True

    def logprobs(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """[B, T−1] float32 CPU tensor: out[b, t] = log π_ref(input_ids[b, t+1] | input_ids[b, ≤t]).

        See `causal_lm_token_logprobs` for positions and the columns to mask.
        """
        start = time.perf_counter()
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(f"input_ids and attention_mask must both be [B, T]; got {tuple(input_ids.shape)} and "
                             f"{tuple(attention_mask.shape)}")
        if input_ids.shape[1] < 2:
            raise ValueError(f"sequences need at least 2 tokens to have a log-prob; got T={input_ids.shape[1]}")
        out = []
        with torch.no_grad():
            for first in range(0, input_ids.shape[0], self.micro_batch_size):
                rows = slice(first, first + self.micro_batch_size)
                out.append(causal_lm_token_logprobs(self.model, input_ids[rows].to(self.device),
                                                    attention_mask[rows].to(self.device),
                                                    self.token_budget).float().cpu())
        result = torch.cat(out) if out else torch.zeros((0, input_ids.shape[1] - 1))
        self._record(start)
        return result
