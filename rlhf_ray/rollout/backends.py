"""Generation backends for rollout workers: Hugging Face `generate` (CPU or GPU) and vLLM (GPU).

Both render prompts with the checkpoint's chat template (`prompt_text`; a prompt is a text or a conversation),
stop on the tokenizer's eos, the template's end-of-turn marker and the generation config's eos ids, and
return `Sample`s in prompt order — prompt i's `num_samples` samples are rows [i·n, (i+1)·n) — with
`response_ids` ending in the stop token when the response finished. Pick one by name
from `BACKENDS`; adding a backend is adding a class with the `GenerationBackend` methods.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from transformers import (
    AutoConfig,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer

from rlhf_ray.inputs.prompts import conversation_text
from rlhf_ray.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
from rlhf_ray.models.placement import resolve_device, torch_dtype
from rlhf_ray.rollout.batch import Sample
from rlhf_ray.rollout.nccl_sync import (
    SyncPlan,
    changed_tensors,
    checksums_digest,
    greedy_agreement,
    greedy_continuation,
    open_communicator,
    receive_buckets,
    tensor_checksums,
)
from rlhf_ray.rollout.weights import engine_weights, state_digest, tied_embeddings
from rlhf_ray.training.encoding import Prompt, end_of_turn, prompt_text


@dataclass(frozen=True)
class GenerationParams:
    """How to sample. `temperature == 0` is greedy; `top_k == 0` and `top_p == 1` switch those filters off.

    `seed` makes sampling reproducible: the same weights, prompts and seed give the same samples.
    `None` draws from the process's random state instead. A response also ends at the first of the `stop`
    strings (cut off, as OpenAI's `stop`); `logprobs` asks for `Sample.response_logprobs` (`sampled_logprobs`).
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be ≥ 1; got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be ≥ 0 (0 = greedy); got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1]; got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be ≥ 0 (0 = off); got {self.top_k}")
        if any(not text for text in self.stop):
            raise ValueError(f"stop strings must be non-empty; got {list(self.stop)}")

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


def sampled_logprobs(logits: Tensor, tokens: Tensor, temperature: float) -> Tensor:
    """Log-probability of each sampled token under the distribution it was sampled from, before top-k/top-p:

        out[b] = log softmax(logits[b] / T)[tokens[b]] = logits[b, y]/T − log Σ_v exp(logits[b, v]/T),   y = tokens[b]

    with T = `temperature`, and T = 1 for greedy decoding (T = 0): the policy's own distribution, as PPO's
    behaviour log-probs and OpenAI's `logprobs` read it. `logits` [B, V] raw scores of one step, `tokens` [B].
    """
    scale = temperature if temperature > 0 else 1.0
    logp = torch.log_softmax(logits.float() / scale, dim=-1)
    return logp.gather(-1, tokens.long().view(-1, 1).to(logp.device)).squeeze(-1)


