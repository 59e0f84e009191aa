"""How a trained role turns a loss into a parameter update: plain PyTorch (AdamW, optionally wrapped for data
parallelism, e.g. DDP) or a DeepSpeed ZeRO engine. The train loops and the PPO learner call `step(loss)` and
never branch on which one they have.

DeepSpeed is imported only when a `DeepSpeedEngine` is built, so the plain engine runs where DeepSpeed is not
installed. Nothing here needs Ray: a Ray Train worker passes `ray.train.torch.prepare_model` as `wrap`.

Checkpointing differs: the DDP optimizer state is whole on every rank, so rank 0 saves it; ZeRO partitions
the optimizer state, so every rank saves its shard and Ray Train merges the workers' files into one
checkpoint directory. Either way a checkpoint is read weights-only (tensors and plain containers, plus the
few DeepSpeed types its optimizer state holds): a tampered checkpoint cannot run code when loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import torch

from rlhf_ray.models.placement import grad_scaler, model_device
from rlhf_ray.rollout.weights import StateDict, cpu_state_dict

OPTIMIZER_FILE = "optimizer.pt"
GRAD_SCALER_FILE = "grad_scaler.pt"
DEEPSPEED_TAG = "deepspeed"
FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"  # torch's switch: every torch.load is weights-only
GATHER_BUCKET_BYTES = 512 * 2**20  # full tensors a ZeRO-3 gather materialises at once on every rank


class UpdateEngine(Protocol):
    model: torch.nn.Module  # what the loop calls forward on (DDP wrapper or DeepSpeed engine)

    def step(self, loss: torch.Tensor) -> None: ...

    def save(self, directory: str, rank: int) -> None: ...

    def load(self, directory: str) -> None: ...


Wrap = Callable[[torch.nn.Module], torch.nn.Module]


class TorchEngine:
    """AdamW + global-norm clipping over a (usually DDP-wrapped) model.

    With `config["dtype"] == "float16"` the loss is scaled (`torch.amp.GradScaler`): the backward runs on
    scale · loss so small fp16 gradients do not underflow, the gradients are unscaled before clipping (the norm is
    of the true gradients), and a step whose gradients overflowed is skipped while the scale shrinks."""

    def __init__(self, model: torch.nn.Module, config: dict[str, Any], wrap: Wrap | None = None) -> None:
        """`wrap` makes the data-parallel model (DDP, or Ray Train's `prepare_model` in a Train worker); None
        trains `model` as it is, for one process."""
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
        self.scaler = grad_scaler(model_device(model), config.get("dtype", "float32"))
        self.model = wrap(model) if wrap is not None else model
        self.max_grad_norm = config["max_grad_norm"]

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        if self.scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def save(self, directory: str, rank: int) -> None:
        if rank == 0:
            torch.save(self.optimizer.state_dict(), os.path.join(directory, OPTIMIZER_FILE))
            if self.scaler is not None:
                torch.save(self.scaler.state_dict(), os.path.join(directory, GRAD_SCALER_FILE))

    def load(self, directory: str) -> None:
        """The optimizer state, and an fp16 run's loss scale and growth count: a resumed run that started again at
        the initial scale would skip steps to overflow until the scale came down again."""
        self.optimizer.load_state_dict(torch.load(os.path.join(directory, OPTIMIZER_FILE), weights_only=True))
        scaler_file = os.path.join(directory, GRAD_SCALER_FILE)
        if self.scaler is not None and os.path.exists(scaler_file):
            self.scaler.load_state_dict(torch.load(scaler_file, weights_only=True))


def deepspeed_config(config: dict[str, Any], use_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed JSON config from the train settings: ZeRO stage, AdamW, clipping, micro-batch size.

    On CPU the optimizer is torch's AdamW (`torch_adam`), since DeepSpeed's fused Adam needs CUDA; bf16 only
    on GPU. Any key of `config["deepspeed"]["overrides"]` replaces the generated one."""
    settings = config["deepspeed"]
    generated = {
        "train_micro_batch_size_per_gpu": config["batch_size"],
        "gradient_accumulation_steps": 1,
        "gradient_clipping": config["max_grad_norm"],
        "zero_optimization": {"stage": settings["zero_stage"]},
        "optimizer": {"type": "AdamW", "params": {"lr": config["lr"], "weight_decay": config["weight_decay"],
                                                  "torch_adam": not use_gpu}},
        "bf16": {"enabled": bool(use_gpu and settings["bf16"])},
        "steps_per_print": 10**9,
    }
    return {**generated, **settings["overrides"]}


@contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every `torch.load` inside is weights-only, DeepSpeed's own too (it asks for full unpickling): besides
    tensors and plain containers it may build only the DeepSpeed types a ZeRO optimizer state holds (loss
    scalers, the ZeRO stage, parameter fragment addresses), never call arbitrary code."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    before = os.environ.get(FORCE_WEIGHTS_ONLY)
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        with torch.serialization.safe_globals([LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]):
            yield
    finally:
        if before is None:
            os.environ.pop(FORCE_WEIGHTS_ONLY, None)
        else:
            os.environ[FORCE_WEIGHTS_ONLY] = before


class DeepSpeedEngine:
    """A DeepSpeed ZeRO engine on the torch.distributed process group already set up (by Ray Train or the
    learner's `init_group`: gloo on CPU, NCCL on GPU)."""

    def __init__(self, model: torch.nn.Module, config: dict[str, Any]) -> None:
        import deepspeed

        use_gpu = torch.cuda.is_available() and config["use_gpu"]
        self.model, self.optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=deepspeed_config(config, use_gpu))

    def step(self, loss: torch.Tensor) -> None:
        self.model.backward(loss)
        self.model.step()

    def save(self, directory: str, rank: int) -> None:
        # collective: every rank writes its ZeRO optimizer partition under the same tag
        self.model.save_checkpoint(directory, tag=DEEPSPEED_TAG)

    def load(self, directory: str) -> None:
        with weights_only_loads():
            self.model.load_checkpoint(directory, tag=DEEPSPEED_TAG, load_optimizer_states=True)


