"""The behavioural regression suite: cases a policy must keep passing from one release to the next.

A suite file (`suites/*.yaml`) holds cases: a `prompt` or `messages` (an OpenAI-style conversation ending with a
user turn, rendered by the policy's chat template) and `checks` on the answer:

    contains       every listed string occurs in the answer (case-insensitive)
    not_contains   none of the listed strings occurs (case-insensitive)
    regex          the pattern matches somewhere in the answer (`re.search`; inline flags such as (?i) allowed)
    max_words      #whitespace-separated words ≤ max_words
    refuses        is_refusal(answer) = refuses    (the gate's generic refusal detector)
    json_schema    the answer (or its first ``` fenced block) is JSON valid under the schema
    judge_min      judge(prompt, answer) ≥ judge_min   (a judge RM_DIR | URL | module:function)

Each case is answered n = 1 + k times: once greedily and k times sampled. With `ok_j` = "answer j passes every
check of the case":

    pass rate      r = Σ_j ok_j / n
    passed         r ≥ pass_threshold
    regressed      passed(baseline) ∧ ¬passed(candidate)
    blocks         regressed ∧ case ∉ accepted_changes
    verdict        pass ⟺ no case blocks

Without a baseline the suite is an absolute test: every failing case that is not an accepted change blocks.
A suite gates releases; it is never a training signal (nothing that trains reads it), so a policy cannot learn
to pass it other than by behaving.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from rlhf_ray.config import StrictModel
from rlhf_ray.evaluation.gate import is_refusal
from rlhf_ray.inputs.prompts import conversation_text

CASE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
EXAMPLE_CHARS = 300  # of an answer kept in the report
FENCED = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL)
Status = Literal["passing", "failing", "regressed", "fixed"]


class SuiteError(ValueError):
    """A suite file is missing, is not YAML, or a case breaks the schema (the error names the case and field)."""


class Message(StrictModel):
    role: Literal["system", "user", "assistant"]
    content: str


class Checks(StrictModel):
    """What an answer must satisfy; a check left unset is not applied."""

    contains: tuple[str, ...] = Field((), description="strings that must all occur (case-insensitive)")
    not_contains: tuple[str, ...] = Field((), description="strings none of which may occur (case-insensitive)")
    regex: str | None = Field(None, description="a pattern that must match somewhere (re.search)")
    max_words: int | None = Field(None, ge=1, description="the most whitespace-separated words allowed")
    refuses: bool | None = Field(None, description="true: the answer must be a refusal; false: it must not be")
    json_schema: dict[str, Any] | None = Field(None, description="the answer must be JSON valid under this schema")
    judge_min: float | None = Field(None, description="the judge's score of the answer must be at least this")

    @field_validator("contains", "not_contains", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("contains", "not_contains")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not text.strip() for text in value):
            raise ValueError(f"strings must be non-empty (an empty one matches every answer); got {list(value)}")
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a valid regular expression ({error}); got {value!r}") from None
        return value

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                jsonschema.validators.validator_for(value).check_schema(value)
            except jsonschema.SchemaError as error:
                raise ValueError(f"not a valid JSON schema ({error.message})") from None
        return value

    @model_validator(mode="after")
    def _at_least_one(self) -> Checks:
        if not self.active():
            raise ValueError(f"a case needs at least one check; set one of {list(type(self).model_fields)}")
        return self

    def active(self) -> list[str]:
        """The names of the checks this case applies, in schema order."""
        return [name for name in type(self).model_fields if getattr(self, name) not in (None, ())]


class Case(StrictModel):
    id: str = Field(pattern=CASE_ID, description="unique within the suite; reports and accepted_changes use it")
    prompt: str | None = Field(None, description="a plain prompt (one user turn)")
    messages: tuple[Message, ...] | None = Field(None, description="a conversation ending with a user turn")
    checks: Checks
    note: str = Field("", description="why the case exists")

    @model_validator(mode="after")
    def _one_prompt(self) -> Case:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        if self.messages is not None and (not self.messages or self.messages[-1].role != "user"
                                          or not self.messages[-1].content.strip()):
            raise ValueError(f"messages must end with a non-empty user turn; got roles "
                             f"{[m.role for m in self.messages]}")
        return self

    @property
    def conversation(self) -> str | tuple[dict[str, str], ...]:
        """What the policy's chat template renders: the prompt, or the messages."""
        return self.prompt if self.prompt is not None else tuple(m.model_dump() for m in self.messages or ())

    @property
    def text(self) -> str:
        """What a judge scores: `conversation_text` of the conversation."""
        return conversation_text(self.conversation)


