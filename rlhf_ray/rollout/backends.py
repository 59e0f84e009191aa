"""Generation backends for rollout workers: Hugging Face `generate` (CPU or GPU) and vLLM (GPU).

Both render prompts with the checkpoint's chat template (`prompt_text`; a prompt is a text or a conversation),
stop on the tokenizer's eos, the template's end-of-turn marker and the generation config's eos ids, and
return `Sample`s in prompt order — prompt i's `num_samples` samples are rows [i·n, (i+1)·n) — with
`response_ids` ending in the stop token when the response finished. Pick one by name
from `BACKENDS`; adding a backend is adding a class with the `GenerationBackend` methods.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from transformers import GenerationConfig, PreTrainedTokenizerBase

from rlhf_ray.inputs.prompts import conversation_text
from rlhf_ray.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
from rlhf_ray.rollout.batch import Sample
from rlhf_ray.rollout.weights import state_digest
from rlhf_ray.training.encoding import Prompt, end_of_turn, prompt_text


@dataclass(frozen=True)
class GenerationParams:
    """How to sample. `temperature == 0` is greedy; `top_k == 0` and `top_p == 1` switch those filters off.

    `seed` makes sampling reproducible: the same weights, prompts and seed give the same samples.
    `None` draws from the process's random state instead.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be ≥ 1; got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be ≥ 0 (0 = greedy); got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1]; got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be ≥ 0 (0 = off); got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@runtime_checkable
class GenerationBackend(Protocol):
    """What a rollout worker needs from an inference engine."""

    def generate(self, prompts: list[Prompt], prompt_ids: list[str], num_samples: int,
                 params: GenerationParams) -> list[Sample]:
        """`num_samples` samples per prompt; prompt i's are rows [i·n, (i+1)·n)."""
        ...

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Replace the policy weights with `state` (HF parameter names, as the learner's `state_dict()`)."""
        ...

    def state_digest(self) -> str:
        """`rlhf_ray.rollout.weights.state_digest` of the weights the backend generates with."""
        ...


# ---------------------------------------------------------------------------------------------------- helpers


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, generation_eos: int | Sequence[int] | None = None) -> list[int]:
    """Token ids that end a response: the tokenizer's eos, the chat template's end-of-turn marker
    (`end_of_turn`) when it is one token, and any eos ids of the model's generation config."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    marker = tokenizer(end_of_turn(tokenizer).strip(), add_special_tokens=False)["input_ids"]
    if len(marker) == 1:
        ids.append(int(marker[0]))
    if generation_eos is not None:
        ids.extend(int(i) for i in ([generation_eos] if isinstance(generation_eos, int) else generation_eos))
    if not ids:
        raise ValueError(f"the tokenizer of {tokenizer.name_or_path!r} has no eos token, its chat template's "
                         "end-of-turn marker is not one token and the generation config names no eos: generation "
                         "would never stop before the length cap")
    return sorted(set(ids))


def render_prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> list[int]:
    """The chat-template prompt (ending with the assistant turn's opening) as token ids, as `encode_chat` does."""
    return tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]


def make_sample(tokenizer: PreTrainedTokenizerBase, prompt_id: str, prompt: Prompt, prompt_ids: list[int],
                generated: Sequence[int], stops: Sequence[int], finished: bool | None = None,
                eot: str | None = None) -> Sample:
    """A `Sample` from generated ids: cut after the first stop token (kept, so the policy learns to stop).

    `finished=None` infers it from the presence of a stop token; text drops special tokens and the template's
    end-of-turn text `eot` (read off the template when None). The sample's prompt is the conversation's
    `conversation_text`, what scorers read.
    """
    stop_set = set(stops)
    cut = next((k for k, token in enumerate(generated) if token in stop_set), None)
    response_ids = [int(t) for t in (generated if cut is None else generated[: cut + 1])]
    done = cut is not None if finished is None else finished
    eot = end_of_turn(tokenizer) if eot is None else eot
    text = tokenizer.decode(response_ids, skip_special_tokens=True)
    text = text.removesuffix(eot).removesuffix(eot.strip())
    return Sample(prompt_id=prompt_id, prompt=conversation_text(prompt), response=text, prompt_ids=list(prompt_ids),
                  response_ids=response_ids, finished=done)


