"""`model.lora`: only adapters (and a reward model's heads) train, the base weights stay put, every export is plain
HF weights with the adapters merged (same logits as the adapted model), a LoRA checkpoint resumes its adapters,
bad targets are named, and `sft` with `model.lora` runs end to end on Ray Train. Tiny offline checkpoints: a
Qwen2 (ChatML, no pad token) and the default Llama."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from rlhf_ray.models import LoraSection, init_model, load_causal_lm, load_tokenizer
from rlhf_ray.models.lora import add_lora, linear_module_names, merged_state_dict
from rlhf_ray.training.checkpoint import ADAPTER_FILE, load_adapters, refuse_adapters, save_model
from rlhf_ray.training.reward_model import RewardModel
from rlhf_ray.training.steps import sft_batch_loss

CORPUS = ["Where is my parcel? It left the depot this morning and should arrive tomorrow.",
          "Can I get a refund for the broken lamp? Yes, a refund is on its way."] * 30
ROWS = [{"prompt": "Where is my parcel?", "response": "It left the depot this morning."},
        {"prompt": "Can I get a refund?", "response": "Yes, a refund is on its way."}]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("lora-models")
    return {"qwen2": str(init_model(CORPUS, root / "qwen2", "tiny", seed=0, architecture="qwen2",
                                    chat_format="chatml", pad_token=False).path),
            "llama": str(init_model(CORPUS, root / "llama", "tiny", seed=0).path)}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine: a second thread only adds contention
    yield
    torch.set_num_threads(threads)


def _train_step(model: torch.nn.Module, tokenizer, lr: float = 1e-2) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    loss, _ = sft_batch_loss(model, tokenizer, {k: [r[k] for r in ROWS] for k in ROWS[0]}, max_length=64)
    loss.backward()
    optimizer.step()
    model.eval()


def _ids(tokenizer) -> dict[str, torch.Tensor]:
    return tokenizer(["Where is my parcel? It left.", "A refund"], return_tensors="pt", padding=True)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_only_adapters_train_and_the_merged_export_is_a_plain_model(checkpoints: dict[str, str], arch: str,
                                                                    tmp_path: Path) -> None:
    base = load_causal_lm(checkpoints[arch])
    before = {name: value.clone() for name, value in base.state_dict().items()}
    tokenizer = load_tokenizer(checkpoints[arch])
    model = add_lora(base, LoraSection(r=4, alpha=8))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < 0.1 * sum(p.numel() for p in model.parameters())
    assert all("lora_" in name for name, p in model.named_parameters() if p.requires_grad)
    _train_step(model, tokenizer)
    frozen = {name.replace(".base_layer", ""): value for name, value in model.get_base_model().state_dict().items()
              if "lora_" not in name}
    assert frozen.keys() == before.keys() and all(torch.equal(frozen[k], before[k]) for k in before)

    save_model(model, str(tmp_path / "export"))
    assert not list((tmp_path / "export").glob("adapter*"))  # plain weights, no peft files
    plain = load_causal_lm(tmp_path / "export").eval()
    batch = _ids(tokenizer)
    with torch.no_grad():
        adapted, exported = model(**batch).logits, plain(**batch).logits
        original = load_causal_lm(checkpoints[arch]).eval()(**batch).logits
    torch.testing.assert_close(exported, adapted, atol=1e-5, rtol=0)
    assert not torch.allclose(exported, original, atol=1e-3)  # the step did move the model
    reference = copy.deepcopy(model).merge_and_unload().state_dict()  # peft's own (in-place) merge agrees
    merged = merged_state_dict(model)
    assert merged.keys() == reference.keys()
    assert all(torch.allclose(merged[k], reference[k], atol=1e-6) for k in merged)


def test_reward_model_lora_keeps_its_head_trainable_and_exports_merged(checkpoints: dict[str, str],
                                                                       tmp_path: Path) -> None:
    model = add_lora(RewardModel.from_causal_lm(checkpoints["qwen2"], 0, {"preference": 1.0, "safety": 0.5}),
                     LoraSection(r=4, target_modules=["q_proj", "v_proj"]))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= trainable
    assert all(name.startswith("head.") or "lora_" in name for name in trainable)
    tokenizer = load_tokenizer(checkpoints["qwen2"])
    batch = _ids(tokenizer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(batch["input_ids"], batch["attention_mask"]).sum().backward()
    optimizer.step()
    save_model(model, str(tmp_path / "rm"))
    loaded = RewardModel.load(tmp_path / "rm").eval()
    assert loaded.objectives == ("preference", "safety")
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch["input_ids"], batch["attention_mask"]),
                                   model.eval()(batch["input_ids"], batch["attention_mask"]), atol=1e-5, rtol=0)


def test_a_lora_checkpoint_resumes_its_adapters_on_the_base(checkpoints: dict[str, str], tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from rlhf_ray.models.lora import trainable_state_dict

    section = LoraSection(r=4, target_modules=["q_proj", "v_proj"])
    tokenizer = load_tokenizer(checkpoints["llama"])
    model = add_lora(load_causal_lm(checkpoints["llama"]), section)
    _train_step(model, tokenizer)
    save_file(trainable_state_dict(model), tmp_path / ADAPTER_FILE)
    resumed = add_lora(load_causal_lm(checkpoints["llama"]), section)
    load_adapters(resumed, str(tmp_path))
    batch = _ids(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(resumed.eval()(**batch).logits, model(**batch).logits, atol=0, rtol=0)
    other = add_lora(load_causal_lm(checkpoints["llama"]), LoraSection(r=2, target_modules=["q_proj", "v_proj"]))
    with pytest.raises(ValueError, match=r"do not fit this model\.lora: 16 tensors differ, e\.g\. .*lora_A.* is "
                                         r"\(4, 128\) in the checkpoint and \(2, 128\) here"):
        load_adapters(other, str(tmp_path))
    with pytest.raises(ValueError, match=r"trained without model\.lora"):
        load_adapters(resumed, str(tmp_path / "elsewhere"))
    with pytest.raises(ValueError, match=r"was trained with model\.lora; resume it with the same model\.lora"):
        refuse_adapters(str(tmp_path))


def test_a_target_module_the_model_lacks_is_named_with_the_ones_it_has(checkpoints: dict[str, str]) -> None:
    model = load_causal_lm(checkpoints["llama"])
    assert {"q_proj", "v_proj", "down_proj"} <= set(linear_module_names(model))
    with pytest.raises(ValueError, match=r"\['query_key_value'\] match no linear module of LlamaForCausalLM; "
                                         r"its linear modules are \['down_proj', 'gate_proj', 'k_proj'"):
        add_lora(model, LoraSection(target_modules=["q_proj", "query_key_value"]))
    with pytest.raises(ValueError, match="'embed_tokens'"):  # a module, but not a linear one
        add_lora(model, LoraSection(target_modules=["embed_tokens"]))


def test_ppo_learner_with_lora_publishes_and_saves_plain_weights(checkpoints: dict[str, str], tmp_path: Path) -> None:
    from rlhf_ray.roles.learner import PolicyLearner

    learner = PolicyLearner(checkpoints["qwen2"], 1, {"seed": 0, "lora": {"r": 4}})
    assert all("lora_" in name for name, p in learner.model.named_parameters() if p.requires_grad)
    plain = load_causal_lm(checkpoints["qwen2"])
    assert learner.publish().keys() == plain.state_dict().keys()
    learner.save_model(str(tmp_path / "policy"))
    assert load_causal_lm(tmp_path / "policy").state_dict().keys() == plain.state_dict().keys()
    assert (tmp_path / "policy" / "tokenizer_config.json").exists()


def test_sft_with_lora_on_ray_train(ray_cluster, checkpoints: dict[str, str], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from jobs.sft import SFTConfig, train
    from rlhf_ray.config import LineageConfig, RayConfig, WandbConfig

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS * 6))
    result = train(SFTConfig(model_path=checkpoints["qwen2"], data=str(data), output_dir=str(tmp_path / "sft"),
                             model={"lora": {"r": 4, "alpha": 8}}, ray=RayConfig(num_cpus=2),
                             wandb=WandbConfig(mode="disabled"), lineage=LineageConfig(root=str(tmp_path / "lin")),
                             train={"epochs": 1, "batch_size": 4, "lr": 1e-2}))
    adapters = load_file(Path(result["checkpoint"]) / ADAPTER_FILE)
    assert adapters and all("lora_" in name for name in adapters)
    exported = load_causal_lm(result["model_dir"])  # an ordinary checkpoint: no peft needed to load it
    base = load_causal_lm(checkpoints["qwen2"])
    assert exported.state_dict().keys() == base.state_dict().keys()
    changed = {k for k, v in exported.state_dict().items() if not torch.equal(v, base.state_dict()[k])}
    assert changed and all(k.endswith("proj.weight") for k in changed)  # only adapted layers moved
    assert (Path(result["model_dir"]) / "chat_template.jinja").exists()
