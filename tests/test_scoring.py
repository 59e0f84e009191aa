"""Rule penalties (hand-computed cases), the reward scorer and the reference model, in-process and as Ray actors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from actors.scoring import ReferenceModel, RewardScorer
from rlhf_ray.algos.logprobs import token_logprobs
from rlhf_ray.algos.penalties import (
    RulePenaltySettings,
    canned_phrase_hits,
    canned_phrase_penalty,
    keyword_coverage,
    repeated_sentences,
    verbosity_penalty,
)
from rlhf_ray.models import init_model, load_causal_lm, load_tokenizer
from rlhf_ray.sim import World, WorldConfig
from rlhf_ray.training.encoding import encode_chat
from rlhf_ray.training.reward_model import RewardModel

PROMPTS = ["where is my book package ?", "how do i reset my email password ?", "hi"]
RESPONSES = ["use the tracking number from your confirmation .", "open settings in the email app .", "hello ."]
RM_MEAN, RM_STD = 0.25, 2.0


# ---------------------------------------------------------------- penalties: pure functions, hand-computed


def test_verbosity_penalty_is_zero_up_to_the_target_then_linear() -> None:
    # target 20, coef 0.5: 10 → 0, 20 → 0, 30 → 0.5·10/20 = 0.25, 50 → 0.5·30/20 = 0.75
    out = verbosity_penalty([10, 20, 30, 50], target_length=20, coef=0.5)
    assert out.dtype == torch.float32 and out.shape == (4,)
    assert out.tolist() == [0.0, 0.0, 0.25, 0.75]
    assert verbosity_penalty(torch.tensor([100]), 20, 0.0).tolist() == [0.0]
    assert verbosity_penalty([], 20, 1.0).shape == (0,)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"target_length": 0, "coef": 1.0}, "target_length"),
    ({"target_length": -5, "coef": 1.0}, "target_length"),
    ({"target_length": 10, "coef": -0.1}, "coef"),
    ({"target_length": 10, "coef": float("nan")}, "coef"),
])
def test_verbosity_penalty_bad_arguments_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        verbosity_penalty([5, 10], **kwargs)


def test_verbosity_penalty_rejects_negative_lengths() -> None:
    with pytest.raises(ValueError, match="lengths"):
        verbosity_penalty([5, -1], 10, 1.0)


def test_canned_phrases_are_counted_case_whitespace_and_punctuation_insensitively() -> None:
    phrases = ["great question", "i hope this helps"]
    texts = [
        "Great question! The answer is 4. I hope this helps.",
        "great  QUESTION , great question !  i hope   this helps !",  # repeated phrase counts each time
        "A great questionnaire about hopes.",  # word boundaries: no partial-word match
        "",
    ]
    assert canned_phrase_hits(texts, phrases) == [2, 3, 0, 0]
    assert canned_phrase_penalty(texts, phrases, coef=0.25).tolist() == [0.5, 0.75, 0.0, 0.0]
    assert canned_phrase_hits(texts, []) == [0, 0, 0, 0]


def test_overlapping_phrases_count_a_span_once() -> None:
    assert canned_phrase_hits(["I hope this helps!", "hope this helps"], ["hope this helps", "i hope this helps"]) \
        == [1, 1]


def test_canned_phrase_bad_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="coef"):
        canned_phrase_penalty(["x"], ["great question"], coef=-1.0)
    with pytest.raises(ValueError, match=r"phrases\[1\]"):
        canned_phrase_hits(["x"], ["great question", "  "])
    with pytest.raises(ValueError, match="phrases"):
        canned_phrase_hits(["x"], "great question")


def test_repeated_sentences_are_counted_and_penalised() -> None:
    texts = ["store it cold . store it cold ! eat it soon .", "one . two . three", ""]
    assert repeated_sentences(texts) == [1, 0, 0]
    terms = RulePenaltySettings(repetition_coef=0.5).penalties(texts)
    assert terms["repeats"] == [1, 0, 0] and terms["repetition_penalty"].tolist() == [0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="repetition_coef"):
        RulePenaltySettings(repetition_coef=-1.0)


def test_keyword_coverage_counts_presence_not_repetition() -> None:
    texts = ["Open Settings, then use the reset link.", "settings settings settings settings", "nothing here"]
    assert keyword_coverage(texts, ["settings", "reset link"]).tolist() == [1.0, 0.5, 0.0]
    assert keyword_coverage(texts, ["settings", "reset link"], scale=2.0).tolist() == [2.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="keywords"):
        keyword_coverage(texts, [])


@pytest.mark.parametrize(("field", "value"), [
    ("verbosity_target_words", 0), ("verbosity_coef", -1.0), ("canned_coef", -0.5), ("canned_phrases", "one"),
])
def test_settings_reject_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        RulePenaltySettings(**{field: value})


def test_settings_are_frozen_and_compute_all_terms() -> None:
    settings = RulePenaltySettings(verbosity_target_words=4, verbosity_coef=1.0, canned_phrases=["great question"],
                                   canned_coef=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.canned_coef = 1.0  # type: ignore[misc]
    assert settings.canned_phrases == ("great question",)
    terms = settings.penalties(["great question ! the answer is four", "four"])
    assert terms["words"] == [7, 1]
    assert terms["verbosity_penalty"].tolist() == [0.75, 0.0]  # (7 − 4) / 4
    assert terms["canned_hits"] == [1, 0]
    assert terms["canned_penalty"].tolist() == [0.5, 0.0]


def test_default_settings_penalise_nothing() -> None:
    terms = RulePenaltySettings().penalties(["great question ! " + "word " * 500])
    assert RulePenaltySettings().canned_phrases == ()
    assert [float(terms[k].sum()) for k in ("verbosity_penalty", "canned_penalty", "repetition_penalty")] == [0.0] * 3


# ---------------------------------------------------------------- scorer configuration (no model needed)


def test_scorer_needs_exactly_one_reward() -> None:
    with pytest.raises(ValueError, match="reward_model_path"):
        RewardScorer(None, RulePenaltySettings(), max_length=64)
    with pytest.raises(ValueError, match="not both"):
        RewardScorer("somewhere", RulePenaltySettings(), max_length=64, rule_reward={"keywords": ["a"]})
    with pytest.raises(ValueError, match="'kw'"):
        RewardScorer(None, RulePenaltySettings(), max_length=64, rule_reward={"kw": ["a"]})
    with pytest.raises(ValueError, match=r"rule_reward\.keywords"):
        RewardScorer(None, RulePenaltySettings(), max_length=64, rule_reward={"keywords": []})
    with pytest.raises(ValueError, match="num_threads"):
        RewardScorer(None, None, 64, rule_reward={"keywords": ["a"]}, num_threads=0)


def test_rule_reward_scorer_without_a_model() -> None:
    scorer = RewardScorer(None, {"verbosity_target_words": 4, "verbosity_coef": 1.0, "canned_coef": 0.5,
                                 "canned_phrases": ["great question"]},
                          max_length=64, rule_reward={"keywords": ["settings", "reset link"], "scale": 2.0})
    out = scorer.score(["q", "q"], ["Great question! Open settings and use the reset link.", "open settings"])
    assert out["rm"] == [2.0, 1.0]
    assert out["words"] == [9, 2] and out["canned_hits"] == [1, 0]
    assert out["verbosity_penalty"] == [1.25, 0.0] and out["canned_penalty"] == [0.5, 0.0]
    assert out["total"] == [0.25, 1.0]
    assert scorer.timing()["calls"] == 1.0
    with pytest.raises(ValueError, match="same length"):
        scorer.score(["q"], [])


# ---------------------------------------------------------------- models: tiny RM and reference as Ray actors


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny causal LM and a reward model built from it (with non-trivial normalisation statistics)."""
    root = tmp_path_factory.mktemp("scoring")
    card = init_model(World(WorldConfig(num_prompts=40), 0).corpus(), root / "policy", "tiny", seed=0)
    reward_model = RewardModel.from_causal_lm(card.path, seed=0)
    reward_model.mean, reward_model.std = RM_MEAN, RM_STD
    reward_model.save_pretrained(root / "rm")
    load_tokenizer(card.path).save_pretrained(root / "rm")
    return {"policy": str(card.path), "rm": str(root / "rm")}