def _check_request(prompts: Sequence[Prompt], prompt_ids: Sequence[str], num_samples: int) -> None:
    if len(prompts) != len(prompt_ids):
        raise ValueError(f"prompts and prompt_ids must have the same length; got {len(prompts)} and {len(prompt_ids)}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be ≥ 1; got {num_samples}")


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch for the block and restore the caller's RNG state afterwards (no-op for `seed=None`)."""
    if seed is None:
        yield
        return
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# ---------------------------------------------------------------------------------------------------- HF


class HFBackend:
    """`transformers` generate on a local checkpoint: left-padded batches, `max_batch_size` rows per call.

    `chat_template` (a `model.chat_template` spec) replaces the checkpoint's template when given.
    """

    def __init__(self, model_path: str | os.PathLike[str], device: str = "cpu",
                 dtype: torch.dtype | str | None = None, max_batch_size: int = 64,
                 chat_template: str | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be ≥ 1; got {max_batch_size}")
        self.model_path = resolve_model_path(model_path)
        self.device = torch.device(device)
        self.tokenizer = load_tokenizer(self.model_path, chat_template)
        self.model = load_causal_lm(self.model_path, dtype=dtype).to(self.device).eval()
        self.max_batch_size = max_batch_size
        self.eot = end_of_turn(self.tokenizer)
        self.stops = stop_token_ids(self.tokenizer, self.model.generation_config.eos_token_id)
        # padding is marked by the attention mask, so the pad id (eos for a tokenizer that ships none) is inert
        self.pad_token_id = int(self.tokenizer.pad_token_id)

    def generate(self, prompts: list[Prompt], prompt_ids: list[str], num_samples: int,
                 params: GenerationParams) -> list[Sample]:
        _check_request(prompts, prompt_ids, num_samples)
        rendered = [render_prompt_ids(self.tokenizer, prompt) for prompt in prompts]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        for pid, ids in zip(prompt_ids, rendered, strict=True):
            if limit is not None and len(ids) + params.max_new_tokens > limit:
                raise ValueError(f"prompt {pid!r} has {len(ids)} tokens; with max_new_tokens="
                                 f"{params.max_new_tokens} it exceeds the model's {limit} positions")
        rows = [i for i in range(len(prompts)) for _ in range(num_samples)]
        samples: list[Sample] = []
        with _seeded(params.seed, self.device):
            for start in range(0, len(rows), self.max_batch_size):
                chunk = rows[start : start + self.max_batch_size]
                generated = self._generate_ids([rendered[i] for i in chunk], params)
                samples.extend(make_sample(self.tokenizer, prompt_ids[i], prompts[i], rendered[i], new, self.stops,
                                           eot=self.eot)
                               for i, new in zip(chunk, generated, strict=True))
        return samples

    @torch.no_grad()
    def _generate_ids(self, rows: list[list[int]], params: GenerationParams) -> list[list[int]]:
        """New token ids per row (stop token and any padding after it included; `make_sample` cuts them)."""
        width = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for b, ids in enumerate(rows):  # left padding: every row's last prompt token sits in column width−1
            input_ids[b, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[b, width - len(ids) :] = 1
        sampling = {} if params.greedy else {"temperature": params.temperature, "top_p": params.top_p,
                                             "top_k": params.top_k}
        config = GenerationConfig(max_new_tokens=params.max_new_tokens, do_sample=not params.greedy,
                                  eos_token_id=self.stops, pad_token_id=self.pad_token_id, **sampling)
        output = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                     generation_config=config)
        return output[:, width:].tolist()

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        with torch.no_grad():
            self.model.load_state_dict(dict(state), strict=True)

    def state_digest(self) -> str:
        return state_digest(self.model.state_dict())


# ---------------------------------------------------------------------------------------------------- vLLM

VLLM_INSTALL_HINT = "the vLLM rollout backend needs vLLM: `pip install rlhf-ray[vllm]` on a GPU machine"


class VLLMWorkerExtension:
    """Methods mixed into every vLLM GPU worker (`worker_extension_cls`), called through `LLM.collective_rpc`.

    Based on vLLM's RLHF examples (`examples/offline_inference/rlhf.py`, `rlhf_utils.py`, `WorkerExtension`):
    the engine is built with `worker_extension_cls="<module>.<Class>"`, the trainer side calls
    `llm.collective_rpc("<method>", args=(...))`, and the worker applies weights with
    `self.model_runner.model.load_weights(weights=[(name, tensor), ...])`, which maps HF names onto vLLM's
    fused layers (qkv_proj, gate_up_proj) and skips a tied lm_head. The examples move the tensors with an NCCL
    broadcast; here the state dict arrives as the RPC argument (CPU tensors from the Ray object store), which
    is right for small and mid-size policies. For large models switch this method to the examples' NCCL path.
    """

    def rlhf_ray_load_weights(self, state: Mapping[str, Tensor]) -> int:
        model = self.model_runner.model  # type: ignore[attr-defined]
        device = next(model.parameters()).device
        model.load_weights(weights=[(name, tensor.to(device)) for name, tensor in state.items()])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return len(state)


class VLLMBackend:
    """vLLM offline engine (`vllm.LLM`) on the worker's GPU; weights updated in place through the worker extension.

    `state_digest` is the digest of the HF-named state dict last applied (of the checkpoint until then): vLLM
    fuses parameters under its own names, so its internal tensors cannot be hashed comparably.
    """

    def __init__(self, model_path: str | os.PathLike[str], dtype: str = "auto", gpu_memory_utilization: float = 0.5,
                 enforce_eager: bool = True, enable_sleep_mode: bool = False, seed: int = 0,
                 chat_template: str | None = None, **engine_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError as error:
            raise ImportError(VLLM_INSTALL_HINT) from error
        self.model_path = resolve_model_path(model_path)
        # prompts reach the engine as token ids rendered here, so vLLM's own chat handling is never used
        self.tokenizer = load_tokenizer(self.model_path, chat_template)
        # `worker_extension_cls` takes the qualified name of a class importable in the worker processes.
        self.llm = vllm.LLM(
            model=str(self.model_path), tokenizer=str(self.model_path), dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager,
            enable_sleep_mode=enable_sleep_mode, seed=seed,
            worker_extension_cls=f"{VLLMWorkerExtension.__module__}.{VLLMWorkerExtension.__qualname__}",
            **engine_kwargs,
        )
        self.eot = end_of_turn(self.tokenizer)
        self.stops = stop_token_ids(self.tokenizer, _checkpoint_eos(self.model_path))
        self._digest: str | None = None

    def generate(self, prompts: list[Prompt], prompt_ids: list[str], num_samples: int,
                 params: GenerationParams) -> list[Sample]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        _check_request(prompts, prompt_ids, num_samples)
        rendered = [render_prompt_ids(self.tokenizer, prompt) for prompt in prompts]
        # One SamplingParams per prompt so that a per-request seed makes each prompt's samples reproducible
        # whatever else is in the batch; top_k=-1 is vLLM's "off" (0 is rejected by older releases).
        sampling = [
            SamplingParams(
                n=num_samples, temperature=params.temperature, top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else -1, max_tokens=params.max_new_tokens,
                seed=None if params.seed is None else params.seed + i, stop_token_ids=self.stops,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in rendered], sampling,
                                    use_tqdm=False)
        samples: list[Sample] = []
        for i, output in enumerate(outputs):
            for completion in sorted(output.outputs, key=lambda c: c.index):
                finished = completion.finish_reason == "stop"
                generated = list(completion.token_ids)
                if finished and (not generated or generated[-1] not in self.stops):
                    # stopped on a stop token that vLLM did not keep in token_ids: put it back
                    reason = completion.stop_reason
                    generated.append(reason if isinstance(reason, int) else self.stops[0])
                samples.append(make_sample(self.tokenizer, prompt_ids[i], prompts[i], rendered[i], generated,
                                           self.stops, finished=finished, eot=self.eot))
        return samples

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self.llm.collective_rpc("rlhf_ray_load_weights", args=(dict(state),))
        # cached KV blocks were computed with the old weights
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()
        self._digest = state_digest(state)

    def state_digest(self) -> str:
        if self._digest is None:
            self._digest = state_digest(load_causal_lm(self.model_path).state_dict())
        return self._digest


def _checkpoint_eos(path: os.PathLike[str]) -> int | list[int] | None:
    """The eos id(s) of the checkpoint's generation config (None when it has no generation_config.json)."""
    try:
        return GenerationConfig.from_pretrained(path, local_files_only=True).eos_token_id
    except OSError:
        return None


BACKENDS: Mapping[str, type[GenerationBackend]] = {"hf": HFBackend, "vllm": VLLMBackend}


def make_backend(name: str, model_path: str | os.PathLike[str], **kwargs: Any) -> GenerationBackend:
    """The backend registered as `name`; an unknown name fails naming the choices."""
    if name not in BACKENDS:
        raise ValueError(f"unknown generation backend {name!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[name](model_path, **kwargs)