class Suite(StrictModel):
    name: str = Field(min_length=1)
    description: str = ""
    cases: tuple[Case, ...] = Field(min_length=1)
    accepted_changes: dict[str, str] = Field({}, description="case id → why its regression is accepted (a "
                                             "behaviour changed on purpose); such a case never blocks")

    @model_validator(mode="after")
    def _known_ids(self) -> Suite:
        ids = [case.id for case in self.cases]
        if repeated := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"case ids must be unique; repeated: {repeated}")
        if unknown := sorted(set(self.accepted_changes) - set(ids)):
            raise ValueError(f"accepted_changes names no case of the suite: {unknown}")
        if empty := sorted(k for k, why in self.accepted_changes.items() if not why.strip()):
            raise ValueError(f"accepted_changes must say why each change is accepted; empty for {empty}")
        return self

    @property
    def needs_judge(self) -> list[str]:
        """The cases with a judge_min check."""
        return [case.id for case in self.cases if case.checks.judge_min is not None]


class RunSettings(StrictModel):
    """How often each case is answered and what pass rate counts as passed."""

    samples: int = Field(4, ge=0, description="sampled answers per case besides the greedy one (k)")
    pass_threshold: float = Field(0.8, gt=0, le=1, description="least share of the 1 + k answers that must pass "
                                  "every check for the case to pass")


# ------------------------------------------------------------------------------------------------------- loading


def _where(data: Any, loc: tuple[Any, ...]) -> str:
    """`case 'id' (cases[i]) field a.b` for an error inside a case, else the field's dotted path."""
    if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
        cases = data.get("cases") if isinstance(data, dict) else None
        raw = cases[loc[1]] if isinstance(cases, list) and loc[1] < len(cases) else None
        name = raw.get("id") if isinstance(raw, dict) else None
        field = ".".join(str(part) for part in loc[2:]) or "(the case itself)"
        return f"case {name!r} (cases[{loc[1]}]) field {field}"
    return f"field {'.'.join(str(part) for part in loc) or '(top level)'}"


def parse_suite(data: Any, source: str = "suite") -> Suite:
    """A suite from its parsed YAML; errors name the case (by id and index), the field, the value given and why."""
    try:
        return Suite.model_validate(data)
    except ValidationError as error:
        errors = error.errors()
        # a case that fails also empties `cases`, which pydantic reports again as "too short": say it once
        in_cases = any(len(e["loc"]) > 1 and e["loc"][0] == "cases" for e in errors)
        lines = [f"{_where(data, tuple(e['loc']))}: {e['msg']}"
                 + ("" if e["type"] in ("missing", "value_error") else f"; got {repr(e.get('input'))[:120]}")
                 for e in errors if not (in_cases and tuple(e["loc"]) == ("cases",))]
        raise SuiteError(f"{source}: invalid suite:\n  " + "\n  ".join(lines)) from None


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite YAML file."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"suite file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SuiteError(f"suite file {str(path)!r} is not valid YAML ({error})") from None
    return parse_suite(data, str(path))


# ------------------------------------------------------------------------------------------------------- checks


def check_contains(answer: str, needles: Sequence[str]) -> bool:
    """Every needle occurs in the answer, ignoring case:  ∀ s ∈ needles: casefold(s) ⊂ casefold(answer)."""
    folded = answer.casefold()
    return all(needle.casefold() in folded for needle in needles)


def check_not_contains(answer: str, needles: Sequence[str]) -> bool:
    """No needle occurs in the answer, ignoring case:  ∀ s ∈ needles: casefold(s) ⊄ casefold(answer)."""
    folded = answer.casefold()
    return not any(needle.casefold() in folded for needle in needles)


def check_regex(answer: str, pattern: str) -> bool:
    """The pattern matches somewhere in the answer (`re.search`)."""
    return re.search(pattern, answer) is not None


def check_max_words(answer: str, limit: int) -> bool:
    """The answer has at most `limit` whitespace-separated words."""
    return len(answer.split()) <= limit


def check_refuses(answer: str, expected: bool) -> bool:
    """The answer is a refusal (by `is_refusal`) exactly when one is expected."""
    return is_refusal(answer) == expected


def answer_json(answer: str) -> Any:
    """The JSON an answer holds: the whole answer, else its first ``` fenced block; ValueError if neither parses."""
    fenced = FENCED.search(answer)
    for text in (answer.strip(), fenced.group(1).strip() if fenced else None):
        if text:
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                continue
    raise ValueError("the answer holds no JSON")


def check_json_schema(answer: str, schema: Mapping[str, Any]) -> bool:
    """The answer's JSON (`answer_json`) is valid under the schema."""
    try:
        value = answer_json(answer)
    except ValueError:
        return False
    return jsonschema.validators.validator_for(schema)(schema).is_valid(value)


def check_judge_min(score: float | None, floor: float) -> bool:
    """The judge scored the answer at least `floor` (an answer the judge did not score fails)."""
    return score is not None and score >= floor


TEXT_CHECKS: dict[str, Callable[[str, Any], bool]] = {
    "contains": check_contains, "not_contains": check_not_contains, "regex": check_regex,
    "max_words": check_max_words, "refuses": check_refuses, "json_schema": check_json_schema,
}


