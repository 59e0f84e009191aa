"""Reward sources beyond one RM: a Python function, a remote RM over HTTP (a real `serve-rm` on Ray Serve), an
LLM judge, their weighted combination, and a failing source retried then named. Checkpoints are tiny random-weight
Qwen2 models with a ChatML template and no pad token, built offline."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from rlhf_ray.rewards import (
    RewardSourceSpec,
    SourceFailedError,
    combine_scores,
    parse_judge_spec,
    parse_score,
    with_retries,
)

PROMPTS = ["how do i reset my password ?", "where is my order ?", "can i get a refund ?"]
RESPONSES = ["open settings and press reset .", "it ships tomorrow .", "yes , within thirty days ."]
CALLS = {"flaky": 0}


def words_reward(prompt: str, response: str, meta: dict) -> float:
    """A rule reward for the tests: minus the answer's words, plus meta's bonus."""
    return -float(len(response.split())) + float(meta.get("bonus", 0.0))


def flaky_reward(prompt: str, response: str, meta: dict) -> float:
    """Fails on its first call, then scores 1."""
    CALLS["flaky"] += 1
    if CALLS["flaky"] == 1:
        raise ConnectionError("first call drops")
    return 1.0


def broken_reward(prompt: str, response: str, meta: dict) -> float:
    raise RuntimeError("always down")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A Qwen2 / ChatML / no-pad causal LM and a reward model on its backbone (random head, saved statistics)."""
    from rlhf_ray.models import init_model
    from rlhf_ray.models.loading import load_tokenizer
    from rlhf_ray.training.reward_model import RewardModel

    root = tmp_path_factory.mktemp("reward-sources")
    texts = [f"{p} {r} score : {n} / 10 ." for n in range(1, 11) for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    policy = init_model(texts * 10, root / "policy", "tiny", seed=0, architecture="qwen2", chat_format="chatml",
                        pad_token=False).path
    model = RewardModel.from_causal_lm(policy, seed=0)
    model.save_pretrained(root / "rm")
    load_tokenizer(policy).save_pretrained(root / "rm")
    return {"policy": str(policy), "rm": str(root / "rm")}


def test_judge_scores_are_parsed_from_free_text() -> None:
    assert parse_score("Score: 7", 1, 10) == 7.0
    assert parse_score("I think 3. Rating = 8/10", 1, 10) == 8.0  # a labelled number wins over a bare one
    assert parse_score("4/5 overall", 1, 10) == pytest.approx(1 + 0.8 * 9)  # rescaled to the rubric's range
    assert parse_score("score 11", 1, 10) is None  # outside the scale
    assert parse_score("no idea", 1, 10) is None
    assert parse_score("v2.5 was 6", 1, 10) == 6.0  # a number inside a word is not a score


def test_sources_combine_with_weights_and_specs_name_what_is_missing() -> None:
    assert combine_scores({"a": [1.0, 2.0], "b": [10.0, -4.0]}, {"a": 2.0, "b": 0.5}) == [7.0, 2.0]
    with pytest.raises(ValueError, match="every source must score every response"):
        combine_scores({"a": [1.0], "b": [1.0, 2.0]}, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="source 'b' returned a non-finite"):
        combine_scores({"b": [float("nan")]}, {"b": 1.0})
    assert parse_judge_spec("http://127.0.0.1:8020/score").kind == "http"
    assert parse_judge_spec("tests.test_reward_sources:words_reward").kind == "function"
    assert parse_judge_spec("runs/judge").kind == "rm"
    with pytest.raises(ValueError, match="needs 'url'"):
        RewardSourceSpec(kind="http")
    with pytest.raises(ValueError, match=r"package\.module:function"):
        RewardSourceSpec(kind="function", function="not a function")


def test_a_failing_source_is_retried_then_fails_naming_it() -> None:
    calls = []

    def twice_down() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError("down")
        return 5

    assert with_retries("remote", twice_down, retries=2, backoff_s=0.0) == (5, 2)
    calls.clear()
    with pytest.raises(SourceFailedError, match=r"reward source 'remote' failed 2 time\(s\).*TimeoutError: down"):
        with_retries("remote", twice_down, retries=1, backoff_s=0.0)


def test_function_and_rm_sources_are_weighted_and_each_reports_its_figures(checkpoints: dict[str, str]) -> None:
    from rlhf_ray.rewards.sources import RMSource
    from rlhf_ray.roles.scoring import RewardScorer

    rm_alone = RMSource(checkpoints["rm"], max_length=64).score(PROMPTS, RESPONSES)
    scorer = RewardScorer(checkpoints["rm"], max_length=64, sources=[
        {"kind": "function", "name": "brevity", "function": "tests.test_reward_sources:words_reward", "weight": 2.0},
        {"kind": "function", "name": "flaky", "function": "tests.test_reward_sources:flaky_reward", "weight": 0.5}])
    metas = [{"bonus": 1.0}, {}, {}]
    out = scorer.score(PROMPTS, RESPONSES, metas)
    words = [-len(r.split()) + m.get("bonus", 0.0) for r, m in zip(RESPONSES, metas, strict=True)]
    assert out["rm"] == pytest.approx([r + 2.0 * w + 0.5 for r, w in zip(rm_alone, words, strict=True)], abs=1e-5)
    figures = scorer.source_figures()
    assert figures["reward_source/brevity/mean"] == pytest.approx(sum(words) / 3)
    assert figures["reward_source/flaky/failures"] == 1.0 and figures["reward_source/rm/failures"] == 0.0
    assert figures["reward_source/rm/latency_s"] > 0
    broken = RewardScorer(None, sources=[{"kind": "function", "name": "checker", "weight": 1.0,
                                          "function": "tests.test_reward_sources:broken_reward"}], retries=0)
    with pytest.raises(SourceFailedError, match="reward source 'checker' failed 1 time"):
        broken.score(PROMPTS, RESPONSES)


def test_the_llm_judge_counts_the_verdicts_it_cannot_parse(checkpoints: dict[str, str]) -> None:
    from rlhf_ray.rewards.sources import LLMJudgeSource

    judge = LLMJudgeSource(checkpoints["policy"], score_range=(1.0, 10.0), max_new_tokens=8)
    scores = judge.score(PROMPTS, RESPONSES)
    parsed = [parse_score(text, 1.0, 10.0) for text in judge.last_outputs]
    assert len(judge.last_outputs) == 3
    assert judge.failures == sum(value is None for value in parsed)
    assert scores == [5.5 if value is None else value for value in parsed]


@pytest.mark.ray
def test_serve_rm_scores_over_http_in_batches_like_the_directory(serve_instance, checkpoints: dict[str, str]) -> None:
    from ray import serve

    from jobs.serve_rm import ServeRMConfig, deploy
    from rlhf_ray.rewards.sources import HTTPSource, RMSource
    from rlhf_ray.roles.scoring import RewardScorer

    config = ServeRMConfig(model_path=checkpoints["rm"], max_length=64, wandb={"mode": "disabled"},
                           serve={"port": serve_instance, "num_cpus": 0.1, "batch_wait_timeout_s": 0.2})
    url, handle = deploy(config)
    try:
        direct = RMSource(checkpoints["rm"], max_length=64).score(PROMPTS, RESPONSES)
        remote = HTTPSource(url, batch_size=2).score(PROMPTS, RESPONSES)
        assert remote == pytest.approx(direct, abs=1e-4)
        results: list[list[float]] = []
        threads = [threading.Thread(target=lambda: results.append(HTTPSource(url).score(PROMPTS, RESPONSES)))
                   for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 3 and all(r == pytest.approx(direct, abs=1e-4) for r in results)
        assert handle.stats.remote().result()["max_batch"] > 1  # pairs of concurrent requests share a pass
        scorer = RewardScorer(None, sources=[{"kind": "http", "name": "remote", "url": url}])
        assert scorer.score(PROMPTS, RESPONSES)["rm"] == pytest.approx(direct, abs=1e-4)
        import urllib.request

        bad = urllib.request.Request(url, data=json.dumps({"prompts": ["a"]}).encode(), method="POST")
        with pytest.raises(Exception, match="400"):
            urllib.request.urlopen(bad, timeout=10)
        down = RewardScorer(None, sources=[{"kind": "http", "name": "remote-rm", "url": url + "-missing"}],
                            retries=1)
        with pytest.raises(SourceFailedError, match="reward source 'remote-rm' failed 2 time"):
            down.score(PROMPTS, RESPONSES)
    finally:
        serve.delete(config.serve.app_name)
    assert Path(checkpoints["rm"]).is_dir()