def visible_text(tokenizer: PreTrainedTokenizerBase, response_ids: Sequence[int], eot: str,
                 stop_strings: Sequence[str] = ()) -> tuple[str, bool]:
    """The text a user sees of response tokens: special tokens and the template's end-of-turn text `eot`
    dropped, cut before the first `stop_strings` hit; and whether a stop string was hit."""
    text = tokenizer.decode(list(response_ids), skip_special_tokens=True)
    text = text.removesuffix(eot).removesuffix(eot.strip())
    hits = [at for at in (text.find(stop) for stop in stop_strings) if at >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def make_sample(tokenizer: PreTrainedTokenizerBase, prompt_id: str, prompt: Prompt, prompt_ids: list[int],
                generated: Sequence[int], stops: Sequence[int], finished: bool | None = None,
                eot: str | None = None, logprobs: Sequence[float] | None = None,
                stop_strings: Sequence[str] = ()) -> Sample:
    """A `Sample` from generated ids: cut after the first stop token (kept, so the policy learns to stop), or
    after the token that completes one of `stop_strings` (the text is cut before the string, as OpenAI's `stop`).

    `finished=None` infers it from the presence of a stop token or string; text drops special tokens and the
    template's end-of-turn text `eot` (read off the template when None). `logprobs` are the generated tokens'
    (cut with them). The sample's prompt is the conversation's `conversation_text`, what scorers read.
    """
    stop_set = set(stops)
    cut = next((k for k, token in enumerate(generated) if token in stop_set), None)
    response_ids = [int(t) for t in (generated if cut is None else generated[: cut + 1])]
    eot = end_of_turn(tokenizer) if eot is None else eot
    text, hit = visible_text(tokenizer, response_ids, eot, stop_strings)
    if hit and cut is None:  # tokens after the one that completed the stop string are padding: drop them
        cut = next(k for k in range(len(response_ids))
                   if visible_text(tokenizer, response_ids[: k + 1], eot, stop_strings)[1])
        response_ids = response_ids[: cut + 1]
    done = (cut is not None or hit) if finished is None else finished
    kept = None if logprobs is None else tuple(float(v) for v in logprobs[: len(response_ids)])
    return Sample(prompt_id=prompt_id, prompt=conversation_text(prompt), response=text, prompt_ids=list(prompt_ids),
                  response_ids=response_ids, finished=done, response_logprobs=kept)


@dataclass(frozen=True)
class Delta:
    """What one sample (`index` of the request's samples) added since its previous delta, as it is generated:
    new visible `text` (may be empty, e.g. half a UTF-8 character held back), the new `token_ids` and their
    log-probs (when asked). A sample's last delta carries the whole `Sample`."""

    index: int
    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...] | None = None
    sample: Sample | None = None