def answer_checks(checks: Checks, answer: str, judge_score: float | None = None) -> dict[str, bool]:
    """Each active check of a case on one answer → passed."""
    return {name: (check_judge_min(judge_score, checks.judge_min) if name == "judge_min"
                   else TEXT_CHECKS[name](answer, getattr(checks, name))) for name in checks.active()}


# ------------------------------------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class CaseOutcome:
    """One policy on one case: answer 0 is the greedy one, the rest are sampled."""

    case_id: str
    runs: int
    passes: int
    threshold: float
    greedy_passed: bool
    check_pass_rates: dict[str, float]
    greedy_failed_checks: tuple[str, ...]
    greedy_answer: str

    @property
    def pass_rate(self) -> float:
        return self.passes / self.runs

    @property
    def passed(self) -> bool:
        return self.pass_rate >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pass_rate": round(self.pass_rate, 4), "passed": self.passed}


def case_outcome(case: Case, answers: Sequence[str], threshold: float,
                 judge_scores: Sequence[float | None] | None = None) -> CaseOutcome:
    """Pass rate of one case over its answers (greedy first):  r = #{j : every check passes on answer j} / n."""
    if not answers:
        raise ValueError(f"case {case.id!r}: answers must hold at least the greedy answer; got none")
    scores = list(judge_scores) if judge_scores is not None else [None] * len(answers)
    if len(scores) != len(answers):
        raise ValueError(f"case {case.id!r}: {len(scores)} judge scores for {len(answers)} answers")
    results = [answer_checks(case.checks, answer, score) for answer, score in zip(answers, scores, strict=True)]
    names = case.checks.active()
    return CaseOutcome(
        case_id=case.id, runs=len(answers), passes=sum(all(r.values()) for r in results), threshold=threshold,
        greedy_passed=all(results[0].values()),
        check_pass_rates={name: round(sum(r[name] for r in results) / len(results), 4) for name in names},
        greedy_failed_checks=tuple(name for name in names if not results[0][name]),
        greedy_answer=answers[0][:EXAMPLE_CHARS])


@dataclass(frozen=True)
class SuiteVerdict:
    """Each case's status against the baseline, which cases block, and which were let through as accepted."""

    statuses: dict[str, Status]
    blocking: tuple[str, ...]
    accepted: tuple[str, ...]
    has_baseline: bool

    @property
    def verdict(self) -> str:
        return "fail" if self.blocking else "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "blocking": list(self.blocking), "accepted": list(self.accepted),
                "has_baseline": self.has_baseline,
                "regressions": [c for c, s in self.statuses.items() if s == "regressed"],
                "fixed": [c for c, s in self.statuses.items() if s == "fixed"]}


def regression_verdict(candidate: Mapping[str, bool], baseline: Mapping[str, bool] | None,
                       accepted: Collection[str] = ()) -> SuiteVerdict:
    """The regression rule over cases c (passed(·) per policy):

        regressed(c) = passed_baseline(c) ∧ ¬passed_candidate(c)       fixed(c) = the reverse
        blocks(c)    = regressed(c) ∧ c ∉ accepted          (no baseline: ¬passed_candidate(c) ∧ c ∉ accepted)
    """
    if baseline is not None and set(baseline) != set(candidate):
        raise ValueError(f"baseline and candidate must answer the same cases; only in one: "
                         f"{sorted(set(baseline) ^ set(candidate))}")
    statuses: dict[str, Status] = {}
    for case, passed in candidate.items():
        before = passed if baseline is None else baseline[case]
        statuses[case] = ("passing" if passed else "failing") if before == passed else (
            "fixed" if passed else "regressed")
    bad = ("regressed",) if baseline is not None else ("failing",)
    offending = [case for case, status in statuses.items() if status in bad]
    return SuiteVerdict(statuses, tuple(c for c in offending if c not in accepted),
                        tuple(c for c in offending if c in accepted), baseline is not None)


def suite_report(suite: Suite, candidate: Mapping[str, CaseOutcome], baseline: Mapping[str, CaseOutcome] | None,
                 verdict: SuiteVerdict) -> list[dict[str, Any]]:
    """The per-case table: pass rates of both policies, status, whether it blocks or was accepted, and the
    candidate's greedy answer with the checks it failed."""
    rows = []
    for case in suite.cases:
        mine = candidate[case.id]
        rows.append({"case": case.id, "checks": case.checks.active(), "candidate_pass_rate": round(mine.pass_rate, 4),
                     "baseline_pass_rate": round(baseline[case.id].pass_rate, 4) if baseline else None,
                     "status": verdict.statuses[case.id], "blocks": case.id in verdict.blocking,
                     "accepted": suite.accepted_changes.get(case.id) if case.id in verdict.accepted else None,
                     "candidate_failed_checks": list(mine.greedy_failed_checks),
                     "candidate_answer": mine.greedy_answer, "note": case.note})
    return rows
