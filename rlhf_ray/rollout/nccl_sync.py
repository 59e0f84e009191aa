"""Weight sync by broadcast: the learner's rank 0 sends the policy in buckets straight into the inference
engines' memory, as vLLM's RLHF examples do, instead of one object-store copy per worker.

The pattern (vLLM's `examples/offline_inference/rlhf.py` and `rlhf_utils.py`, API of vLLM 0.34):

    1. once: the learner (rank 0) and every engine worker (ranks 1..N) join one *stateless* group, outside
       torch.distributed's global group (the learner already has its own DDP group): `open_communicator`.
    2. per sync: the learner builds a `SyncPlan` (names, dtypes, shapes, grouped into byte-bounded buckets)
       and announces it to the engines through `LLM.collective_rpc`; then both sides run the same sequence of
       broadcasts, one flat uint8 buffer per bucket (`send_buckets` / `receive_buckets`).

The communicator is pluggable: `PyNcclCommunicator` over vLLM's `StatelessProcessGroup` on GPUs, a gloo
process group built from a `TCPStore` on CPU, so the protocol itself runs and is tested without CUDA or vLLM.
Everything that needs vLLM is imported inside the function that uses it.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

WeightSync = Literal["object_store", "nccl"]
WEIGHT_SYNC_FIELD = "rollout.weight_sync"
DEFAULT_BUCKET_BYTES = 256 * 2**20  # vLLM's packed transfer uses buffers of this order; a few per 8B model
ALIGN = 16  # each tensor starts at a multiple of this many bytes in a bucket, so its bytes view as any dtype


@dataclass(frozen=True)
class TensorSpec:
    """What a receiver needs to allocate one tensor: its name, dtype (torch attribute name) and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        numel = 1
        for size in self.shape:
            numel *= size
        return numel * torch.empty((), dtype=getattr(torch, self.dtype)).element_size()

    @property
    def slot(self) -> int:
        """Bytes the tensor takes in a bucket: `nbytes` rounded up to `ALIGN`."""
        return -(-self.nbytes // ALIGN) * ALIGN

    @classmethod
    def of(cls, name: str, tensor: Tensor) -> TensorSpec:
        return cls(name, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape))


@dataclass(frozen=True)
class Bucket:
    """Tensors sent as one broadcast: their specs in order; each takes its `slot`, back to back."""

    specs: tuple[TensorSpec, ...]

    @property
    def nbytes(self) -> int:
        return sum(spec.slot for spec in self.specs)


@dataclass(frozen=True)
class SyncPlan:
    """The buckets of one sync, in send order; plain data, so it travels through `collective_rpc` and Ray."""

    buckets: tuple[Bucket, ...]

    @property
    def names(self) -> list[str]:
        return [spec.name for bucket in self.buckets for spec in bucket.specs]

    @property
    def nbytes(self) -> int:
        return sum(bucket.nbytes for bucket in self.buckets)


def plan_buckets(specs: Sequence[TensorSpec], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> SyncPlan:
    """Group tensors, in the given order, into buckets of at most `bucket_bytes`.

    Greedy and order-preserving: a tensor (its `slot`) joins the open bucket while the bucket stays within the
    bound, otherwise it opens the next one; a tensor of `bucket_bytes` or more travels alone (it cannot share, and
    splitting it would not shorten its own transfer). Every tensor lands in exactly one bucket, and the
    concatenation of the buckets is the input order, so sender and receiver agree without negotiation.
    """
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be ≥ 1; got {bucket_bytes}")
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"tensor names must be unique in a sync plan; repeated: "
                         f"{sorted({n for n in names if names.count(n) > 1})}")
    buckets: list[Bucket] = []
    current: list[TensorSpec] = []
    size = 0
    for spec in specs:
        if current and size + spec.slot > bucket_bytes:
            buckets.append(Bucket(tuple(current)))
            current, size = [], 0
        current.append(spec)
        size += spec.slot
        if size >= bucket_bytes:
            buckets.append(Bucket(tuple(current)))
            current, size = [], 0
    if current:
        buckets.append(Bucket(tuple(current)))
    return SyncPlan(tuple(buckets))


