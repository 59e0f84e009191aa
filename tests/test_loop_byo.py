"""The loop in bring-your-own mode, end to end on the shipped example (`configs/byo.yaml`, `examples/byo/`): a
foreign-architecture checkpoint (Qwen2, ChatML, no pad token) built offline stands for the user's model; the user's
preference files and chat logs go through import → ingest → curate, then SFT on the user's conversations, a reward
model measured on the user's held-out pairs, PPO on the user's prompt files and the gate on the validation and test
prompt files — no simulator, no init-model — with LoRA adapters on the policy and the reward model."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "byo"


def _example_base_model(out: Path) -> str:
    """A tiny Qwen2 with a ChatML template and no pad token, its tokenizer trained on the example's conversations."""
    from rlhf_ray.models import init_model

    texts = [message["content"] for line in (EXAMPLE / "sft.jsonl").read_text().splitlines()
             for message in json.loads(line)["messages"]]
    return str(init_model(texts, out, "tiny", seed=0, architecture="qwen2", chat_format="chatml",
                          pad_token=False).path)


def _summary(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_byo_example_runs_the_loop_on_a_users_model_and_files(ray_cluster, tmp_path: Path, capsys,
                                                                  monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the example config names its files relative to the repository
    out = tmp_path / "byo"
    tiny = ["sft.train.epochs=1", "reward_model.train.epochs=1", "ppo.iterations=1", "ppo.eval_every=1",
            "ppo.checkpoint_every=1", "ppo.prompts_per_iteration=2", "ppo.samples_per_prompt=2", "ppo.eval_prompts=2",
            "ppo.eval_samples_per_prompt=1", "ppo.rollout.max_new_tokens=8", "gate.prompts=2",
            "gate.samples_per_prompt=1", "gate.generation.max_new_tokens=8", "gates.min_rm_accuracy=0.0",
            "gates.max_rm_length_correlation=null", "gate.thresholds.non_inferiority_margin=0.5"]
    args = ["loop", "--config", "configs/byo.yaml", f"output_dir={out}", "wandb.mode=offline",
            f"source.base_model={_example_base_model(tmp_path / 'base')}",
            "stages=[import,ingest,curate,sft,train-rm,ppo,gate]", "source.model.lora={r: 4, alpha: 8}",
            f"gate.judge_path={out}/reward_model/reward_model", *tiny]
    assert main(args) == 0
    summary = _summary(capsys)
    assert "stopped" not in summary, summary.get("stopped")
    # the user's files: 90 TRL pairs, 30 OpenAI pairs, 60 thumbs from the chat logs (the judge file is not imported:
    # no train-judge stage); every row accepted, ids pseudonymized, no simulator anywhere
    assert (summary["import_input_rows"], summary["import_written_rows"], summary["import_quarantined_rows"]) == (
        180, 180, 0)
    assert summary["accepted_rows"] == 180 and summary["pairs"] > 0
    assert not (out / "feedback" / "gold").exists() and not (out / "model").exists()
    actors = {actor for path in (out / "dataset").rglob("*.parquet") if "quarantine" not in str(path)
              for actor in pq.read_table(path, columns=["actor_id"]).column("actor_id").to_pylist()}
    assert actors and not any("@" in actor for actor in actors)  # the chat logs' emails are pseudonymized
    assert summary["sft_data_rows"] == 70 and summary["sft_bad_rows"] == 0
    assert summary["rm_heldout_source"] == "eval_pairs" and 0.0 <= summary["rm_heldout_accuracy"] <= 1.0
    exported = json.loads((out / "sft" / "model" / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in (exported.get("chat_template") or (out / "sft" / "model" / "chat_template.jinja")
                              .read_text()) and exported.get("pad_token") is None
    # LoRA (source.model.lora) on SFT, the RM and the PPO learner: every export is plain, merged HF weights
    from safetensors import safe_open

    for export in (out / "sft" / "model", out / "reward_model" / "reward_model", out / "ppo" / "policy"):
        with safe_open(str(next(export.glob("*.safetensors"))), "pt") as weights:
            names = list(weights.keys())
        assert names and not any("lora" in name for name in names), export
    gate = json.loads((out / "gate" / "gate.json").read_text())
    assert gate["prompt_source"].endswith("prompts/validation.jsonl") and gate["candidate"]["true_utility"] is None
    assert "test/win_rate" in gate["test"] and summary["gate_verdict"] == gate["verdict"]


def test_a_system_turn_reaches_generation_and_scorers_read_the_conversation_as_imported(tmp_path: Path) -> None:
    """The example's test prompts carry a system turn: PPO's prompt rows keep it (as JSON, one type per Ray Data
    column), the rollout worker renders it with the chat template, and the sample's prompt is the transcript
    `rlhf-ray import` stores for a conversation, so the reward model scores prompts in the form it was trained on."""
    from rlhf_ray.inputs.formats import read_import
    from rlhf_ray.inputs.prompts import conversation_text, read_prompt_file
    from rlhf_ray.roles.rollout import RolloutWorker
    from rlhf_ray.rollout.prompts import prompt_row, row_conversation

    prompt = read_prompt_file(EXAMPLE / "prompts" / "test.jsonl")[0]
    assert prompt.messages[0]["role"] == "system" and row_conversation(prompt_row(prompt)) == list(prompt.messages)
    worker = RolloutWorker(_example_base_model(tmp_path / "base"), "hf", {"max_batch_size": 2}, seed=0)
    (sample,) = worker.generate([row_conversation(prompt_row(prompt))], [prompt.prompt_id], 1,
                                {"max_new_tokens": 4, "temperature": 1.0, "seed": 0})["samples"]
    rendered = worker.backend.tokenizer.decode(sample.prompt_ids)
    assert prompt.messages[0]["content"] in rendered and rendered.count("<|im_start|>") == 3  # system, user, assistant
    assert sample.prompt == prompt.text == conversation_text(prompt.messages)
    imported = read_import("openai-preference", EXAMPLE / "feedback" / "preferences.openai.jsonl").rows[0]
    assert imported["prompt"].startswith("System: ") and "\n\nUser: " in imported["prompt"]  # the same form


def test_a_training_artifact_records_the_model_options_and_user_files_it_was_trained_with() -> None:
    """Lineage says when a model was trained with LoRA, a chat template or the user's files; a run without them
    records what it always did (so its artifact definition, and id, stay the same)."""
    from jobs.dpo import DPOConfig
    from jobs.sft import SFTConfig
    from jobs.training import lineage_definition

    assert set(lineage_definition(SFTConfig(), ("data", "eval_data"))) == {"train", "seed"}
    user = lineage_definition(SFTConfig(data="chats.jsonl", model={"lora": {"r": 4}}), ("data", "eval_data"))
    assert set(user) == {"train", "seed", "data", "model"} and user["model"]["lora"]["r"] == 4
    assert set(lineage_definition(DPOConfig(eval_pairs="x.jsonl", model={"chat_template": "chatml"}),
                                  ("eval_pairs",))) == {"train", "seed", "eval_pairs", "model"}