class _StepListener(BaseStreamer):
    """Receives each decoding step's new tokens from `generate` (`put`; the first call is the prompt) and pairs
    them with their log-probs (`_LogprobRecorder`); forwards (tokens, log-probs) to `sink` for streaming."""

    def __init__(self, recorder: _LogprobRecorder | None, sink: queue.Queue[Any] | None) -> None:
        self.recorder, self.sink, self.prompt_seen = recorder, sink, False
        self.logprobs: list[Tensor] = []

    def put(self, value: Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        tokens = value.view(-1)
        logprobs = self.recorder.take(tokens) if self.recorder is not None else None
        if logprobs is not None:
            self.logprobs.append(logprobs)
        if self.sink is not None:
            self.sink.put((tokens.tolist(), None if logprobs is None else logprobs.tolist()))

    def end(self) -> None:
        pass


class _LogprobRecorder(LogitsProcessor):
    """First of the logits processors, so it sees the model's raw logits; `take` scores the sampled tokens."""

    def __init__(self, temperature: float) -> None:
        self.temperature, self.logits = temperature, None

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        self.logits = scores.detach().clone()
        return scores

    def take(self, tokens: Tensor) -> Tensor:
        return sampled_logprobs(self.logits, tokens, self.temperature).cpu()


class _Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Tensor, scores: Any, **kwargs: Any) -> Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _StopStrings(StoppingCriteria):
    """Ends a row once its generated text (the prompt excluded, unlike `generate`'s `stop_strings`, which also
    match across the prompt's tail) contains one of `stops`."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, width: int, stops: Sequence[str]) -> None:
        self.tokenizer, self.width, self.stops = tokenizer, width, stops

    def __call__(self, input_ids: Tensor, scores: Any, **kwargs: Any) -> Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.width :], skip_special_tokens=True)
        return torch.tensor([any(stop in text for stop in self.stops) for text in texts], device=input_ids.device)


class _StreamText:
    """One sample's text as it grows: each new token gives the visible text not shown yet, holding back a
    trailing half character and any tail that may still become a stop string."""

    def __init__(self, backend: HFBackend, index: int, stop_strings: Sequence[str]) -> None:
        self.backend, self.index, self.stop_strings = backend, index, stop_strings
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.shown = 0
        self.done = False

    def add(self, token: int, logprob: float | None) -> Delta | None:
        if self.done:  # padding after this row finished
            return None
        self.ids.append(token)
        if logprob is not None:
            self.logprobs.append(logprob)
        text, hit = visible_text(self.backend.tokenizer, self.ids, self.backend.eot, self.stop_strings)
        self.done = hit or token in self.backend.stops
        safe = len(text)
        if not self.done:
            safe -= len(text) - len(text.rstrip("\ufffd"))
            for stop in self.stop_strings:
                safe = min(safe, next((len(text) - k for k in range(len(stop) - 1, 0, -1)
                                       if text.endswith(stop[:k])), safe))
        piece, self.shown = text[self.shown : max(safe, self.shown)], max(safe, self.shown)
        return Delta(self.index, piece, (token,), None if logprob is None else (logprob,))

    def finish(self, sample: Sample) -> Delta:
        return Delta(self.index, sample.response[self.shown :], (), None if sample.response_logprobs is None
                     else (), sample)


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

    `chat_template` (a `model.chat_template` spec) replaces the checkpoint's template when given. The model is
    loaded in `dtype` (float32 | bfloat16 | float16) and moved once to `device` (auto | cpu | cuda | cuda:N, see
    `rlhf_ray.models.placement`); weights loaded later are cast to that dtype and device.
    """

    def __init__(self, model_path: str | os.PathLike[str], device: str = "auto",
                 dtype: torch.dtype | str = "float32", max_batch_size: int = 64,
                 chat_template: str | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be ≥ 1; got {max_batch_size}")
        self.model_path = resolve_model_path(model_path)
        self.device = resolve_device(device)
        self.tokenizer = load_tokenizer(self.model_path, chat_template)
        self.model = load_causal_lm(self.model_path, dtype=torch_dtype(dtype)).to(self.device).eval()
        self.max_batch_size = max_batch_size
        self.eot = end_of_turn(self.tokenizer)
        self.stops = stop_token_ids(self.tokenizer, self.model.generation_config.eos_token_id)
        # padding is marked by the attention mask, so the pad id (eos for a tokenizer that ships none) is inert
        self.pad_token_id = int(self.tokenizer.pad_token_id)

    def _render(self, prompts: Sequence[Prompt], prompt_ids: Sequence[str],
                params: GenerationParams) -> list[list[int]]:
        rendered = [render_prompt_ids(self.tokenizer, prompt) for prompt in prompts]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        for pid, ids in zip(prompt_ids, rendered, strict=True):
            if limit is not None and len(ids) + params.max_new_tokens > limit:
                raise ValueError(f"prompt {pid!r} has {len(ids)} tokens; with max_new_tokens="
                                 f"{params.max_new_tokens} it exceeds the model's {limit} positions")
        return rendered

    def generate(self, prompts: list[Prompt], prompt_ids: list[str], num_samples: int,
                 params: GenerationParams) -> list[Sample]:
        _check_request(prompts, prompt_ids, num_samples)
        rendered = self._render(prompts, prompt_ids, params)
        rows = [i for i in range(len(prompts)) for _ in range(num_samples)]
        samples: list[Sample] = []
        with _seeded(params.seed, self.device):
            for start in range(0, len(rows), self.max_batch_size):
                chunk = rows[start : start + self.max_batch_size]
                generated, logprobs = self._generate_ids([rendered[i] for i in chunk], params)
                samples.extend(make_sample(self.tokenizer, prompt_ids[i], prompts[i], rendered[i], new, self.stops,
                                           eot=self.eot, logprobs=None if logprobs is None else logprobs[b],
                                           stop_strings=params.stop)
                               for b, (i, new) in enumerate(zip(chunk, generated, strict=True)))
        return samples

    def stream(self, prompt: Prompt, prompt_id: str, num_samples: int, params: GenerationParams) -> Iterator[Delta]:
        """`num_samples` samples of one prompt as they are generated: `generate` runs in a thread and hands over
        each step's tokens; one `Delta` per sample and step, then each sample's last delta with its `Sample`.
        Closing the iterator early stops generation at the next step."""
        _check_request([prompt], [prompt_id], num_samples)
        rendered = self._render([prompt], [prompt_id], params)[0]
        steps: queue.Queue[Any] = queue.Queue()
        cancel = threading.Event()
        done = object()
        result: list[tuple[list[list[int]], list[list[float]] | None]] = []

        def work() -> None:
            try:
                with _seeded(params.seed, self.device):
                    result.append(self._generate_ids([rendered] * num_samples, params, steps, cancel))
            except BaseException as error:  # re-raised in the consumer
                steps.put(error)
            finally:
                steps.put(done)

        texts = [_StreamText(self, b, params.stop) for b in range(num_samples)]
        thread = threading.Thread(target=work, name="hf-stream", daemon=True)
        thread.start()
        try:
            while (item := steps.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                tokens, logprobs = item
                for b, token in enumerate(tokens):
                    delta = texts[b].add(int(token), None if logprobs is None else float(logprobs[b]))
                    if delta is not None and (delta.text or params.logprobs):
                        yield delta
            generated, final_logprobs = result[0]
            for b, new in enumerate(generated):
                yield texts[b].finish(make_sample(self.tokenizer, prompt_id, prompt, rendered, new, self.stops,
                                                  eot=self.eot, stop_strings=params.stop,
                                                  logprobs=None if final_logprobs is None else final_logprobs[b]))
        finally:
            cancel.set()
            thread.join()

    @torch.no_grad()
    def _generate_ids(self, rows: list[list[int]], params: GenerationParams, steps: queue.Queue[Any] | None = None,
                      cancel: threading.Event | None = None) -> tuple[list[list[int]], list[list[float]] | None]:
        """New token ids per row (stop token and any padding after it included; `make_sample` cuts them), and
        their log-probs when `params.logprobs`. Each step's tokens also go to `steps` (streaming); a set
        `cancel` ends generation at the next step.

        The warpers are built here, after a recorder of the raw logits, in the order `generate` builds them
        (temperature, top-k, top-p), so the log-probs are of the untruncated distribution at the temperature.
        """
        width = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for b, ids in enumerate(rows):  # left padding: every row's last prompt token sits in column width−1
            input_ids[b, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[b, width - len(ids) :] = 1
        recorder = _LogprobRecorder(params.temperature) if params.logprobs else None
        processors = LogitsProcessorList([recorder] if recorder else [])
        if not params.greedy:
            if params.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k:
                processors.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                processors.append(TopPLogitsWarper(params.top_p))
        config = GenerationConfig(max_new_tokens=params.max_new_tokens, do_sample=not params.greedy,
                                  eos_token_id=self.stops, pad_token_id=self.pad_token_id,
                                  **({} if params.greedy else {"temperature": 1.0, "top_p": 1.0, "top_k": 0}))
        listener = _StepListener(recorder, steps) if recorder or steps is not None else None
        stopping = StoppingCriteriaList([_Cancelled(cancel)] if cancel else [])
        if params.stop:
            stopping.append(_StopStrings(self.tokenizer, width, params.stop))
        output = self.model.generate(
            input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), generation_config=config,
            logits_processor=processors, streamer=listener, stopping_criteria=stopping)
        generated = output[:, width:].tolist()
        if recorder is None:
            return generated, None
        logprobs = torch.stack(listener.logprobs, dim=1).tolist()  # type: ignore[union-attr]
        return generated, logprobs

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        with torch.no_grad():
            self.model.load_state_dict(dict(state), strict=True)

    def state_digest(self) -> str:
        return state_digest(self.model.state_dict())


# ---------------------------------------------------------------------------------------------------- vLLM

VLLM_INSTALL_HINT = "the vLLM rollout backend needs vLLM: `pip install rlhf-ray[vllm]` on a GPU machine"


class VLLMWorkerExtension:
    """Methods mixed into every vLLM GPU worker (`worker_extension_cls`), called through `LLM.collective_rpc`.

    Written against vLLM 0.34 (the `vllm` extra pins it), after its RLHF examples
    (`examples/offline_inference/rlhf.py`, `rlhf_utils.py`): the engine is built with
    `worker_extension_cls="<module>.<Class>"`, the trainer side calls `llm.collective_rpc("<method>", args=...)`,
    and a worker applies weights with `self.model_runner.model.load_weights(weights=[(name, tensor), ...])`,
    which maps HF names onto vLLM's fused layers (qkv_proj, gate_up_proj) and skips a tied lm_head.

    Two ways in: the whole HF-named state dict as the RPC argument (`rollout.weight_sync: object_store`), or
    a broadcast from learner rank 0 over a stateless NCCL group in byte-bounded buckets (`nccl`,
    `rlhf_ray.rollout.nccl_sync`). `rlhf_ray_checksums` hashes the worker's own (fused, sharded) tensors, so
    the weight-agreement check reads what the engine holds, not what was sent.
    """

    def _rlhf_ray_model(self) -> torch.nn.Module:
        return self.model_runner.model  # type: ignore[attr-defined]

    def rlhf_ray_load_weights(self, state: Mapping[str, Tensor]) -> int:
        model = self._rlhf_ray_model()
        device = next(model.parameters()).device
        model.load_weights(weights=[(name, tensor.to(device)) for name, tensor in state.items()])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return len(state)

    def rlhf_ray_world_rank(self) -> int:
        """This worker's rank in its engine (tensor/pipeline parallel); the engine has as many as answer."""
        from vllm.distributed.parallel_state import get_world_group

        return get_world_group().rank

    def rlhf_ray_init_weight_sync(self, host: str, port: int, rank_offset: int, world_size: int) -> int:
        """Join the sync group as rank `rank_offset` + this worker's rank; the learner (rank 0) joins at the
        same time. Returns the rank taken."""
        rank = rank_offset + self.rlhf_ray_world_rank()
        self.rlhf_ray_sync = open_communicator("nccl", host, port, rank, world_size,
                                               self.device)  # type: ignore[attr-defined]
        return rank

    def rlhf_ray_receive_weights(self, plan: SyncPlan) -> int:
        """Receive the buckets the learner broadcasts (while this runs) and load each as it lands."""
        model = self._rlhf_ray_model()
        loaded = 0
        for pairs in receive_buckets(self.rlhf_ray_sync, plan):
            model.load_weights(weights=pairs)
            loaded += len(pairs)
        torch.cuda.synchronize(self.rlhf_ray_sync.device)
        return loaded

    def rlhf_ray_checksums(self) -> dict[str, str]:
        """`tensor_checksums` of this worker's parameters under vLLM's names (computed on its GPU)."""
        return tensor_checksums(self._rlhf_ray_model().named_parameters())


class VLLMBackend:
    """vLLM offline engine (`vllm.LLM`) on the worker's GPU; weights updated in place through the worker extension.

    `state_digest` is `checksums_digest` of the engine's own tensors (every worker's, as `rlhf_ray_checksums`
    reads them): two engines of one layout have equal digests exactly when they hold the same weights.
    `last_changed` names the engine tensors the last update changed, per worker.
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
        self.tie_word_embeddings = tied_embeddings(AutoConfig.from_pretrained(self.model_path, local_files_only=True))
        self._checksums: list[dict[str, str]] | None = None
        self.last_changed: list[list[str]] = []

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
                stop=list(params.stop) or None, logprobs=0 if params.logprobs else None,
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
                reason = completion.stop_reason
                if finished and not isinstance(reason, str) and (not generated or generated[-1] not in self.stops):
                    # stopped on a stop token that vLLM did not keep in token_ids: put it back
                    generated.append(reason if isinstance(reason, int) else self.stops[0])
                # the sampled tokens' log-probs (logprobs=0); vLLM's `logprobs_mode` decides whether at the sampling
                # temperature (processed_logprobs) or T = 1 (its default, raw_logprobs), unlike `sampled_logprobs`
                logprobs = None if completion.logprobs is None else [
                    step[token].logprob for step, token in zip(completion.logprobs, completion.token_ids, strict=False)]
                samples.append(make_sample(self.tokenizer, prompt_ids[i], prompts[i], rendered[i], generated,
                                           self.stops, finished=finished, eot=self.eot, logprobs=logprobs,
                                           stop_strings=params.stop))
        return samples

    def engine_checksums(self) -> list[dict[str, str]]:
        """Per worker (in rank order), `tensor_checksums` of its own tensors under vLLM's names."""
        return list(self.llm.collective_rpc("rlhf_ray_checksums"))

    def engine_world_size(self) -> int:
        """Workers of this engine (tensor × pipeline parallel): each is a member of the NCCL sync group."""
        return len(self.llm.collective_rpc("rlhf_ray_world_rank"))

    def _updated(self, apply: Callable[[], Any]) -> None:
        """Run an update, then refresh the checksums and record what it changed."""
        before = self._checksums if self._checksums is not None else self.engine_checksums()
        apply()
        # cached KV blocks were computed with the old weights
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()
        self._checksums = self.engine_checksums()
        self.last_changed = [changed_tensors(old, new) for old, new in zip(before, self._checksums, strict=True)]

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        weights = engine_weights(state, self.tie_word_embeddings)
        self._updated(lambda: self.llm.collective_rpc("rlhf_ray_load_weights", args=(weights,)))

    def init_weight_sync(self, host: str, port: int, rank_offset: int, world_size: int) -> list[int]:
        """Every worker joins the learner's sync group (blocks until the learner joins too); their ranks."""
        return list(self.llm.collective_rpc("rlhf_ray_init_weight_sync",
                                            args=(host, port, rank_offset, world_size)))

    def receive_weights(self, plan: SyncPlan) -> None:
        """Take one broadcast sync (the learner sends `plan`'s buckets meanwhile)."""
        self._updated(lambda: self.llm.collective_rpc("rlhf_ray_receive_weights", args=(plan,)))

    def state_digest(self) -> str:
        if self._checksums is None:
            self._checksums = self.engine_checksums()
        return checksums_digest(self._checksums)


def verify_engine_update(backend: Any, apply: Callable[[], Any], reference_model: torch.nn.Module,
                         prompt: Prompt, max_new_tokens: int = 8) -> dict[str, Any]:
    """Prove one weight update reached an engine: run `apply` (the update), then check that it changed the
    engine's own checksums and that the engine's greedy answer to `prompt` is the learner's own.

    `backend` has `engine_checksums()` (per worker), `generate` and `stops` (a `VLLMBackend`); `reference_model`
    is the learner's model holding the weights just sent. Raises naming what failed; returns the figures.
    The GPU check and a vLLM test call this; it needs a running engine.
    """
    before = backend.engine_checksums()
    apply()
    after = backend.engine_checksums()
    changed = [changed_tensors(old, new) for old, new in zip(before, after, strict=True)]
    if not any(changed):
        raise RuntimeError("the weight update changed none of the engine's tensors")
    greedy = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    sample = backend.generate([prompt], ["verify"], 1, greedy)[0]
    generated = sample.response_ids
    reference = greedy_continuation(reference_model, sample.prompt_ids, len(generated), backend.stops)
    agreement = greedy_agreement(generated, reference)
    if not agreement["match"]:
        raise RuntimeError(f"engine and learner greedy answers differ at token {agreement['first_difference']}: "
                           f"engine {generated}, learner {reference}")
    return {"changed_tensors": [len(names) for names in changed], **agreement}


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
