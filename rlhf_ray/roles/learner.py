"""PPO's trained roles: the policy learner and the critic, each a group of N ranks.

A group's ranks form their own torch.distributed process group (gloo on CPU, NCCL on GPU), created by the
job through `address()` on rank 0 and `init_group(...)` on every rank. Each rank gets its shard of the
iteration's experience and runs the same number of minibatch steps, so DDP (or DeepSpeed ZeRO) all-reduces
the gradients and the replicas stay identical. Rank 0 publishes the policy weights for the rollout workers.

These are plain classes: with `world_size=1` and no DeepSpeed, `init_group` builds no process group and a
learner trains in the calling process, Ray or not. `actors.learner` makes them Ray actors, adding the node's
address for the rendezvous and an object-store `publish`.
"""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlhf_ray.algos.kl import kl_penalty
from rlhf_ray.algos.logprobs import masked_mean
from rlhf_ray.algos.policy_loss import POLICY_LOSSES, decoupled_ppo_loss, value_loss
from rlhf_ray.models import LoraSection, load_causal_lm, load_tokenizer, save_tokenizer
from rlhf_ray.models.heads import DEFAULT_TOKEN_BUDGET, causal_lm_token_logprobs_entropy
from rlhf_ray.models.lora import add_lora, merged_state_dict
from rlhf_ray.models.placement import autocast, process_group_backend, resolve_device, to_device
from rlhf_ray.roles.engines import (
    DeepSpeedEngine,
    TorchEngine,
    UpdateEngine,
    full_parameters,
    gathered_state_dict,
    is_partitioned,
)
from rlhf_ray.roles.scoring import causal_lm_token_logprobs, position_ids_from_mask, set_threads
from rlhf_ray.rollout.batch import response_token_view
from rlhf_ray.rollout.weights import StateDict, cpu_state_dict
from rlhf_ray.training.value_model import ValueModel

SEQUENCE_KEYS = ("input_ids", "attention_mask", "response_mask")
LOOPBACK = "127.0.0.1"  # a group without a cluster runtime lives on one host


def free_port() -> int:
    """A TCP port free on this host now, for rank 0's rendezvous (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def trim(minibatch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop columns that are padding in every row of the minibatch: sequences to the longest real row, per-token
    response tensors ([B, L], left-aligned) to the longest response."""
    width = int(minibatch["attention_mask"].sum(dim=1).max())
    longest = int(minibatch["response_mask"].sum(dim=1).max())
    return {key: value[:, :width] if key in SEQUENCE_KEYS else value[:, :longest] if value.ndim == 2 else value
            for key, value in minibatch.items()}


def length_buckets(lengths: Tensor, num_minibatches: int, generator: torch.Generator) -> list[Tensor]:
    """Row indices of `num_minibatches` minibatches of similar real length, so `trim` leaves little padding:

        π      = a random permutation of the rows              (which of equal-length rows go together)
        order  = π stably sorted by lengths[π]                  (rows by length, ties in π's order)
        chunks = `order` cut into num_minibatches consecutive parts (sizes differ by at most 1)
        return   the chunks in a random order                   (no fixed short-to-long schedule)

    Every row is in exactly one minibatch; the result is a function of `lengths` and the generator's state."""
    rows = lengths.shape[0]
    shuffled = torch.randperm(rows, generator=generator)
    order = shuffled[torch.argsort(lengths[shuffled], stable=True)]
    chunks = torch.tensor_split(order, num_minibatches)
    return [chunks[i] for i in torch.randperm(num_minibatches, generator=generator).tolist()]


