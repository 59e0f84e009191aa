"""One device and dtype policy for every model-holding role (learner, critic, reference, reward scorer, HF rollout,
SFT/RM/DPO steps).

Each role reads a `device` and a `dtype` from its config section, moves its model to the device once, and moves
every batch there before the forward pass (`to_device`); results go back to the CPU for the caller.

    device   auto | cpu | cuda | cuda:N    auto = CUDA when this process sees a GPU (a Ray actor sees only the
                                            GPUs it reserved), else CPU
    dtype    float32 | bfloat16 | float16

What `dtype` means depends on whether the role trains:

- Frozen models (reference, reward scorer, HF rollout, the DPO reference) load their weights directly in `dtype`
  (`from_pretrained(dtype=...)`): half the memory of fp32, and no fp32 copy is ever made.
- Trained models (policy, critic, SFT/RM/DPO) keep fp32 master weights and run the loss's forward pass under
  `autocast(device, dtype)`: that is what mixed precision is for training — the optimizer updates fp32 weights, so
  small updates are not rounded away. float16 also scales the loss (`grad_scaler`), since fp16's narrow range
  underflows small gradients. Pure bf16 weights with fp32 optimizer state are what DeepSpeed's `bf16` section
  does; with DeepSpeed its section decides the weights' precision.

float16 on the CPU runs (torch has CPU fp16 autocast and a CPU grad scaler) but is slow and gains nothing there:
it is allowed so that the fp16 path is testable without a GPU; pick bfloat16 or float32 for CPU work.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator, Field

from rlhf_ray.config import StrictModel

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DtypeName = Literal["float32", "bfloat16", "float16"]
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"


def check_device_spec(spec: str) -> str:
    """`spec` when it is auto, cpu, cuda or cuda:N; else a ValueError naming it."""
    if not isinstance(spec, str) or not DEVICE_PATTERN.fullmatch(spec):
        raise ValueError(f"device {spec!r} is not a device this framework places models on; expected "
                         f"{DEVICE_CHOICES}")
    return spec


DeviceSpec = Annotated[str, AfterValidator(check_device_spec)]
DEVICE_HELP = f"where the model runs: {DEVICE_CHOICES} (auto: CUDA when this process sees a GPU, else CPU)"
DTYPE_HELP = ("float32 | bfloat16 | float16: frozen models load their weights in it; trained models keep fp32 "
              "weights and run the forward pass under autocast in it (float16 with a grad scaler)")


class Placement(StrictModel):
    """The device and dtype of one model-holding role (a section inherits these two fields)."""

    device: DeviceSpec = Field("auto", description=DEVICE_HELP)
    dtype: DtypeName = Field("float32", description=DTYPE_HELP)


def resolve_device(spec: str | torch.device) -> torch.device:
    """The torch device a spec names, with a CUDA index always set (DDP's `device_ids`, `cuda.set_device`):
    auto → cuda:<current> when this process sees a GPU, else cpu. A CUDA spec without CUDA is a ValueError."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    check_device_spec(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} asks for CUDA, but this process sees no GPU (torch.cuda.is_available() "
                         "is False: no GPU reserved for it, e.g. num_gpus: 0, or a CPU-only torch); use device: auto "
                         "or cpu")
    index = torch.cuda.current_device() if spec == "cuda" else int(spec.split(":")[1])
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {spec!r}: this process sees {torch.cuda.device_count()} GPU(s), cuda:0 … "
                         f"cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """The torch dtype of a config name (float32 | bfloat16 | float16); a torch dtype passes through."""
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise ValueError(f"dtype {name} is not one of {sorted(DTYPES)}")
        return name
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not a model dtype; expected one of {' | '.join(DTYPES)}")
    return DTYPES[name]


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (a model without parameters counts as on the CPU): where its
    inputs must go."""
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def to_device(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The batch with every tensor on `device` (non-blocking: a copy from pinned memory overlaps compute); other
    values as they are."""
    return {key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()}


def process_group_backend(device: torch.device) -> str:
    """The torch.distributed backend for ranks whose model lives on `device`: NCCL only for CUDA models (NCCL
    cannot reduce CPU tensors), gloo otherwise, whether or not the machine has a GPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def autocast(device: torch.device, dtype: str | torch.dtype) -> Any:
    """`torch.autocast` on the device's type in `dtype` for a low-precision dtype, a no-op for float32.

    Around the forward pass (and the loss) only: the backward runs outside, in the dtypes autocast recorded."""
    low = torch_dtype(dtype)
    if low == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=low)


def grad_scaler(device: torch.device, dtype: str | torch.dtype) -> torch.amp.GradScaler | None:
    """A dynamic loss scaler for float16 training (fp16 gradients underflow without one), None otherwise: bf16
    has fp32's exponent range, and fp32 needs none."""
    if torch_dtype(dtype) != torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


@contextmanager
def autocast_for(model: torch.nn.Module, dtype: str | torch.dtype) -> Iterator[None]:
    """`autocast` on the device the model's parameters are on."""
    with autocast(model_device(model), dtype):
        yield
