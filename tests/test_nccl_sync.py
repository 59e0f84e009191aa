"""Weight sync by broadcast (rollout.weight_sync: nccl): the pure parts and the protocol, on CPU.

No GPU, no vLLM here: the plan, the packing, the name mapping, the checks and the fallback are pure; the
broadcast protocol runs between two real processes over a gloo group, the same code the NCCL path runs.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from transformers import LlamaConfig, LlamaForCausalLM

from actors.ppo_config import PPOEngineConfig, RolloutSection
from rlhf_ray.models import LoraSection
from rlhf_ray.models.lora import add_lora, merged_state_dict
from rlhf_ray.roles.learner import free_port
from rlhf_ray.rollout.nccl_sync import (
    WEIGHT_SYNC_FIELD,
    SyncPlan,
    TensorSpec,
    changed_tensors,
    checksums_digest,
    communicator_problem,
    greedy_agreement,
    greedy_continuation,
    open_communicator,
    pack_bucket,
    plan_buckets,
    plan_for,
    rank_offsets,
    send_buckets,
    tensor_checksum,
    tensor_checksums,
    unpack_bucket,
)
from rlhf_ray.rollout.weights import cpu_state_dict, engine_weights, tied_embeddings

REPO = Path(__file__).resolve().parents[1]


def tiny_llama(tie: bool, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=tie)
    return LlamaForCausalLM(config).eval()


def mixed_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {"a.weight": torch.randn(3, 5), "b.bias": torch.randn(7).to(torch.bfloat16),
            "c.steps": torch.tensor(11, dtype=torch.int64), "d.big": torch.randn(64, 8),
            "e.half": torch.randn(3).to(torch.float16)}


# ---------------------------------------------------------------------------------------------------- the plan


@pytest.mark.parametrize("seed", range(5))
def test_buckets_are_bounded_ordered_and_hold_every_tensor_once(seed: int) -> None:
    rng = random.Random(seed)
    specs = [TensorSpec(f"t{i}", rng.choice(["float32", "bfloat16", "int64"]), (rng.randint(1, 300),))
             for i in range(40)]
    bound = rng.choice([64, 256, 1000])
    plan = plan_buckets(specs, bound)
    assert plan.names == [spec.name for spec in specs]  # every tensor once, order stable
    for bucket in plan.buckets:
        assert bucket.specs
        if len(bucket.specs) > 1:  # shared buckets stay within the bound
            assert bucket.nbytes <= bound
        else:  # a bucket of one is a tensor that could not share: alone because large, or the next one did not fit
            assert bucket.specs[0].slot >= bound or bucket is plan.buckets[-1] or \
                bucket.nbytes + plan.buckets[plan.buckets.index(bucket) + 1].specs[0].slot > bound
    assert [spec for spec in specs if spec.slot >= bound] == \
        [b.specs[0] for b in plan.buckets if len(b.specs) == 1 and b.specs[0].slot >= bound]
    assert plan_buckets(specs, bound) == plan  # deterministic: sender and receiver derive the same plan


def test_a_plan_refuses_duplicate_names_and_an_empty_bound() -> None:
    spec = TensorSpec("w", "float32", (2,))
    with pytest.raises(ValueError, match="repeated"):
        plan_buckets([spec, spec])
    with pytest.raises(ValueError, match="bucket_bytes"):
        plan_buckets([spec], 0)


def test_pack_and_unpack_are_inverse_for_mixed_dtypes() -> None:
    state = mixed_state()
    plan = plan_for(state, bucket_bytes=64)
    assert len(plan.buckets) > 1
    for bucket in plan.buckets:
        for name, tensor in unpack_bucket(bucket, pack_bucket(bucket, state, "cpu")):
            assert tensor.dtype == state[name].dtype and torch.equal(tensor, state[name])
    with pytest.raises(ValueError, match="plan says"):
        pack_bucket(plan.buckets[0], {**state, plan.names[0]: torch.zeros(1)}, "cpu")


def test_rank_offsets_follow_the_learner_and_the_engines_sizes() -> None:
    assert rank_offsets([1, 1, 1]) == [1, 2, 3]
    assert rank_offsets([2, 4]) == [1, 3]  # tensor parallel 2 then 4: ranks 1-2, 3-6
    with pytest.raises(ValueError):
        rank_offsets([0])


# ---------------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize("tie", [True, False])
def test_engine_names_are_hf_names_without_a_tied_head(tie: bool) -> None:
    model = tiny_llama(tie)
    state = cpu_state_dict(model)
    assert tied_embeddings(model) is tie
    names = set(engine_weights(state, tied_embeddings(model)))
    params = {name for name, _ in model.named_parameters()}  # HF dedups a tied head out of named_parameters
    assert names == params
    assert ("lm_head.weight" in names) is (not tie)


def test_wrapper_prefixes_are_stripped_and_unmerged_lora_is_refused() -> None:
    model = tiny_llama(False)
    wrapped = {f"module.{name}": tensor for name, tensor in model.state_dict().items()}
    assert set(engine_weights(wrapped, False)) == set(model.state_dict())
    lora = add_lora(tiny_llama(False), LoraSection(r=2, target_modules=["q_proj", "v_proj"]))
    with pytest.raises(ValueError, match="unmerged LoRA"):
        engine_weights(lora.state_dict(), False)
    merged = engine_weights(merged_state_dict(lora), tied_embeddings(lora))  # what the learner publishes
    assert set(merged) == set(model.state_dict())


# ---------------------------------------------------------------------------------------------------- checks


def test_checksums_see_any_change_and_only_a_change() -> None:
    tensor = torch.randn(1000).to(torch.bfloat16)
    same = tensor.clone()
    assert tensor_checksum(tensor) == tensor_checksum(same)
    one = tensor.clone()
    one[417] = one[417] + 1
    swapped = tensor.clone()
    swapped[[3, 4]] = tensor[[4, 3]]
    assert tensor_checksum(one) != tensor_checksum(tensor)
    assert tensor.float()[3] == tensor.float()[4] or tensor_checksum(swapped) != tensor_checksum(tensor)
    assert tensor_checksum(tensor.view(10, 100)) != tensor_checksum(tensor)  # shape is part of it
    before = tensor_checksums([("w", tensor), ("b", torch.ones(3))])
    after = tensor_checksums([("w", one), ("b", torch.ones(3))])
    assert changed_tensors(before, after) == ["w"]
    assert changed_tensors(before, before) == []
    with pytest.raises(ValueError, match="different tensors"):
        changed_tensors(before, {"w": after["w"]})
    assert checksums_digest([before]) != checksums_digest([after])
    assert checksums_digest([before, after]) != checksums_digest([after, before])  # per rank


def test_greedy_continuation_is_the_models_greedy_generate_and_agreement_finds_the_first_difference() -> None:
    model = tiny_llama(True)
    prompt = [5, 9, 2, 7]
    mine = greedy_continuation(model, prompt, 6)
    generated = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, eos_token_id=None,
                               pad_token_id=0, min_new_tokens=6)[0, len(prompt):].tolist()
    assert mine == generated
    assert greedy_agreement(mine, generated)["match"]
    other = [*mine[:4], (mine[4] + 1) % 64, *mine[5:]]
    assert greedy_agreement(other, mine) == {"match": False, "first_difference": 4, "engine_tokens": 6,
                                             "reference_tokens": 6}
    assert greedy_agreement(mine[:3], mine) == {"match": False, "first_difference": 3, "engine_tokens": 3,
                                                "reference_tokens": 6}


# ---------------------------------------------------------------------------------------------------- fallback


def test_nccl_sync_is_refused_at_config_time_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"rollout.weight_sync='nccl'.*rollout.backend='vllm'"):
        RolloutSection(weight_sync="nccl", backend="hf", num_gpus=1)
    with pytest.raises(ValidationError, match="num_gpus > 0"):
        RolloutSection(weight_sync="nccl", backend="vllm", num_gpus=0)
    ok = {"weight_sync": "nccl", "backend": "vllm", "num_gpus": 1}
    with pytest.raises(ValidationError, match=r"learner\.num_gpus"):
        PPOEngineConfig(rollout=ok, cluster=None)
    assert RolloutSection().weight_sync == "object_store"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_nccl_without_cuda_fails_before_the_rendezvous_naming_the_field() -> None:
    problem = communicator_problem("nccl")
    assert problem is not None and WEIGHT_SYNC_FIELD in problem and "object_store" in problem
    with pytest.raises(RuntimeError, match=r"rollout\.weight_sync"):
        open_communicator("nccl", "127.0.0.1", 1, 0, 2)  # no store is opened: nothing waits on this port
    assert communicator_problem("gloo") is None


# ---------------------------------------------------------------------------------------------------- protocol

# The receiver loads the sync module by path: only torch is imported, not the rollout package's backends.
RECEIVER = """
import importlib.util, pickle, sys, torch
spec = importlib.util.spec_from_file_location("rlhf_ray.rollout.nccl_sync", sys.argv[4])
sync = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = sync
spec.loader.exec_module(sync)
open_communicator, receive_buckets = sync.open_communicator, sync.receive_buckets
port, plan_file, out_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
plan = pickle.load(open(plan_file, "rb"))
group = open_communicator("gloo", "127.0.0.1", port, 1, 2)
buckets = [[(name, tensor.clone()) for name, tensor in pairs] for pairs in receive_buckets(group, plan)]
torch.save(buckets, out_file)
"""


def test_the_broadcast_delivers_every_bucket_to_a_receiver_in_another_process(tmp_path: Path) -> None:
    import pickle

    state = {**mixed_state(), **{f"model.{k}": v for k, v in cpu_state_dict(tiny_llama(True)).items()}}
    state = engine_weights(state, tie_word_embeddings=True)
    plan = plan_for(state, bucket_bytes=2048)
    assert len(plan.buckets) > 3 and any(len(b.specs) == 1 and b.nbytes > 2048 for b in plan.buckets)
    (tmp_path / "plan.pkl").write_bytes(pickle.dumps(plan))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port), str(tmp_path / "plan.pkl"),
                                 str(tmp_path / "got.pt"), str(REPO / "rlhf_ray/rollout/nccl_sync.py")],
                                env=env, cwd=REPO)
    try:
        group = open_communicator("gloo", "127.0.0.1", port, 0, 2)
        assert send_buckets(group, plan, state) == plan.nbytes
        assert receiver.wait(timeout=60) == 0
    finally:
        receiver.kill()
    got = torch.load(tmp_path / "got.pt")
    assert len(got) == len(plan.buckets)
    for bucket, pairs in zip(plan.buckets, got, strict=True):  # bucket by bucket, in order, bit-identical
        assert [name for name, _ in pairs] == [spec.name for spec in bucket.specs]
        for name, tensor in pairs:
            assert tensor.dtype == state[name].dtype and torch.equal(tensor, state[name])
    assert isinstance(plan, SyncPlan)
