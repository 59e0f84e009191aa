"""Bring your own prompts and judge: `evaluate --prompts FILE --judge RM_DIR|module:function` and
`ppo --prompts/--eval-prompts` on a foreign checkpoint (Qwen2, ChatML template, no pad token), built offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_ray.evaluation.gate import is_refusal, refusal_rate
from rlhf_ray.inputs.prompts import PromptFileError, conversation_text, read_prompt_file

ASKS = ["how do i reset my password ?", "where is my order ?", "can i get a refund ?", "how do i change my email ?",
        "my parcel is late , what now ?", "how do i close my account ?"]


def brevity(prompt: str, response: str, meta: dict) -> float:
    """A rule judge for the tests: shorter answers score higher."""
    return -float(len(response.split()))


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def byo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two Qwen2 / ChatML / no-pad policies (different seeds), a reward model on one's backbone, prompt files with
    plain prompts and conversations."""
    from rlhf_ray.models import init_model
    from rlhf_ray.models.loading import load_tokenizer
    from rlhf_ray.training.reward_model import RewardModel

    root = tmp_path_factory.mktemp("byo")
    texts = [f"{ask} open settings , then follow the link we sent ." for ask in ASKS] * 20
    paths = {}
    for name, seed in (("candidate", 0), ("incumbent", 1)):
        paths[name] = str(init_model(texts, root / name, "tiny", seed=seed, architecture="qwen2",
                                     chat_format="chatml", pad_token=False).path)
    RewardModel.from_causal_lm(paths["candidate"], seed=0).save_pretrained(root / "rm")
    load_tokenizer(paths["candidate"]).save_pretrained(root / "rm")
    conversation = {"messages": [{"role": "system", "content": "be brief ."},
                                 {"role": "user", "content": ASKS[1]},
                                 {"role": "assistant", "content": "which order ?"},
                                 {"role": "user", "content": "the one from monday ."},
                                 {"role": "assistant", "content": "a reply to be dropped"}]}
    paths["train"] = _write(root / "train.jsonl", [{"prompt": a} for a in ASKS[:4]])
    paths["validation"] = _write(root / "validation.jsonl", [{"prompt": ASKS[4]}, conversation])
    paths["test"] = _write(root / "test.jsonl", [{"messages": [{"role": "user", "content": ASKS[5]}]}])
    paths["rm"], paths["root"] = str(root / "rm"), str(root)
    return paths


def test_message_rows_keep_the_conversation_up_to_the_last_user_turn(byo: dict[str, str], tmp_path: Path) -> None:
    plain, chat = read_prompt_file(byo["validation"])
    assert plain.messages is None and plain.conversation == ASKS[4]
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant", "user"]
    # what scorers read: the transcript `rlhf-ray import` stores for a conversation, its last user turn last
    assert chat.text == conversation_text(chat.messages) and chat.text.endswith("User: the one from monday .")
    assert chat.text.startswith("System: ") and "Assistant: which order ?" in chat.text
    (single,) = read_prompt_file(byo["test"])
    assert single.messages is None and single.prompt_id == read_prompt_file(
        _write(tmp_path / "same.jsonl", [{"prompt": ASKS[5]}]))[0].prompt_id  # one user turn = the plain prompt
    with pytest.raises(PromptFileError, match="row 1: messages need a non-empty user turn"):
        read_prompt_file(_write(tmp_path / "bad.jsonl", [{"messages": [{"role": "system", "content": "x"}]}]))
    with pytest.raises(PromptFileError, match=r"messages\[0\] must have role"):
        read_prompt_file(_write(tmp_path / "bad2.jsonl", [{"messages": [{"role": "bot", "content": "x"}]}]))


def test_refusals_are_detected_by_their_opening_not_by_a_fixed_list() -> None:
    refusals = ["I'm sorry, but I can't help with that.", "I cannot assist with this request.",
                "As an AI, I do not have opinions.", "Sorry, I won't do that.", "I am unable to provide that."]
    answers = ["Open settings, then press reset.", "I can help: open settings.",
               "Press reset. I cannot stress enough that you should back up first."]
    assert all(is_refusal(r) for r in refusals) and not any(is_refusal(a) for a in answers)
    assert refusal_rate(refusals + answers) == pytest.approx(5 / 8)


