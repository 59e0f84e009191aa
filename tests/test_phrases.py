"""The learned canned-phrase list: the weighted log-odds z by hand, selection rules, the file form."""

from __future__ import annotations

import json
import math

import pytest

from rlhf_ray.algos.phrases import PhraseSettings, learn_canned_phrases, load_phrase_list, weighted_log_odds


def test_weighted_log_odds_by_hand() -> None:
    # n^i = n^j = 4, α = pooled counts {a: 4, b: 4}, α_0 = 8
    z = weighted_log_odds({"a": 3, "b": 1}, {"a": 1, "b": 3}, {"a": 4, "b": 4})
    delta = math.log(7 / (4 + 8 - 3 - 4)) - math.log(5 / (4 + 8 - 1 - 4))  # = 2·log(7/5)
    assert z["a"] == pytest.approx(delta / math.sqrt(1 / 7 + 1 / 5))
    assert z["a"] == pytest.approx(1.1493, abs=1e-4)
    assert z["b"] == pytest.approx(-z["a"])


def test_learns_the_boilerplate_of_rejected_answers_as_one_phrase() -> None:
    facts = ["open settings then reset", "use the tracking number", "call the bank today", "check the spam folder",
             "restart the router now", "update the app first"]
    rejected = [f"great question ! many people ask about this . {f} ." for f in facts]
    chosen = [f"{f} ." for f in facts] + ["many people ask about this ."]
    learned = learn_canned_phrases(rejected, chosen, PhraseSettings(ngram_max=3, min_z=1.0, min_doc_freq=5))
    phrases = [p["phrase"] for p in learned]
    assert phrases == ["great question", "many people ask about this"]  # 3-grams chained; facts balanced
    assert learned[1]["rejected"] == 6 and learned[1]["chosen"] == 1
    assert learn_canned_phrases(rejected, chosen, PhraseSettings(min_z=1.0, min_doc_freq=7)) == []
    assert len(learn_canned_phrases(rejected, chosen, PhraseSettings(min_z=1.0, top_k=1))) == 1


def test_phrase_files_load_and_bad_ones_are_refused(tmp_path) -> None:
    (tmp_path / "v1.json").write_text(json.dumps(["great question"]))
    (tmp_path / "LATEST").write_text("v1.json")
    assert load_phrase_list(tmp_path / "v1.json") == load_phrase_list(tmp_path) == ["great question"]
    for name, content in (("one.json", '"great question"'), ("blank.json", '["ok", " ! "]'), ("bad.json", "[")):
        (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match=name):
            load_phrase_list(tmp_path / name)
    with pytest.raises(ValueError, match="does not exist"):
        load_phrase_list(tmp_path / "missing.json")


def test_ppo_reward_reads_a_phrase_file_and_names_the_field_when_bad(tmp_path) -> None:
    from actors.ppo_config import PPOError, RewardSection

    (tmp_path / "own.json").write_text(json.dumps(["as an ai assistant"]))
    assert RewardSection().phrases() == []  # generic default: no list
    reward = RewardSection(canned_phrases=["great question"], canned_phrases_file=str(tmp_path / "own.json"))
    assert reward.phrases() == ["great question", "as an ai assistant"]
    (tmp_path / "bad.json").write_text(json.dumps({"great question": 1}))
    for bad in ("bad.json", "missing.json"):
        with pytest.raises(PPOError, match=f"reward.canned_phrases_file=.*{bad}"):
            RewardSection(canned_phrases_file=str(tmp_path / bad)).phrases()


def test_the_loop_hands_curates_learned_list_to_ppo_unless_the_user_has_one() -> None:
    from jobs.loop import LoopConfig, stage_configs

    stages = stage_configs(LoopConfig(output_dir="runs/x"))
    assert stages.ppo.reward.canned_phrases_file == f"{stages.curate.output_dir}/phrases"
    assert stages.curate.phrases.enabled
    own = stage_configs(LoopConfig(output_dir="runs/x", ppo={"reward": {"canned_phrases_file": "mine.json"}}))
    assert own.ppo.reward.canned_phrases_file == "mine.json"
    off = stage_configs(LoopConfig(output_dir="runs/x", phrases={"enabled": False}))
    assert off.ppo.reward.canned_phrases_file is None
