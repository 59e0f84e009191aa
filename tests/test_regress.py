"""The behavioural regression suite: each check on hand-made answers, the suite schema's errors, pass rates, the
regression rule, the starter suite, the loop's gate wiring, and `rlhf-ray regress` / the canary's precondition
blocking a candidate that breaks a case its baseline passes (two tiny checkpoints whose behaviour is set by hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from rlhf_ray.evaluation.regression import (
    Case,
    SuiteError,
    answer_checks,
    case_outcome,
    check_contains,
    check_json_schema,
    check_judge_min,
    check_max_words,
    check_not_contains,
    check_refuses,
    check_regex,
    load_suite,
    parse_suite,
    regression_verdict,
)

ROOT = Path(__file__).resolve().parents[1]
STARTER = ROOT / "suites" / "world_starter.yaml"


def empty_is_best(prompt: str, response: str, meta: dict) -> float:
    """A rule judge for the tests: 1 for saying nothing, 0 otherwise."""
    return 0.0 if response.strip() else 1.0


# ---- checks --------------------------------------------------------------------------------------------------------

def test_each_check_on_hand_made_answers() -> None:
    assert check_contains("Open SETTINGS, then Reset.", ["settings", "reset"])
    assert not check_contains("Open settings.", ["settings", "reset"])
    assert check_not_contains("Open settings.", ["hope this helps"])
    assert not check_not_contains("Open settings. Hope This Helps", ["hope this helps"])
    assert check_regex("order 58213 shipped", r"\b\d{5}\b") and not check_regex("order shipped", r"\b\d{5}\b")
    assert check_regex("RESET", "(?i)reset")
    assert check_max_words("one two three", 3) and not check_max_words("one two three four", 3)
    assert check_refuses("I'm sorry, but I can't help with that.", True)
    assert not check_refuses("Open settings and press reset.", True)
    assert check_refuses("Open settings and press reset.", False)
    schema = {"type": "object", "properties": {"days": {"type": "integer"}}, "required": ["days"]}
    assert check_json_schema('{"days": 30}', schema)
    assert check_json_schema('Here it is:\n```json\n{"days": 30}\n```', schema)  # a fenced block counts
    assert not check_json_schema('{"days": "thirty"}', schema)
    assert not check_json_schema("thirty days", schema)
    assert check_judge_min(0.5, 0.5) and not check_judge_min(0.49, 0.5) and not check_judge_min(None, 0.0)


def test_a_case_applies_only_its_own_checks() -> None:
    case = Case.model_validate({"id": "c", "prompt": "q", "checks": {"contains": "30", "max_words": 4,
                                                                       "judge_min": 0.0}})
    assert case.checks.active() == ["contains", "max_words", "judge_min"]
    assert answer_checks(case.checks, "within 30 days", 0.2) == {"contains": True, "max_words": True,
                                                                  "judge_min": True}
    assert answer_checks(case.checks, "you have thirty days to ask for it", -1.0) == {
        "contains": False, "max_words": False, "judge_min": False}


def test_suite_errors_name_the_case_and_the_field() -> None:
    bad = {"name": "s", "cases": [
        {"id": "fine", "prompt": "q", "checks": {"max_words": 3}},
        {"id": "neg-words", "prompt": "q", "checks": {"max_words": -3}},
        {"id": "no-checks", "prompt": "q", "checks": {}},
        {"id": "bad-regex", "prompt": "q", "checks": {"regex": "("}},
        {"id": "ends-with-assistant", "messages": [{"role": "user", "content": "q"},
                                                   {"role": "assistant", "content": "a"}], "checks": {"refuses": True}},
        {"id": "both", "prompt": "q", "messages": [{"role": "user", "content": "q"}], "checks": {"refuses": True}},
        {"id": "bad-schema", "prompt": "q", "checks": {"json_schema": {"type": 12}}},
    ]}
    with pytest.raises(SuiteError) as raised:
        parse_suite(bad, "bad.yaml")
    text = str(raised.value)
    assert "case 'fine'" not in text
    assert "case 'neg-words' (cases[1]) field checks.max_words: Input should be greater than or equal to 1; got -3" \
        in text
    assert "case 'no-checks' (cases[2]) field checks" in text and "at least one check" in text
    assert "case 'bad-regex' (cases[3]) field checks.regex" in text and "not a valid regular expression" in text
    assert "case 'ends-with-assistant' (cases[4])" in text and "must end with a non-empty user turn" in text
    assert "case 'both' (cases[5])" in text and "exactly one of prompt or messages" in text
    assert "case 'bad-schema' (cases[6]) field checks.json_schema" in text and "not a valid JSON schema" in text
    with pytest.raises(SuiteError, match=r"case ids must be unique; repeated: \['a'\]"):
        parse_suite({"name": "s", "cases": [{"id": "a", "prompt": "q", "checks": {"refuses": True}}] * 2})
    with pytest.raises(SuiteError, match=r"accepted_changes names no case of the suite: \['zz'\]"):
        parse_suite({"name": "s", "cases": [{"id": "a", "prompt": "q", "checks": {"refuses": True}}],
                     "accepted_changes": {"zz": "renamed"}})
    with pytest.raises(SuiteError, match=r"field checks\.max_word"):
        parse_suite({"name": "s", "cases": [{"id": "a", "prompt": "q", "checks": {"max_word": 3}}]})


# ---- pass rates and the regression rule ----------------------------------------------------------------------------

def test_a_case_passes_at_the_threshold_over_greedy_and_sampled_answers() -> None:
    case = Case.model_validate({"id": "short", "prompt": "q", "checks": {"max_words": 2, "refuses": False}})
    answers = ["open settings", "open the settings page", "press reset", "I cannot help with that."]
    outcome = case_outcome(case, answers, threshold=0.5)
    assert (outcome.passes, outcome.runs, outcome.pass_rate, outcome.passed) == (2, 4, 0.5, True)
    assert outcome.greedy_passed and outcome.greedy_failed_checks == ()
    assert outcome.check_pass_rates == {"max_words": 0.5, "refuses": 0.75}
    assert not case_outcome(case, answers, threshold=0.75).passed
    greedy_fails = case_outcome(case, list(reversed(answers)), threshold=0.5)
    assert not greedy_fails.greedy_passed and greedy_fails.greedy_failed_checks == ("max_words", "refuses")
    with pytest.raises(ValueError, match="case 'short': 1 judge scores for 4 answers"):
        case_outcome(case, answers, 0.5, [0.1])


def test_the_regression_rule() -> None:
    baseline = {"kept": True, "broken": True, "accepted": True, "fixed": False, "still_bad": False}
    candidate = {"kept": True, "broken": False, "accepted": False, "fixed": True, "still_bad": False}
    verdict = regression_verdict(candidate, baseline, {"accepted"})
    assert verdict.statuses == {"kept": "passing", "broken": "regressed", "accepted": "regressed",
                                "fixed": "fixed", "still_bad": "failing"}
    assert (verdict.blocking, verdict.accepted, verdict.verdict) == (("broken",), ("accepted",), "fail")
    assert regression_verdict(candidate, baseline, {"accepted", "broken"}).verdict == "pass"
    # a case failing on both is no regression; without a baseline every failing case not accepted blocks
    assert regression_verdict({"a": False}, {"a": False}).verdict == "pass"
    alone = regression_verdict(candidate, None, {"accepted"})
    assert (alone.blocking, alone.accepted, alone.has_baseline) == (("broken", "still_bad"), ("accepted",), False)
    with pytest.raises(ValueError, match=r"only in one: \['extra'\]"):
        regression_verdict({"a": True, "extra": True}, {"a": True})


# ---- the starter suite ---------------------------------------------------------------------------------------------

def test_the_starter_suite_covers_its_kinds_and_copies_nothing_of_the_simulator() -> None:
    from rlhf_ray.sim.catalog import CLOSER_POOL, FILLER_SENTENCES, HEDGE_POOL, OPENER_POOL, SYSTEM_PROMPT, TOPICS
    from rlhf_ray.sim.responses import REFUSAL_SENTENCE

    suite = load_suite(STARTER)
    header = STARTER.read_text().split("\nname:")[0].lower()
    assert "gates" in header and "never a training signal" in header
    kinds = {name for case in suite.cases for name in case.checks.active()}
    assert {"refuses", "not_contains", "contains", "max_words"} <= kinds
    assert {case.checks.refuses for case in suite.cases} == {True, False, None}  # harmful refused, benign not

    def words(text: str) -> str:
        return " ".join(re.findall(r"[a-z0-9']+", text.lower()))

    hidden = [*OPENER_POOL, *CLOSER_POOL, *HEDGE_POOL, *FILLER_SENTENCES, REFUSAL_SENTENCE, SYSTEM_PROMPT]
    intents = [intent for topic in TOPICS for intent in topic.intents]
    terms = [fact.term for intent in intents for fact in intent.facts]
    questions = [q.replace("{item}", item) for intent in intents for q in intent.questions for item in intent.items]
    for case in suite.cases:
        for phrase in case.checks.not_contains:
            assert not any(words(phrase) in words(h) or words(h) in words(phrase) for h in hidden), phrase
        for needle in case.checks.contains:
            assert words(needle) not in {words(t) for t in terms}, needle
        assert words(case.text) not in {words(q) for q in questions}, case.id


# ---- the loop's gate -----------------------------------------------------------------------------------------------

def test_the_loop_runs_the_suite_in_its_gate_and_a_blocking_regression_stops_it(tmp_path: Path) -> None:
    from jobs.loop import check_gates
    from jobs.loop_config import LoopConfig
    from jobs.loop_stages import stage_configs, stage_extras
    from rlhf_ray.lineage import LineageRegistry

    suite = tmp_path / "suite.yaml"
    suite.write_text(STARTER.read_text())
    config = LoopConfig(output_dir=str(tmp_path / "run"), gate={"regression_suite": str(suite),
                                                                 "regression": {"runs": {"samples": 2}}})
    stages = stage_configs(config, incumbent=str(tmp_path / "serving"))
    assert stages.regression.policy_path == stages.gate.candidate_path
    assert stages.regression.baseline_path == stages.gate.incumbent_path == str(tmp_path / "serving")
    assert stages.regression.judge_path == stages.gate.judge_path  # the gate's judge unless the suite names one
    assert stages.regression.runs.samples == 2 and stages.regression.output_dir.endswith("/gate/regression")
    assert stage_configs(LoopConfig(output_dir=str(tmp_path / "run"))).regression is None
    extras = stage_extras(stages, "gate")
    assert stage_extras(stages, "ppo") == {} and set(extras) == {"regression.config", "regression.suite"}
    suite.write_text(STARTER.read_text() + "\n# edited\n")
    assert stage_extras(stages, "gate")["regression.suite"] != extras["regression.suite"]  # a new suite re-runs

    registry = LineageRegistry(str(tmp_path / "lineage"))
    passed = {"verdict": "pass", "failed_checks": [], "report": "gate.json"}
    assert check_gates(config, "gate", {"gate": {**passed, "regression_verdict": "pass"}}, registry, True) is None
    stop = check_gates(config, "gate", {"gate": {**passed, "regression_verdict": "fail",
                                                 "regression_blocking": ["help-bread"],
                                                 "regression_report": "regress.json"}}, registry, True)
    assert stop == ("regression suite failed: cases ['help-bread'] pass on the incumbent and fail on the candidate "
                    "(report regress.json)")


# ---- the job and the canary on two tiny checkpoints ----------------------------------------------------------------

def _forced(base: str, token_id: int, out: Path) -> str:
    """A copy of `base` that always writes `token_id`: one residual dimension held at a constant (its embedding
    column set, every layer's writes to it zeroed) is all the final norm passes on, and only `token_id`'s head row
    reads it, so that token wins whatever the prompt (greedy, and sampled at any moderate temperature)."""
    import torch
    from transformers import AutoModelForCausalLM

    from rlhf_ray.models.loading import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(base, tie_word_embeddings=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = 100.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
        head = model.get_output_embeddings().weight
        head.zero_()
        head[token_id, 0] = 10.0
    model.save_pretrained(out)
    load_tokenizer(base).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """`quiet` ends every answer at once (its forced token is eos); `chatty` repeats one word piece."""
    from rlhf_ray.models import init_model
    from rlhf_ray.models.loading import load_tokenizer

    root = tmp_path_factory.mktemp("regress")
    base = str(init_model(["how do i get a refund ? open settings , then ask for a refund ."] * 40, root / "base",
                          "tiny", seed=0).path)
    tokenizer = load_tokenizer(base)
    word = tokenizer.encode("refund", add_special_tokens=False)[0]
    suite = {"name": "tiny", "cases": [
        {"id": "quiet", "prompt": "how do i get a refund ?",
         "checks": {"not_contains": [tokenizer.decode([word]).strip()], "refuses": False}},
        {"id": "judged", "prompt": "open settings", "checks": {"judge_min": 0.5}},
        {"id": "says-nothing", "messages": [{"role": "system", "content": "be brief ."},
                                            {"role": "user", "content": "a refund ?"}], "checks": {"regex": "^$"}},
        {"id": "short", "prompt": "refund ?", "checks": {"max_words": 50}},
    ], "accepted_changes": {"says-nothing": "the new policy is meant to answer"}}
    (root / "suite.yaml").write_text(yaml.safe_dump(suite))
    return {"quiet": _forced(base, tokenizer.eos_token_id, root / "quiet"),
            "chatty": _forced(base, word, root / "chatty"), "suite": str(root / "suite.yaml"), "root": str(root)}


def test_the_command_line_sets_the_job_and_a_judge_min_case_needs_a_judge(policies: dict[str, str]) -> None:
    from jobs.cli import build_parser
    from jobs.common import resolve_config
    from jobs.regress import RegressConfig, RegressError, checked_suite

    args = build_parser().parse_args(["regress", "--policy", "p", "--baseline", "b", "--suite", policies["suite"],
                                      "--judge", "pkg.mod:fn", "--out", "o", "runs.samples=3"])
    config = resolve_config(RegressConfig, args, {"policy": "policy_path", "baseline": "baseline_path",
                                                  "suite": "suite", "judge": "judge_path", "out": "output_dir"})
    assert (config.policy_path, config.baseline_path, config.judge_path, config.output_dir, config.runs.samples) == (
        "p", "b", "pkg.mod:fn", "o", 3)
    assert args.entry.__module__ == "jobs.regress"
    with pytest.raises(RegressError, match=r"cases \['judged'\] have judge_min checks; pass --judge"):
        checked_suite(config.model_copy(update={"judge_path": None}))


def test_a_variant_file_is_a_policy_with_its_system_prompt_and_sampling(policies: dict[str, str],
                                                                       tmp_path: Path) -> None:
    from pydantic import ValidationError

    from jobs.regress import RegressConfig, _conversation, _lineage_id, _sampled
    from rlhf_ray.lineage import LineageRegistry
    from rlhf_ray.serving.variants import VariantFile

    terse = tmp_path / "terse.yaml"
    terse.write_text(yaml.safe_dump({"model_path": policies["quiet"], "system_prompt": "answer in five words .",
                                     "sampling": {"temperature": 0.2, "max_tokens": 6}}))
    config = RegressConfig(policy_path=str(terse), suite=policies["suite"])
    variant = config.policy_variant
    assert config.policy_path == policies["quiet"] and variant.system_prompt == "answer in five words ."
    cases = {case.id: case for case in load_suite(policies["suite"]).cases}
    assert _conversation(cases["quiet"], variant) == [{"role": "system", "content": "answer in five words ."},
                                                      {"role": "user", "content": "how do i get a refund ?"}]
    assert _conversation(cases["says-nothing"], variant)[0] == {"role": "system",  # the case's own system turn after
                                                                "content": "answer in five words .\n\nbe brief ."}
    assert _conversation(cases["quiet"], VariantFile()) == "how do i get a refund ?"
    assert _sampled(config, variant) == {"max_new_tokens": 6, "temperature": 0.2, "top_p": 1.0, "seed": 0}
    registry = LineageRegistry(str(tmp_path / "lineage"))
    checkpoint = _lineage_id(registry, VariantFile(model_path=policies["quiet"]), "candidate")
    served = registry.get(_lineage_id(registry, variant, "candidate"))
    assert served.kind == "variant" and checkpoint in served.parents and registry.get(checkpoint).kind == "checkpoint"
    (tmp_path / "bare.yaml").write_text("system_prompt: hi .\n")
    with pytest.raises(ValidationError, match="names no model_path"):
        RegressConfig(baseline_path=str(tmp_path / "bare.yaml"))


def test_the_canary_refuses_to_deploy_a_candidate_that_breaks_a_passing_case(ray_cluster, policies: dict[str, str],
                                                                             tmp_path: Path) -> None:
    """`rlhf-ray canary` with `regression_suite` runs `regress` (the canary vs the incumbent) before deploying."""
    from jobs.canary import CanaryConfig, CanaryError, run
    from rlhf_ray.lineage import LineageRegistry
    from rlhf_ray.reporting import build_report

    out = tmp_path / "canary"
    config = CanaryConfig(incumbent_path=policies["quiet"], canary_path=policies["chatty"], output_dir=str(out),
                          regression_suite=policies["suite"],
                          regression={"judge_path": "tests.test_regress:empty_is_best", "runs": {"samples": 2,
                                      "pass_threshold": 1.0}, "generation": {"max_new_tokens": 8}},
                          pseudonyms={"key_file": str(tmp_path / "key"), "create_key_file": True},
                          wandb={"mode": "disabled"})
    with pytest.raises(CanaryError, match=r"cases \['quiet', 'judged'\] pass on the incumbent and fail on the "
                                          r"canary; not deploying"):
        run(config)
    report = json.loads((out / "regression" / "regress.json").read_text())
    assert report["verdict"] == "fail" and report["blocking"] == ["quiet", "judged"]
    assert report["regressions"] == ["quiet", "judged", "says-nothing"] and report["accepted"] == ["says-nothing"]
    assert report["pass_rate/baseline"] == 1.0 and report["pass_rate/candidate"] == 0.25
    rows = {row["case"]: row for row in report["case_table"]}
    assert rows["quiet"]["status"] == "regressed" and rows["quiet"]["blocks"]
    assert rows["quiet"]["candidate_failed_checks"] == ["not_contains"] and rows["quiet"]["candidate_answer"]
    assert rows["says-nothing"]["accepted"] == "the new policy is meant to answer"
    assert not rows["says-nothing"]["blocks"]
    assert rows["short"]["status"] == "passing"
    assert report["outcomes"]["candidate"]["quiet"]["runs"] == 3  # greedy + 2 sampled
    registry = LineageRegistry(str(out / "lineage"))
    event = [e for e in registry.events(report["policy_id"]) if e.event == "regression"][-1]
    assert event.payload["blocking"] == ["quiet", "judged"] and event.payload["baseline_id"] == report["baseline_id"]
    assert [r.kind for r in registry.records() if r.kind == "deployment"] == []  # refused: nothing was deployed
    assert "Regression suite" in build_report(out) and "verdict: fail (blocking: quiet, judged)" in build_report(out)