def plan_for(state: Mapping[str, Tensor], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> SyncPlan:
    """`plan_buckets` over a state dict's tensors in its own (name-sorted, for `cpu_state_dict`) order."""
    return plan_buckets([TensorSpec.of(name, tensor) for name, tensor in state.items()], bucket_bytes)


def pack_bucket(bucket: Bucket, state: Mapping[str, Tensor], device: torch.device | str) -> Tensor:
    """One flat uint8 buffer on `device` holding the bucket's tensors' raw bytes, each in its slot."""
    buffer = torch.zeros(bucket.nbytes, dtype=torch.uint8, device=device)
    offset = 0
    for spec in bucket.specs:
        tensor = state[spec.name]
        if TensorSpec.of(spec.name, tensor) != spec:
            raise ValueError(f"tensor {spec.name!r} is {TensorSpec.of(spec.name, tensor)}; the plan says {spec}")
        buffer[offset : offset + spec.nbytes] = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        offset += spec.slot
    return buffer


def unpack_bucket(bucket: Bucket, buffer: Tensor) -> list[tuple[str, Tensor]]:
    """(name, tensor) views into `buffer`, in the bucket's order: the inverse of `pack_bucket`."""
    if buffer.numel() != bucket.nbytes:
        raise ValueError(f"bucket buffer has {buffer.numel()} bytes; the plan says {bucket.nbytes}")
    out, offset = [], 0
    for spec in bucket.specs:
        chunk = buffer[offset : offset + spec.nbytes]
        out.append((spec.name, chunk.view(getattr(torch, spec.dtype)).reshape(spec.shape)))
        offset += spec.slot
    return out


# ---------------------------------------------------------------------------------------------------- transport


class Communicator(Protocol):
    """A group of learner rank 0 (the source) and the engine workers; only broadcast is needed."""

    rank: int
    world_size: int
    device: torch.device

    def broadcast(self, tensor: Tensor, src: int) -> None:
        """In place: `tensor` of rank `src` is copied into every other rank's `tensor`."""
        ...


class GlooCommunicator:
    """A gloo group of its own, built from a `TCPStore` (rank 0 listens): the CPU stand-in for the NCCL one,
    independent of any default torch.distributed group the process has."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, timeout_s: float = 300.0) -> None:
        timeout = datetime.timedelta(seconds=timeout_s)
        self.rank, self.world_size, self.device = rank, world_size, torch.device("cpu")
        store = torch.distributed.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout)
        self.group = torch.distributed.ProcessGroupGloo(store, rank, world_size, timeout)

    def broadcast(self, tensor: Tensor, src: int) -> None:
        options = torch.distributed.BroadcastOptions()
        options.rootRank, options.rootTensor = src, 0
        self.group.broadcast([tensor], options).wait()


class PyNcclCommunicator:
    """vLLM's `PyNcclCommunicator` over its `StatelessProcessGroup` (the RLHF examples' pairing), on `device`."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, device: torch.device) -> None:
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator as VLLMPyNccl
        from vllm.distributed.utils import StatelessProcessGroup

        group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)
        self.rank, self.world_size, self.device = rank, world_size, device
        self.nccl = VLLMPyNccl(group, device=device)

    def broadcast(self, tensor: Tensor, src: int) -> None:
        self.nccl.broadcast(tensor, src=src, stream=torch.cuda.current_stream(self.device))


def communicator_problem(backend: str, device: torch.device | None = None) -> str | None:
    """Why `backend` cannot run here (None when it can): NCCL needs CUDA and vLLM's PyNccl wrapper."""
    if backend == "gloo":
        return None
    if backend != "nccl":
        return f"unknown weight-sync communicator {backend!r}; expected 'nccl' or 'gloo'"
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return f"{WEIGHT_SYNC_FIELD}='nccl' needs a CUDA device on the learner and every engine worker; " \
               f"this process has {'no CUDA' if not torch.cuda.is_available() else f'its model on {device}'} " \
               f"(use {WEIGHT_SYNC_FIELD}='object_store')"
    try:
        import vllm.distributed.device_communicators.pynccl  # noqa: F401
    except ImportError:
        return f"{WEIGHT_SYNC_FIELD}='nccl' needs vLLM (its PyNccl communicator): `pip install rlhf-ray[vllm]`, " \
               f"or use {WEIGHT_SYNC_FIELD}='object_store'"
    return None


def open_communicator(backend: str, host: str, port: int, rank: int, world_size: int,
                      device: torch.device | None = None) -> Communicator:
    """Join the sync group as `rank` of `world_size` (rank 0, the learner, hosts the rendezvous at host:port).

    Every member must call this at the same time; a backend that cannot run here fails first, naming
    `rollout.weight_sync`, rather than hanging the other members in the rendezvous.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}); got {rank}")
    if problem := communicator_problem(backend, device):
        raise RuntimeError(problem)
    if backend == "gloo":
        return GlooCommunicator(host, port, rank, world_size)
    return PyNcclCommunicator(host, port, rank, world_size, device or torch.device("cuda", torch.cuda.current_device()))


def send_buckets(communicator: Communicator, plan: SyncPlan, state: Mapping[str, Tensor], src: int = 0) -> int:
    """The source's side: one broadcast per bucket, in plan order; returns the bytes sent."""
    for bucket in plan.buckets:
        communicator.broadcast(pack_bucket(bucket, state, communicator.device), src)
    return plan.nbytes


def receive_buckets(communicator: Communicator, plan: SyncPlan, src: int = 0) -> Iterator[list[tuple[str, Tensor]]]:
    """A receiver's side: per bucket, in plan order, a fresh buffer filled by the broadcast and returned as
    (name, tensor) views, ready for the engine's `load_weights` (which copies them into its own tensors)."""
    for bucket in plan.buckets:
        buffer = torch.empty(bucket.nbytes, dtype=torch.uint8, device=communicator.device)
        communicator.broadcast(buffer, src)
        yield unpack_bucket(bucket, buffer)