def zero_stage(settings: dict[str, Any]) -> int | None:
    """The ZeRO stage these train settings run (None without DeepSpeed): the generated config's, so a stage set
    through `deepspeed.overrides` counts."""
    if not settings.get("deepspeed"):
        return None
    return int(deepspeed_config(settings, use_gpu=False)["zero_optimization"].get("stage", 0))


def is_partitioned(model: torch.nn.Module) -> bool:
    """Whether DeepSpeed ZeRO-3 holds `model`'s parameters partitioned (each carries its `ds_id`): outside a
    gather every rank then holds only empty placeholders, and `state_dict()` is no copy of the weights."""
    return any(hasattr(parameter, "ds_id") for parameter in model.parameters())


def plan_buckets(sizes: Sequence[int], limit: int) -> list[range]:
    """Consecutive index ranges over `sizes` (bytes of each tensor, in gather order), each summing to ≤ `limit`
    bytes, except that a tensor larger than `limit` is a bucket by itself: every index is in exactly one bucket,
    in order, so a bucketed gather holds at most max(limit, largest tensor) bytes of full tensors at once."""
    if limit <= 0:
        raise ValueError(f"bucket limit must be > 0 bytes; got {limit}")
    buckets: list[range] = []
    start, total = 0, 0
    for index, size in enumerate(sizes):
        if index > start and total + size > limit:
            buckets.append(range(start, index))
            start, total = index, 0
        total += size
    if start < len(sizes):
        buckets.append(range(start, len(sizes)))
    return buckets


def gathered_state_dict(model: torch.nn.Module, bucket_bytes: int = GATHER_BUCKET_BYTES) -> StateDict | None:
    """The model's full weights as CPU tensors under its `state_dict()` names (tied weights stay one tensor).

    Under ZeRO-3 this is a collective over the group, so every rank must call it: the parameters are gathered in
    buckets of ≤ `bucket_bytes` (`deepspeed.zero.GatheredParameters`, read-only), rank 0 copies each bucket to the
    CPU before it is released, and the other ranks return None. Unpartitioned (stage 0–2, DDP, one process) every
    rank's weights are whole: each returns its own copy and nothing is communicated."""
    module = getattr(model, "module", model)  # the model inside a DeepSpeed engine or DDP wrapper
    if not is_partitioned(module):
        return cpu_state_dict(module)
    import deepspeed

    keep = torch.distributed.get_rank() == 0
    entries = module.state_dict(keep_vars=True)  # the partitioned Parameter objects themselves, buffers as they are
    partitioned = list({id(value): value for value in entries.values() if hasattr(value, "ds_id")}.values())
    copies: dict[int, torch.Tensor] = {}
    sizes = [parameter.ds_numel * parameter.element_size() for parameter in partitioned]
    for bucket in plan_buckets(sizes, bucket_bytes):
        members = [partitioned[index] for index in bucket]
        with deepspeed.zero.GatheredParameters(members, modifier_rank=None):
            if keep:  # copied: the gathered storage is released when the context exits
                copies.update({id(p): p.detach().to("cpu").clone(memory_format=torch.contiguous_format)
                               for p in members})
    if not keep:
        return None
    return {name: copies[id(value)] if id(value) in copies else value.detach().to("cpu").contiguous()
            for name, value in sorted(entries.items())}


@contextmanager
def full_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Every parameter of `model` whole inside the block, for code that needs all weights at once (merging LoRA
    adapters, a model's own `save_pretrained`). Under ZeRO-3 a collective that every rank must enter: the whole
    model is gathered on every rank (read-only: changes inside are discarded); otherwise nothing happens."""
    module = getattr(model, "module", model)
    if not is_partitioned(module):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        yield


def make_engine(model: torch.nn.Module, config: dict[str, Any], wrap: Wrap | None = None) -> UpdateEngine:
    """DeepSpeed when `config["deepspeed"]` is set (it wraps the model itself), else AdamW over `wrap(model)`."""
    return DeepSpeedEngine(model, config) if config.get("deepspeed") else TorchEngine(model, config, wrap=wrap)