@pytest.mark.ray
def test_evaluate_on_a_users_prompts_with_an_rm_or_a_function_as_judge(ray_cluster, byo: dict[str, str],
                                                                       capsys) -> None:
    from jobs.cli import main

    common = ["--candidate", byo["candidate"], "--incumbent", byo["incumbent"], "--prompts", byo["validation"],
              "--test-prompts", byo["test"], "wandb.mode=disabled", "ray.num_cpus=2", "samples_per_prompt=3",
              "generation.max_new_tokens=8", "generation.num_cpus=0.1", "judge.num_cpus=0.1", "interval=wilson",
              f"lineage.root={byo['root']}/lineage"]
    for judge, out in ((byo["rm"], "rm"), ("tests.test_evaluate_byo:brevity", "function")):
        assert main(["evaluate", "--judge", judge, "--out", f"{byo['root']}/{out}", *common]) == 0
        summary = json.loads([line for line in capsys.readouterr().out.splitlines() if line.startswith("{")][-1])
        assert summary["verdict"] in ("pass", "fail")
        rate, low, high = (summary[f"gate/win_rate{s}"] for s in ("", "_lower", "_upper"))
        assert 0.0 <= low <= rate <= high <= 1.0 and high - low > 0.1  # 6 pairs: a wide interval
        for policy in ("candidate", "incumbent"):
            assert summary[f"gate/mean_words/{policy}"] > 0
            assert 0.0 <= summary[f"gate/refusal_rate/{policy}"] <= 1.0
            assert f"gate/first_pass_yield/{policy}" not in summary  # no world: nobody says what a user accepts
            assert summary[f"judge/failures/{policy}"] == 0.0
        assert summary["test/answers"] == 3.0 and 0.0 <= summary["test/win_rate"] <= 1.0
        report = json.loads(Path(summary["report"]).read_text())
        assert {c["name"] for c in report["checks"]} == {"non_inferiority", "mean_words",
                                                         "hacking:reward_up_quality_down"}  # never raised: no quality
        assert report["prompt_source"] == byo["validation"] and report["prompts"] == 2
        assert report["candidate"]["true_utility"] is None and "true_utility" not in report["monitors"]["candidate"]
        if out == "function":
            assert summary["judge"] == "tests.test_evaluate_byo:brevity"
            words = {p: summary[f"gate/mean_words/{p}"] for p in ("candidate", "incumbent")}
            # the judge prefers the shorter answers, so the shorter policy cannot lose on average
            assert (rate >= 0.5) == (words["candidate"] <= words["incumbent"]) or words["candidate"] == words[
                "incumbent"]


@pytest.mark.ray
def test_ppo_trains_on_prompt_files_with_a_function_reward_source(ray_cluster, byo: dict[str, str]) -> None:
    from jobs.cli import main

    out = Path(byo["root"]) / "ppo"
    code = main(["ppo", "--model", byo["candidate"], "--prompts", byo["train"], "--eval-prompts", byo["validation"],
                 "--out", str(out), "wandb.mode=disabled", "ray.num_cpus=2", f"lineage.root={byo['root']}/lineage",
                 "iterations=1", "prompts_per_iteration=2", "samples_per_prompt=2", "eval_prompts=2",
                 "eval_samples_per_prompt=1", "advantage.estimator=rloo", "rollout.num_workers=1",
                 "rollout.max_new_tokens=6", "rollout.num_cpus=0.1", "learner.num_minibatches=1",
                 "learner.num_cpus=0.2", "reward.num_cpus=0.1", "reference_num_cpus=0.1",
                 'reward.sources=[{"kind": "function", "name": "brevity", '
                 '"function": "tests.test_evaluate_byo:brevity", "weight": 0.5}]'])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] \
        if (out / "metrics.jsonl").exists() else []
    logged = {k for row in metrics for k in row.get("metrics", row)}
    assert summary is not None or logged, sorted(p.name for p in out.iterdir())
    assert "reward_source/brevity/mean" in logged or "reward_source/brevity/mean" in json.dumps(summary)
