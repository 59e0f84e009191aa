"""The optimisation settings the training steps and update engines read (SFT, RM, DPO, PPO learners)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from rlhf_ray.config import StrictModel
from rlhf_ray.models.placement import DtypeName


class DeepSpeedSection(StrictModel):
    zero_stage: int = Field(1, ge=0, le=3,
                            description="ZeRO stage: 1 partitions optimizer state, 2 also grads, 3 params")
    bf16: bool = Field(True, description="bf16 mixed precision (GPU only; CPU stays fp32)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="raw DeepSpeed config keys to set")


class TrainSection(StrictModel):
    epochs: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1, description="examples per worker per step")
    max_length: int = Field(128, ge=8)
    max_grad_norm: float = Field(1.0, gt=0)
    shuffle_buffer: int = Field(256, ge=1)
    log_every: int = Field(20, ge=1, description="steps between per-step JSON lines on stdout (rank 0)")
    deepspeed: DeepSpeedSection | None = Field(None, description="train with a DeepSpeed ZeRO engine instead of DDP")
    dtype: DtypeName = Field("float32", description="float32 | bfloat16 | float16: the forward pass runs under "
                             "autocast in it (weights and optimizer stay float32; float16 scales the loss); dpo's "
                             "frozen reference loads in it. The device is the worker's: scaling.use_gpu")

    @model_validator(mode="after")
    def _fp16_needs_the_torch_engine(self) -> TrainSection:
        if self.dtype == "float16" and self.deepspeed is not None:
            raise ValueError("train.dtype='float16' scales the loss in the plain torch engine; with train.deepspeed "
                             "set, use dtype: bfloat16 or float32 (or DeepSpeed's own fp16 section through "
                             "deepspeed.overrides)")
        return self