@pytest.mark.ray
def test_reward_scorer_actor_scores_with_the_reward_model(ray_cluster, models: dict[str, str]) -> None:
    settings = RulePenaltySettings(verbosity_target_words=8, verbosity_coef=0.5, canned_coef=1.0,
                                   canned_phrases=("great question", "i hope this helps", "feel free to ask"))
    scorer = ray_cluster.remote(num_cpus=0.25)(RewardScorer).remote(models["rm"], settings, 128, batch_size=2,
                                                                    num_threads=1)
    assert ray_cluster.get(scorer.ready.remote())
    padded = "great question ! " + RESPONSES[0] + " i hope this helps ! feel free to ask ."
    prompts, responses = [*PROMPTS, PROMPTS[0]], [*RESPONSES, padded]
    out = ray_cluster.get(scorer.score.remote(prompts, responses))

    assert set(out) == {"rm", "verbosity_penalty", "canned_penalty", "repetition_penalty", "canned_hits", "repeats",
                        "words", "total"}
    assert all(isinstance(v, list) and len(v) == len(prompts) for v in out.values())
    assert out["total"] == [r - v - c - p for r, v, c, p in zip(out["rm"], out["verbosity_penalty"],
                                                                 out["canned_penalty"], out["repetition_penalty"],
                                                                 strict=True)]
    assert out["canned_hits"] == [0, 0, 0, 3] and out["canned_penalty"][3] == 3.0
    assert out["words"][0] == 8 and out["verbosity_penalty"][0] == 0.0
    assert out["verbosity_penalty"][3] == pytest.approx(0.5 * (out["words"][3] - 8) / 8)
    assert out["total"][3] < out["total"][0]

    # rm is the normalised reward of the same model computed here, micro-batching notwithstanding
    reference = RewardModel.load(models["rm"]).eval()
    batch = encode_chat(load_tokenizer(models["rm"]), prompts, responses, 128)
    with torch.no_grad():
        raw = reference(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(torch.tensor(out["rm"]), (raw - RM_MEAN) / RM_STD, atol=1e-5)
    timing = ray_cluster.get(scorer.timing.remote())
    assert timing["calls"] == 1.0 and timing["last_s"] > 0
    ray_cluster.kill(scorer)


@pytest.mark.ray
def test_reference_actor_logprobs_match_a_direct_computation(ray_cluster, models: dict[str, str]) -> None:
    batch = encode_chat(load_tokenizer(models["policy"]), PROMPTS, RESPONSES, 128)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (mask == 0).any() and (mask[0] == 1).all()  # right padding in rows 1–2, none in row 0
    reference = ray_cluster.remote(num_cpus=0.25)(ReferenceModel).remote(models["policy"], micro_batch_size=2,
                                                                         num_threads=1)
    assert ray_cluster.get(reference.ready.remote())
    out = ray_cluster.get(reference.logprobs.remote(ids, mask))

    model = load_causal_lm(models["policy"]).eval()
    with torch.no_grad():
        direct = token_logprobs(model(input_ids=ids, attention_mask=mask).logits, ids)
    assert out.shape == direct.shape == (len(PROMPTS), ids.shape[1] - 1) and out.dtype == torch.float32
    real = mask[:, 1:].bool()
    assert torch.allclose(out[real], direct[real], atol=1e-5)
    assert torch.allclose(out[0], direct[0], atol=1e-5)  # a row without padding matches at every column
    assert (out <= 0).all()
    timing = ray_cluster.get(reference.timing.remote())
    assert timing["calls"] == 1.0 and timing["last_s"] > 0
    ray_cluster.kill(reference)


def test_reference_logprobs_do_not_depend_on_the_padding_side(models: dict[str, str]) -> None:
    """A left-padded row (as HF generate returns rollouts) gets the log-probs of the same row unpadded."""
    reference = ReferenceModel(models["policy"], micro_batch_size=4)
    batch = encode_chat(load_tokenizer(models["policy"]), PROMPTS[:2], RESPONSES[:2], 128)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    n = int(mask[1].sum())
    pad = ids.shape[1] - n
    left_ids = torch.cat([ids[1, n:], ids[1, :n]]).unsqueeze(0)
    left_mask = torch.cat([mask[1, n:], mask[1, :n]]).unsqueeze(0)
    alone = reference.logprobs(ids[1:2, :n], mask[1:2, :n])
    left = reference.logprobs(left_ids, left_mask)
    assert pad > 0 and torch.allclose(left[0, pad:], alone[0], atol=1e-5)
    assert reference.logprobs(ids[:0], mask[:0]).shape == (0, ids.shape[1] - 1)
    assert not any(p.requires_grad for p in reference.model.parameters()) and not reference.model.training