def rank_offsets(engine_world_sizes: Sequence[int]) -> list[int]:
    """First sync-group rank of each engine's workers: the learner is rank 0, engine e's workers follow
    those of engines < e (an engine of tensor parallel size t has t workers, each a member)."""
    if any(size < 1 for size in engine_world_sizes):
        raise ValueError(f"each engine has ≥ 1 worker; got {list(engine_world_sizes)}")
    offsets, next_rank = [], 1
    for size in engine_world_sizes:
        offsets.append(next_rank)
        next_rank += size
    return offsets


# ---------------------------------------------------------------------------------------------------- checks


CHECKSUM_PRIME = 2**31 - 1
CHECKSUM_CHUNK = 2**22  # words per step: bounds the int64 temporaries to 3 × 32 MiB whatever the tensor's size


def tensor_checksum(tensor: Tensor) -> str:
    """A position-weighted checksum of a tensor's raw bytes, computed where the tensor lives (no host copy):

        w_i = 32-bit words of the bytes (zero-padded),   P = 2³¹ − 1
        s₁ = Σ_i w_i mod P,   s₂ = Σ_i (i + 1)·w_i mod P

    with dtype and shape in front. Any change of one word changes s₁; swapping or moving words changes s₂; a
    random change goes unseen with probability about 1/P². Not cryptographic: it detects, it does not
    authenticate.
    """
    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    if data.numel() % 4:
        data = torch.cat([data, data.new_zeros(4 - data.numel() % 4)])
    words = data.view(torch.int32)
    s1 = s2 = 0
    for start in range(0, words.numel(), CHECKSUM_CHUNK):
        chunk = words[start : start + CHECKSUM_CHUNK].to(torch.int64) % CHECKSUM_PRIME
        position = torch.arange(start + 1, start + 1 + chunk.numel(), dtype=torch.int64,
                                device=chunk.device) % CHECKSUM_PRIME
        s1 = (s1 + int(chunk.sum())) % CHECKSUM_PRIME
        s2 = (s2 + int((chunk * position % CHECKSUM_PRIME).sum())) % CHECKSUM_PRIME
    dtype = str(tensor.dtype).removeprefix("torch.")
    return f"{dtype}|{'x'.join(map(str, tensor.shape))}|{s1:08x}{s2:08x}"


def tensor_checksums(named_tensors: Iterable[tuple[str, Tensor]]) -> dict[str, str]:
    """`tensor_checksum` per tensor, under the holder's own names (vLLM's fused ones on a worker)."""
    return {name: tensor_checksum(tensor) for name, tensor in named_tensors}


def checksums_digest(per_worker: Sequence[Mapping[str, str]]) -> str:
    """One digest over every worker's per-tensor checksums (workers in rank order, names sorted): two engines
    of the same layout agree exactly when each of their workers holds bit-identical tensors."""
    digest = hashlib.sha256()
    for rank, checksums in enumerate(per_worker):
        for name in sorted(checksums):
            digest.update(f"{rank}|{name}|{checksums[name]}\n".encode())
    return digest.hexdigest()


def changed_tensors(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Names whose checksum differs between two `tensor_checksums` of one holder; a name set that differs
    is an error (the engine's layout does not change with an update)."""
    if set(before) != set(after):
        raise ValueError(f"checksums cover different tensors before and after: only before "
                         f"{sorted(set(before) - set(after))[:5]}, only after {sorted(set(after) - set(before))[:5]}")
    return sorted(name for name in before if before[name] != after[name])


def greedy_continuation(model: torch.nn.Module, prompt_ids: Sequence[int], max_new_tokens: int,
                        stop_ids: Sequence[int] = ()) -> list[int]:
    """The model's own greedy continuation of `prompt_ids` (argmax each step, no sampling, no cache
    tricks), cut after the first of `stop_ids`: what an engine's temperature-0 generation must reproduce."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    out: list[int] = []
    model.eval()
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=ids).logits[0, -1].argmax())
            out.append(token)
            if token in stop_ids:
                break
            ids = torch.cat([ids, torch.tensor([[token]], device=device)], dim=1)
    return out


def greedy_agreement(engine_ids: Sequence[int], reference_ids: Sequence[int]) -> dict[str, Any]:
    """How far two greedy continuations agree: the first position where they differ (None if one is a
    prefix of the other and they have the same length, i.e. equal)."""
    engine_ids, reference_ids = list(engine_ids), list(reference_ids)
    first = next((k for k, (a, b) in enumerate(zip(engine_ids, reference_ids, strict=False)) if a != b),
                 None if len(engine_ids) == len(reference_ids) else min(len(engine_ids), len(reference_ids)))
    return {"match": first is None, "first_difference": first, "engine_tokens": len(engine_ids),
            "reference_tokens": len(reference_ids)}

