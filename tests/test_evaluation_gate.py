"""The offline gate: interval maths against statsmodels and hand sums, the verdict's checks, answer judging in the
world, and `rlhf-ray evaluate` end to end (SFT policy vs the untrained model, judged by the session's RM)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from rlhf_ray.evaluation.answers import monitor_figures, rubric_acceptance, user_acceptance
from rlhf_ray.evaluation.gate import (
    GateThresholds,
    PolicyFigures,
    WinRate,
    bootstrap_interval,
    gate_verdict,
    non_inferior,
    policy_figures,
    superior,
    wilson_interval,
    win_rate,
)
from rlhf_ray.inputs.world import WorldOracle
from rlhf_ray.sim import World, WorldConfig


@pytest.mark.parametrize(("successes", "n"), [(7, 20), (0, 10), (10, 10), (55, 100), (3.5, 9)])
def test_wilson_matches_statsmodels(successes: float, n: int) -> None:
    from statsmodels.stats.proportion import proportion_confint

    low, high = wilson_interval(successes, n)
    expected = proportion_confint(successes, n, alpha=0.05, method="wilson")
    assert (low, high) == pytest.approx(expected, abs=1e-9)
    assert 0.0 <= low <= successes / n <= high <= 1.0


@pytest.mark.parametrize(("args", "message"), [((1, 0), "n must be an integer ≥ 1"), ((5, 4), r"successes must"),
                                               ((1, 4, 1.0), r"confidence must be in \(0, 1\)")])
def test_wilson_rejects_bad_input(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wilson_interval(*args)


def test_bootstrap_over_prompts_is_wider_than_wilson_when_answers_to_a_prompt_agree() -> None:
    """10 prompts × 10 answers each, every answer to a prompt judged alike: 10 independent outcomes, not 100."""
    groups = [[1.0] * 10 if i < 6 else [0.0] * 10 for i in range(10)]
    low, high = bootstrap_interval(groups, resamples=4000, seed=1)
    wilson = wilson_interval(60, 100)
    assert low < 0.6 < high and (high - low) > 1.5 * (wilson[1] - wilson[0])
    assert bootstrap_interval(groups, resamples=500, seed=3) == bootstrap_interval(groups, resamples=500, seed=3)
    with pytest.raises(ValueError, match="non-empty groups"):
        bootstrap_interval([[1.0], []])


def test_win_rate_counts_wins_losses_and_ties() -> None:
    wins = win_rate([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 2.05, 3.5, 4.0, 9.0], tie_margin=0.1)
    assert (wins.wins, wins.losses, wins.ties) == (1, 2, 2)
    assert wins.rate == pytest.approx((1 + 0.5 * 2) / 5)
    assert (wins.lower, wins.upper) == pytest.approx(wilson_interval(2.0, 5))
    clustered = win_rate([1, 1, 0, 0], [0, 0, 1, 1], groups=["p1", "p1", "p2", "p2"], method="bootstrap")
    assert clustered.rate == 0.5 and clustered.method == "bootstrap"
    with pytest.raises(ValueError, match="equal length"):
        win_rate([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        win_rate([math.nan], [1.0])
    with pytest.raises(ValueError, match="method must be"):
        win_rate([1.0], [0.0], method="t-test")  # type: ignore[arg-type]


def test_policy_figures_by_hand() -> None:
    figures = policy_figures(accept=[1.0, 0.5, 0.0, 0.5], unsafe=[0, 2, 0, 1], words=[10, 20, 30, 40],
                             tokens=[12, 24, 36, 48], seconds=4.0, utilities=[1.0, 0.0, -1.0, 0.5])
    assert figures.first_pass_yield == pytest.approx(2.0 / 4)
    assert figures.safety_misses == 2 and figures.mean_words == 25.0
    assert figures.tokens_per_accepted == pytest.approx(120 / 2.0)
    assert figures.seconds_per_accepted == pytest.approx(4.0 / 2.0)
    assert figures.true_utility == pytest.approx(0.125)
    nothing = policy_figures([0.0, 0.0], [0, 0], [5, 5], [6, 6], 1.0)
    assert math.isinf(nothing.tokens_per_accepted) and nothing.to_dict()["tokens_per_accepted"] is None
    with pytest.raises(ValueError, match="words must have one entry per answer"):
        policy_figures([1.0], [0], [1, 2], [1], 1.0)
    with pytest.raises(ValueError, match=r"accept must hold probabilities in \[0, 1\]"):
        policy_figures([1.5], [0], [1], [1], 1.0)


def _figures(fpy: float = 0.6, misses: int = 0, words: float = 30.0, tokens: float = 80.0) -> PolicyFigures:
    return PolicyFigures(answers=40, first_pass_yield=fpy, safety_misses=misses, mean_words=words,
                         tokens_per_accepted=tokens, seconds_per_accepted=1.0)


GOOD_WIN = WinRate(wins=30, losses=8, ties=2, rate=0.775, lower=0.62, upper=0.87, method="wilson")


def test_gate_passes_a_better_candidate_and_names_every_failed_check() -> None:
    thresholds = GateThresholds()
    passed = gate_verdict(_figures(), _figures(fpy=0.55), GOOD_WIN, thresholds)
    assert passed.verdict == "pass" and passed.failed_checks == []
    failing = {
        "non_inferiority": (_figures(), WinRate(10, 28, 2, 0.275, 0.16, 0.42, "wilson"), {}),
        "first_pass_yield": (_figures(fpy=0.40), GOOD_WIN, {}),
        "safety_misses": (_figures(misses=1), GOOD_WIN, {}),
        "mean_words": (_figures(words=46.0), GOOD_WIN, {}),
        "tokens_per_accepted": (_figures(tokens=125.0), GOOD_WIN, {}),
        "hacking:reward_up_quality_down": (_figures(), GOOD_WIN, {"reward_up_quality_down": "RM +0.5, utility -0.2"}),
    }
    for name, (candidate, wins, flags) in failing.items():
        result = gate_verdict(candidate, _figures(fpy=0.55), wins, thresholds, flags)
        assert result.verdict == "fail" and result.failed_checks == [name], name
    absolute = GateThresholds(min_first_pass_yield=0.7, max_safety_misses=0)
    assert gate_verdict(_figures(), _figures(fpy=0.55), GOOD_WIN, absolute).failed_checks == ["min_first_pass_yield"]
    report = gate_verdict(_figures(), _figures(), GOOD_WIN, thresholds, {"length_drift": "x1.6"}).to_dict()
    assert report["verdict"] == "pass" and report["hacking_flags"] == {"length_drift": "x1.6"}
    json.dumps(report, allow_nan=False)


def _wilson_wins(wins: int, n: int = 100) -> WinRate:
    low, high = wilson_interval(wins, n)
    return WinRate(wins, n - wins, 0, wins / n, low, high, "wilson")


def test_non_inferiority_and_superiority_by_hand() -> None:
    """Wilson lower bounds worked by hand (z = 1.959964, z² = 3.841459, n = 100, so z²/n = 0.0384146, z/(1+z²/n) =
    1.887458, z²/4n² = 0.0000960):
        55/100: centre = (0.55 + 0.0192073)/1.0384146 = 0.548150, half = 1.887458·√(0.002475 + 0.0000960) = 0.095704
                → lower = 0.452446
        60/100: centre = (0.60 + 0.0192073)/1.0384146 = 0.596301, half = 1.887458·√(0.0024 + 0.0000960) = 0.094298
                → lower = 0.502003
        50/100: centre = 0.5, half = 1.887458·√(0.0025 + 0.0000960) = 0.096168 → lower = 0.403832
    δ = 0.05 asks lower ≥ 0.45: 55 wins are non-inferior but not superior, 60 are both, 50 neither."""
    even, slightly_ahead, ahead = _wilson_wins(50), _wilson_wins(55), _wilson_wins(60)
    assert slightly_ahead.lower == pytest.approx(0.452446, abs=1e-6)
    assert ahead.lower == pytest.approx(0.502003, abs=1e-6)
    assert even.lower == pytest.approx(0.403832, abs=1e-6)
    assert (non_inferior(slightly_ahead, 0.05), superior(slightly_ahead)) == (True, False)
    assert (non_inferior(ahead, 0.05), superior(ahead)) == (True, True)
    assert (non_inferior(even, 0.05), superior(even)) == (False, False)
    assert not non_inferior(slightly_ahead, 0.04)  # 0.4524 < 0.46
    assert non_inferior(even, 0.1)  # 0.4038 ≥ 0.40
    boundary = WinRate(45, 55, 0, 0.45, 0.45, 0.55, "wilson")
    assert non_inferior(boundary, 0.05) and not superior(WinRate(50, 50, 0, 0.5, 0.5, 0.6, "wilson"))
    with pytest.raises(ValueError, match=r"margin must be in \[0, 0.5\]; got 0.6"):
        non_inferior(ahead, 0.6)

    # In the verdict: the check's limit is 0.5 − δ; superiority is reported, and a check only when required.
    result = gate_verdict(_figures(), _figures(), slightly_ahead, GateThresholds(non_inferiority_margin=0.05))
    check = next(c for c in result.checks if c.name == "non_inferiority")
    assert (check.value, check.limit, check.passed) == (pytest.approx(0.452446, abs=1e-6), 0.45, True)
    assert result.verdict == "pass" and result.superior is False and result.to_dict()["superior"] is False
    required = gate_verdict(_figures(), _figures(), slightly_ahead, GateThresholds(require_superiority=True))
    assert required.failed_checks == ["superiority"]
    assert gate_verdict(_figures(), _figures(), ahead, GateThresholds(require_superiority=True)).passed
    assert gate_verdict(_figures(), _figures(), even, GateThresholds()).failed_checks == ["non_inferiority"]
    with pytest.raises(ValidationError, match="non_inferiority_margin"):
        GateThresholds(non_inferiority_margin=0.7)


def test_gate_thresholds_reject_unknown_flags_and_keys() -> None:
    with pytest.raises(ValidationError, match="unknown reward-hacking flag"):
        GateThresholds(disqualifying_flags=("reward_goes_brr",))
    with pytest.raises(ValidationError, match="max_lenght_ratio"):
        GateThresholds(max_lenght_ratio=2.0)  # type: ignore[call-arg]


def test_answers_are_judged_by_the_user_model_and_a_rubric() -> None:
    world = World(WorldConfig(num_prompts=60), 0)
    spec = next(p for p in world.split("validation") if not p.refusal)
    complete = " ".join(fact.sentences[0] for fact in spec.facts)
    assert rubric_acceptance(world.utility(spec.prompt_id, complete)) == 1.0
    assert rubric_acceptance(world.utility(spec.prompt_id, "ok .")) == 0.0
    thresholds, temperatures = [u.satisfaction_threshold for u in world.users], [u.temperature for u in world.users]
    assert 0.0 < user_acceptance(-1.0, thresholds, temperatures) < user_acceptance(1.0, thresholds, temperatures) < 1.0
    assert user_acceptance(0.0, [0.0], [1.0]) == pytest.approx(0.5)  # σ(0)
    with pytest.raises(ValueError, match="non-empty and of one length"):
        user_acceptance(0.0, [0.0, 1.0], [1.0])
    oracle = WorldOracle(WorldConfig(num_prompts=60), 0)
    judged = oracle.judge_answers([spec.prompt_id] * 2, [complete, "ok ."])
    assert judged["accept"][0] > judged["accept"][1] and judged["utility"][0] > judged["utility"][1]
    assert oracle.evaluate([spec.prompt_id] * 2, [spec.text] * 2, [complete, "ok ."]) == {
        "true_utility": pytest.approx(float(np.mean(judged["utility"])))}
    with pytest.raises(ValueError, match="acceptance model must be"):
        oracle.judge_answers([spec.prompt_id], [complete], "vibes")  # type: ignore[arg-type]
    monitors = monitor_figures(["great question ! a . a .", "b is c ."], [2.0, 1.0], [0.1, 0.5])
    assert monitors["canned_rate"] == 0.5 and monitors["repeats"] == 0.5 and monitors["reward_length_corr"] == 1.0


# ---- the job ---------------------------------------------------------------------------------------------------

def _job_config(trained_policy: dict, world_assets: dict, tmp_path: Path, **overrides):
    from jobs.evaluate import EvaluateConfig
    from rlhf_ray.config import LineageConfig, RayConfig, WandbConfig

    settings = {"candidate_path": trained_policy["sft"]["model_dir"], "incumbent_path": world_assets["model"],
                "judge_path": trained_policy["rm"]["reward_model_dir"], "output_dir": str(tmp_path / "gate"),
                "world": WorldConfig(num_prompts=200), "prompts": 16, "samples_per_prompt": 2,
                "ray": RayConfig(num_cpus=2), "wandb": WandbConfig(mode="disabled"),
                "lineage": LineageConfig(root=str(Path(trained_policy["root"]) / "lineage")), **overrides}
    return EvaluateConfig(**settings)


@pytest.mark.ray
@pytest.mark.slow
def test_evaluate_gates_the_sft_policy_against_the_untrained_model(trained_policy, world_assets, tmp_path, capsys):
    from jobs.evaluate import run
    from rlhf_ray.lineage import LineageRegistry

    summary = run(_job_config(trained_policy, world_assets, tmp_path))
    assert summary["candidate_id"] == trained_policy["sft"]["sft_model_id"]  # the chain runs through the SFT record
    assert summary["gate/win_rate_lower"] > 0.5  # the judge prefers the fine-tuned policy, significantly
    assert summary["gate/first_pass_yield/candidate"] > summary["gate/first_pass_yield/incumbent"]
    assert summary["gate/true_utility/candidate"] > summary["gate/true_utility/incumbent"]
    assert summary["verdict"] == ("pass" if not summary["failed_checks"] else "fail")
    assert summary["loop_latency/trained_to_gated"] > 0
    report = json.loads(Path(summary["report"]).read_text())
    assert report["judge"] == trained_policy["rm"]["reward_model_id"] and len(report["examples"]) == 3
    assert {c["name"] for c in report["checks"]} >= {"non_inferiority", "first_pass_yield", "safety_misses",
                                                     "mean_words", "tokens_per_accepted",
                                                     "hacking:reward_up_quality_down"}
    assert report["split"] == "validation" and report["superior"] == (summary["gate/win_rate_lower"] > 0.5)
    registry = LineageRegistry(summary["lineage_root"])
    event = registry.events(summary["candidate_id"])[-1]
    assert event.event == "gate" and event.seq == summary["gate_event"]
    assert event.payload["verdict"] == summary["verdict"] and event.payload["incumbent_id"] == summary["incumbent_id"]
    assert registry.verify().ok
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert "gate/win_rate" in lines[-2]["metrics"] and lines[-1]["verdict"] == summary["verdict"]

    # the other way round, judged by the world's hidden utility: the untrained model must not ship
    reverse = run(_job_config(trained_policy, world_assets, tmp_path / "reverse", judge_by="oracle", judge_path=None,
                              prompts=8,
                              candidate_path=world_assets["model"], incumbent_path=trained_policy["sft"]["model_dir"]))
    assert reverse["verdict"] == "fail" and "non_inferiority" in reverse["failed_checks"]
    assert reverse["judge"] == "world-utility" and np.isfinite(reverse["gate/win_rate"])


def test_evaluate_without_policies_is_a_one_line_error(capsys) -> None:
    from jobs.cli import main

    assert main(["evaluate", "--incumbent", "somewhere", "--judge", "judge", "wandb.mode=disabled"]) == 1
    assert "evaluate needs --candidate DIR and --incumbent DIR" in capsys.readouterr().err


def test_the_judge_rm_is_the_default_judge_and_the_oracle_is_asked_for_by_name(capsys) -> None:
    """No judge path with the default `judge_by: judge_rm` fails before any Ray work, naming the field; the world's
    hidden utility judges only when the config says `oracle`, and never beside a judge path."""
    from jobs.cli import main
    from jobs.evaluate import GATE_SPLIT, EvaluateConfig
    from rlhf_ray.config import ConfigError, load_config

    assert main(["evaluate", "--candidate", "c", "--incumbent", "i", "wandb.mode=disabled"]) == 2
    err = capsys.readouterr().err
    assert "judge_by='judge_rm' needs judge_path" in err and "--judge DIR" in err
    assert EvaluateConfig(judge_by="oracle").judge_path is None
    assert EvaluateConfig(judge_path="j").judge_by == "judge_rm"
    with pytest.raises(ConfigError, match=r"judge_by='oracle' .* judge_path='j' is set too"):
        load_config(EvaluateConfig, None, ["judge_by=oracle", "judge_path=j"])
    assert GATE_SPLIT == "validation"  # the gate chooses; the test split is read only after every choice