class GroupMember:
    """A model trained as one rank of a data-parallel group; subclasses define the model and the loss.

    `settings["device"]` and `settings["dtype"]` place it (`rlhf_ray.models.placement`): the subclass moves its
    fp32 model to `self.device` once (`_place`); every minibatch and every scoring input is moved there, forward
    passes run under autocast in `dtype`, and what goes back to the caller is on the CPU."""

    model: torch.nn.Module

    def __init__(self, world_size: int, settings: dict[str, Any], num_threads: int | None) -> None:
        set_threads(num_threads)
        self.rank, self.world_size, self.settings = 0, world_size, settings
        self.steps_this_update = 0  # the optimizer step `train` is at (minibatches over all epochs, from 0)
        self.device = resolve_device(settings.get("device", "auto"))
        self.dtype = settings.get("dtype", "float32")
        self.engine: UpdateEngine | None = None
        self.updates = 0

    def _place(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # NCCL and DeepSpeed use the current device of the process
        return model.to(self.device)

    def address(self) -> tuple[str, int]:
        """Where rank 0 listens for the group's rendezvous: loopback and a free port, since without a cluster
        runtime the whole group is on this host (the Ray actor answers with its node's IP instead)."""
        return LOOPBACK, free_port()

    def init_group(self, host: str, port: int, rank: int) -> bool:
        """Join the process group as `rank` and build the update engine (DDP + AdamW, or DeepSpeed ZeRO)."""
        self.rank = rank
        torch.manual_seed(self.settings["seed"] + rank)
        deepspeed = self.settings.get("deepspeed")
        if self.world_size > 1 or deepspeed:
            backend = process_group_backend(self.device)
            os.environ.update(MASTER_ADDR=host, MASTER_PORT=str(port), RANK=str(self.rank),
                              WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
            torch.distributed.init_process_group(backend, init_method=f"tcp://{host}:{port}", rank=self.rank,
                                                 world_size=self.world_size)
        if deepspeed:
            self.engine = DeepSpeedEngine(self.model, self.settings)
        else:
            wrap = None
            if self.world_size > 1:
                cuda = self.device.type == "cuda"  # DDP on a CUDA module is told its one device; on CPU none
                wrap = partial(torch.nn.parallel.DistributedDataParallel,
                               device_ids=[self.device.index] if cuda else None)
            self.engine = TorchEngine(self.model, self.settings, wrap=wrap)
        return True

    def minibatch_loss(self, minibatch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def train(self, experience: dict[str, Tensor], update: int | None = None) -> dict[str, float]:
        """`epochs` passes over this rank's shard, each in `num_minibatches` minibatches of rows of similar length
        (`length_buckets`: trimmed, they carry little padding) in a shuffled order; returns the mean of every figure
        over the steps. The shuffle is a function of (seed, `update`): the caller's update index (PPO's iteration),
        so a group restarted from a checkpoint shuffles as an uninterrupted one would; None counts this member's own
        updates."""
        if self.engine is None:
            raise RuntimeError("init_group must run before train")
        rows = experience["input_ids"].shape[0]
        chunks = self.settings["num_minibatches"]
        if rows < chunks:
            raise ValueError(f"rank {self.rank} got {rows} rows for num_minibatches={chunks}; every rank needs at "
                             f"least one row per minibatch (raise prompts_per_iteration or lower num_minibatches)")
        if update is not None:
            self.updates = update
        generator = torch.Generator().manual_seed(self.settings["seed"] * 1000 + self.updates)
        lengths = experience["attention_mask"].sum(dim=1)
        plan = [length_buckets(lengths, chunks, generator) for _ in range(self.settings["epochs"])]
        experience = self.before_update(experience, plan)
        figures: dict[str, list[float]] = defaultdict(list)
        self.model.train()
        for self.steps_this_update, chunk in enumerate(chunk for epoch in plan for chunk in epoch):
            with autocast(self.device, self.dtype):
                loss, extras = self.minibatch_loss(to_device(trim({k: v[chunk] for k, v in experience.items()}),
                                                             self.device))
            self.engine.step(loss)
            for name, value in {"loss": loss.item(), **extras}.items():
                figures[name].append(value)
        self.updates += 1
        return {name: float(np.mean(values)) for name, values in figures.items()}

    def before_update(self, experience: dict[str, Tensor], plan: list[list[Tensor]]) -> dict[str, Tensor]:
        """The experience the update's steps read, given their minibatches (`plan`: per epoch, the row indices of
        each step, in order); as given unless a subclass adds what must be computed before the first step."""
        return experience

    def save(self, directory: str) -> None:
        """Rank 0 writes the model directory (under ZeRO-3 every rank takes part in gathering the weights it
        writes); every rank writes its optimizer state (ZeRO shards)."""
        os.makedirs(directory, exist_ok=True)
        if self.rank == 0 or is_partitioned(self.model):
            self.save_model(directory)
        self.engine.save(directory, self.rank)

    def load_optimizer(self, directory: str) -> None:
        self.engine.load(directory)

    def save_model(self, directory: str) -> None:
        """Rank 0 writes the model's own `save_pretrained` directory. Under ZeRO-3 every rank must call it: the
        whole model is gathered on every rank while rank 0 writes."""
        with full_parameters(self.model):
            if self.rank == 0:
                self.model.save_pretrained(directory)


class PolicyLearner(GroupMember):
    """The policy: PPO clipped loss − entropy bonus (+ an in-loss KL for GRPO) on the rollout experience.

    With `settings["lora"]` (a `LoraSection` as a dict) only LoRA adapters train; what it publishes and saves is
    plain weights with them merged. A resumed LoRA learner starts fresh adapters (and optimizer) on the saved
    merged weights."""

    def __init__(self, model_path: str, world_size: int, settings: dict[str, Any],
                 num_threads: int | None = None) -> None:
        super().__init__(world_size, settings, num_threads)
        self.model = load_causal_lm(model_path)
        self.tokenizer = load_tokenizer(model_path)
        self.lora = settings.get("lora")
        if self.lora:
            torch.manual_seed(settings["seed"])  # the same adapter initialisation on every rank and every run
            self.model = add_lora(self.model, LoraSection(**self.lora))
        self.model = self._place(self.model)
        # tokens whose logits exist at once in `logprobs` and the loss (None: all); hand-built settings may omit it
        self.token_budget: int | None = settings.get("logprob_token_budget", DEFAULT_TOKEN_BUDGET)
        self.proximal_in_update = False

    def train(self, experience: dict[str, Tensor], update: int | None = None,
              kl_loss_coef: float | None = None, proximal_in_update: bool = False) -> dict[str, float]:
        """As `GroupMember.train`; `kl_loss_coef` is β of the in-loss KL for this update (GRPO: the controller's
        current coefficient, which an adaptive controller moves every iteration); None keeps the setting.

        `proximal_in_update`: the experience's `old_logprobs` are not given (samples of older policies, trained
        with the decoupled loss against `behaviour_logprobs`): the learner computes the proximal log-probs, its own
        before this update, itself. The first step's rows take them from the step's own forward pass, where the
        weights are still the proximal policy's, so only the other rows need a forward pass of their own (with one
        minibatch, none): the work the controller's separate `logprobs` call did, less a 1/num_minibatches share."""
        if kl_loss_coef is not None:
            self.settings = {**self.settings, "kl_loss_coef": float(kl_loss_coef)}
        self.proximal_in_update = proximal_in_update
        return super().train(experience, update)

    def before_update(self, experience: dict[str, Tensor], plan: list[list[Tensor]]) -> dict[str, Tensor]:
        """With `proximal_in_update`, `old_logprobs` become the proximal policy's: this forward pass's for every row
        but the first step's (all rows when a later epoch revisits them), and zeros there until that step's own
        forward pass (`minibatch_loss`)."""
        if not self.proximal_in_update:
            return experience
        first = plan[0][0]
        later = torch.ones(experience["input_ids"].shape[0], dtype=torch.bool)
        if len(plan) == 1:
            later[first] = False
        proximal = torch.zeros_like(experience["behaviour_logprobs"])
        if later.any():
            rows = later.nonzero().squeeze(1)
            response = experience["response_mask"][rows]
            token_logp = self.logprobs(experience["input_ids"][rows], experience["attention_mask"][rows])
            computed, _ = response_token_view(token_logp, response)
            proximal[rows, : computed.shape[1]] = computed
        return {**experience, "old_logprobs": proximal}

    def logprobs(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """[B, T−1] token log-probs (float32, CPU) under the current weights: the "old" log-probs of PPO's ratio,
        computed in the precision the update's forward pass uses, so the first ratio is 1."""
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.dtype):
            return causal_lm_token_logprobs(self.model, input_ids.to(self.device), attention_mask.to(self.device),
                                            self.token_budget).float().cpu()

    def minibatch_loss(self, minibatch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        ids, attention, response = (minibatch[k] for k in SEQUENCE_KEYS)
        token_logp, token_entropy = causal_lm_token_logprobs_entropy(
            self.engine.model, ids, attention, position_ids_from_mask(attention), self.token_budget, with_entropy=True)
        logprobs, mask = response_token_view(token_logp, response)
        entropy, _ = response_token_view(token_entropy, response)
        if "behaviour_logprobs" in minibatch:
            # samples of an older policy (pipelined rollout): clip against the proximal policy, whose log-probs are
            # the old_logprobs computed before this update, and weight each token by min(π_prox/π_behav, is_cap);
            # at the first step of a `proximal_in_update`, the weights are the proximal policy's: this forward's
            proximal = (logprobs.detach() if self.proximal_in_update and self.steps_this_update == 0
                        else minibatch["old_logprobs"])
            policy = decoupled_ppo_loss(
                logprobs, proximal, minibatch["behaviour_logprobs"], minibatch["advantages"], mask,
                self.settings["clip_eps"], self.settings["is_cap"], self.settings["dual_clip"])
        else:
            policy = POLICY_LOSSES[self.settings["policy_loss"]](
                logprobs, minibatch["old_logprobs"], minibatch["advantages"], mask, self.settings["clip_eps"],
                self.settings["dual_clip"])
        mean_entropy = masked_mean(entropy, mask)
        # without a bonus the entropy is only reported, and the chunked backward skips its terms
        coef = self.settings["entropy_coef"]
        loss = policy.loss - coef * mean_entropy if coef > 0 else policy.loss
        extras = {"clip_fraction": policy.clip_fraction.item(), "approx_kl": policy.approx_kl.item(),
                  "entropy": mean_entropy.item(), "policy_loss": policy.loss.item()}
        if policy.is_weight_mean is not None:
            extras.update(is_weight_mean=policy.is_weight_mean.item(),
                          is_capped_fraction=policy.is_capped_fraction.item())
        if self.settings["kl_loss_coef"] > 0:
            kl = masked_mean(kl_penalty(logprobs, minibatch["ref_logprobs"], "k3", mask), mask)
            loss = loss + self.settings["kl_loss_coef"] * kl
            extras["kl_loss"] = kl.item()
        return loss, extras

    def weights(self) -> StateDict | None:
        """The policy's full weights as a CPU state dict, LoRA adapters merged in: what rollout workers load and
        `save_model` writes. Under ZeRO-3 a collective every rank must join, whose copy only rank 0 keeps (the
        others get None): the parameters are gathered in buckets, or with LoRA all at once to merge them."""
        if not self.lora:
            return gathered_state_dict(self.model)
        partitioned = is_partitioned(self.model)
        with full_parameters(self.model):
            if partitioned and self.rank != 0:
                return None
            merged = cpu_state_dict(merged_state_dict(self.model))
            # copies of the gathered tensors, whose storage is released when the gather ends
            return {name: value.clone() for name, value in merged.items()} if partitioned else merged

    def publish(self) -> StateDict | None:
        """`weights()`, what a rollout worker's `load_weights` takes (the Ray actor puts it in the object store once
        instead, so every worker gets the same object). Under ZeRO-3 every rank calls it; rank 0 publishes."""
        return self.weights()

    def load_optimizer(self, directory: str) -> None:
        # The saved moments belong to adapters that are now merged into the weights; the new ones start afresh.
        if not self.lora:
            super().load_optimizer(directory)

    def save_model(self, directory: str) -> None:
        """One consolidated HF checkpoint: config, the full `weights()` (LoRA merged) in the dtype the model
        trains in (bf16 under DeepSpeed's bf16, else fp32) and the tokenizer, written by rank 0. Under ZeRO-3 every
        rank must call it (the weights are gathered); the caller stages the directory and renames it into place."""
        state = self.weights() if self.rank == 0 or is_partitioned(self.model) else None
        if self.rank != 0:
            return
        base = self.model.get_base_model() if self.lora else self.model
        base.save_pretrained(directory, state_dict=state)
        save_tokenizer(self.tokenizer, directory)


class Critic(GroupMember):
    """The value model V(s_t), regressed on the GAE returns with a clipped value loss."""

    def __init__(self, model_path: str, world_size: int, settings: dict[str, Any],
                 num_threads: int | None = None) -> None:
        super().__init__(world_size, settings, num_threads)
        self.model = self._place(ValueModel.from_pretrained(model_path))

    def values(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """[B, T−1] V(s) (float32, CPU) before each token t ≥ 1, aligned with `token_logprobs` (column t−1 ↔
        token t)."""
        self.model.eval()
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        with torch.no_grad(), autocast(self.device, self.dtype):
            values = self.model(input_ids, attention_mask, position_ids_from_mask(attention_mask))[:, :-1]
        return values.float().cpu()

    def minibatch_loss(self, minibatch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        ids, attention, response = (minibatch[k] for k in SEQUENCE_KEYS)
        # the value head's output is low precision under autocast; the regression is computed in float32
        values, mask = response_token_view(
            self.engine.model(ids, attention, position_ids_from_mask(attention))[:, :-1].float(), response)
        loss = value_loss(values, minibatch["old_values"], minibatch["returns"], mask, self.settings["value_clip"])
        return loss, {"value_mean": masked_mean(values, mask).item()}
