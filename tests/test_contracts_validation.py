"""Row-level contract validation: clean rows pass, every rejection code has a precise reason, nothing raises."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf_ray.contracts import IDENTIFIER_FIELDS, MAX_IDENTIFIER_CHARS, MAX_TEXT_CHARS, SIGNAL_SCHEMAS, SignalType
from rlhf_ray.contracts.validation import NO_VALUE, Rejection, identifier_problem, validate_row
from rlhf_ray.sim import ShardConfig, ShardSpec, World, WorldConfig
from rlhf_ray.sim.shards import build_shard_rows

NOW = datetime(2026, 3, 2, tzinfo=UTC)
SIGNAL_TYPES = [t.value for t in SignalType]
CLEAN = ShardConfig(rows=100, malformed_fraction=0, duplicate_fraction=0, pii_fraction=0)
KNOWN_FIELDS = frozenset(name for schema in SIGNAL_SCHEMAS.values() for name in schema.names)
DOCUMENTED_CODES = frozenset({
    "missing_field", "wrong_type", "out_of_range", "unknown_enum", "inconsistent_ranking", "oversize_text",
    "bad_timestamp", "unsupported_schema_version", "unknown_field", "bad_identifier",
})


@cache
def _rows(signal_type: str) -> tuple[dict[str, Any], ...]:
    world = World(WorldConfig(num_prompts=60), seed=1)
    rows, _ = build_shard_rows(world, CLEAN, ShardSpec(signal_type, 0, 20, "jsonl"))
    return tuple(rows)


def clean(signal_type: str) -> dict[str, Any]:
    """A fresh copy (deep enough for list/dict payloads) of a clean row of the given type."""
    return copy.deepcopy(_rows(signal_type)[0])


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    raise TypeError(type(value).__name__)


def as_json(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(row, default=_iso))


def reject(row: Any) -> Rejection:
    rejection = validate_row(row, NOW)
    assert rejection is not None, f"expected a rejection for {row!r:.200}"
    return rejection


# --- clean rows are accepted -------------------------------------------------------------------------


@pytest.mark.parametrize("signal_type", SIGNAL_TYPES)
def test_clean_rows_are_accepted_as_python_objects(signal_type: str) -> None:
    rows = _rows(signal_type)
    assert rows and all(isinstance(row["event_time"], datetime) for row in rows)
    assert [validate_row(row, NOW) for row in rows] == [None] * len(rows)


@pytest.mark.parametrize("signal_type", SIGNAL_TYPES)
def test_clean_rows_are_accepted_after_a_json_round_trip(signal_type: str) -> None:
    rows = [as_json(row) for row in _rows(signal_type)]
    assert all(isinstance(row["event_time"], str) and row["event_time"].endswith("Z") for row in rows)
    assert [validate_row(row, NOW) for row in rows] == [None] * len(rows)


@pytest.mark.parametrize("signal_type", SIGNAL_TYPES)
def test_validation_does_not_modify_the_row(signal_type: str) -> None:
    for row in (clean(signal_type), clean(signal_type) | {"confidence": 7.0, "extra": 1}):
        before = copy.deepcopy(row)
        validate_row(row, NOW)
        assert row == before


@pytest.mark.parametrize(
    ("signal_type", "changes"),
    [
        ("rating", {"scale": "likert5", "scores": [{"criterion": "overall", "score": 5}]}),
        ("rating", {"scale": "thumbs", "scores": [{"criterion": "overall", "score": 0.0}]}),
        ("rating", {"scale": "rubric5", "scores": [{"criterion": "safety", "score": 1.0}]}),
        ("implicit", {"event": "dwell", "value": 0.0}),
        ("implicit", {"event": "copy", "value": 1}),
        ("safety_flag", {"flagged": True, "category": "privacy", "severity": 3}),
        ("safety_flag", {"flagged": True, "category": "harassment", "severity": 1}),
        ("pairwise", {"choice": "tie", "confidence": 0.0, "session_position": 0}),
        ("pairwise", {"confidence": 1.0, "rationale": None, "item_id": None}),
        ("ranking", {"responses": ["x", "y"], "ranking": [1, 0]}),
        ("ranking", {"responses": [str(i) for i in range(8)], "ranking": list(range(7, -1, -1))}),
        ("correction", {"prompt": "p" * MAX_TEXT_CHARS}),
        ("task_success", {"event_time": "2000-01-01T00:00:00Z"}),
        ("task_success", {"event_time": (NOW + timedelta(minutes=59)).isoformat()}),
        ("task_success", {"event_time": "2026-01-05T10:00:00"}),  # naive: taken as UTC
        ("task_success", {"source": "evaluator", "success": False}),
    ],
)
def test_boundary_values_are_accepted(signal_type: str, changes: dict[str, Any]) -> None:
    assert validate_row(clean(signal_type) | changes, NOW) is None


# --- one test per rejection code ---------------------------------------------------------------------


def _assert_rejected(row: Any, reason: str, *in_detail: str) -> Rejection:
    rejection = reject(row)
    assert rejection.reason == reason, rejection
    assert rejection.code in DOCUMENTED_CODES
    for text in in_detail:
        assert text in rejection.detail, (text, rejection.detail)
    return rejection


@pytest.mark.parametrize("signal_type", SIGNAL_TYPES)
@pytest.mark.parametrize("field", ["signal_id", "actor_id", "prompt", "region", "event_time", "policy_version"])
def test_missing_required_envelope_field_null_and_absent(signal_type: str, field: str) -> None:
    null = clean(signal_type) | {field: None}
    absent = clean(signal_type)
    del absent[field]
    for row in (null, absent):
        rejection = _assert_rejected(row, f"missing_field:{field}", repr(field), "required")
        assert rejection.field == field


@pytest.mark.parametrize(
    ("signal_type", "field"),
    [("pairwise", "choice"), ("pairwise", "response_b"), ("ranking", "ranking"), ("ranking", "responses"),
     ("rating", "scores"), ("rating", "scale"), ("correction", "edited_response"), ("implicit", "value"),
     ("implicit", "event"), ("safety_flag", "flagged"), ("safety_flag", "category"), ("task_success", "success")],
)
def test_missing_required_payload_field(signal_type: str, field: str) -> None:
    absent = clean(signal_type)
    del absent[field]
    _assert_rejected(clean(signal_type) | {field: None}, f"missing_field:{field}", repr(field))
    _assert_rejected(absent, f"missing_field:{field}", repr(field))


@pytest.mark.parametrize("field", ["confidence", "session_position", "item_id", "session_id", "rationale"])
def test_optional_fields_may_be_null_or_absent(field: str) -> None:
    absent = clean("pairwise")
    del absent[field]
    assert validate_row(clean("pairwise") | {field: None}, NOW) is None
    assert validate_row(absent, NOW) is None


@pytest.mark.parametrize(
    ("signal_type", "field", "value", "shown"),
    [
        ("pairwise", "confidence", "0.9", "'0.9' (str)"),
        ("pairwise", "confidence", True, "True (bool)"),
        ("pairwise", "confidence", math.nan, "nan (float)"),
        ("pairwise", "confidence", math.inf, "inf (float)"),
        ("pairwise", "confidence", -math.inf, "-inf (float)"),
        ("pairwise", "confidence", [0.5], "[0.5] (list)"),
        ("implicit", "value", False, "False (bool)"),
        ("implicit", "value", math.nan, "nan (float)"),
        ("implicit", "value", "12", "'12' (str)"),
        ("pairwise", "prompt", 42, "42 (int)"),
        ("pairwise", "actor_id", 123, "123 (int)"),
        ("pairwise", "choice", ["a"], "['a'] (list)"),
        ("pairwise", "session_position", 1.5, "1.5 (float)"),
        ("pairwise", "session_position", "3", "'3' (str)"),
        ("pairwise", "session_position", True, "True (bool)"),
        ("safety_flag", "severity", 2.5, "2.5 (float)"),
        ("safety_flag", "flagged", 1, "1 (int)"),
        ("safety_flag", "flagged", "true", "'true' (str)"),
        ("task_success", "success", 0, "0 (int)"),
        ("ranking", "ranking", "0,1,2,3", "'0,1,2,3' (str)"),
        ("ranking", "ranking", {"0": 0}, "{'0': 0} (dict)"),
        ("ranking", "ranking", [0, 1, 2, 3.5], "[0, 1, 2, 3.5] (list)"),
        ("ranking", "ranking", [0, 1, True, 3], "[0, 1, True, 3] (list)"),
        ("ranking", "responses", "abc", "'abc' (str)"),
        ("ranking", "responses", ["a", 2, "c", "d"], "['a', 2, 'c', 'd'] (list)"),
        ("rating", "scores", {"criterion": "overall"}, "(dict)"),
        ("rating", "scores", [], "[] (list)"),
    ],
)
def test_wrong_type(signal_type: str, field: str, value: Any, shown: str) -> None:
    rejection = _assert_rejected(clean(signal_type) | {field: value}, f"wrong_type:{field}", repr(field), shown)
    assert "expected" in rejection.detail


@pytest.mark.parametrize(
    ("score", "shown"), [(math.nan, "nan"), ("4", "'4'"), (True, "True"), (None, "a finite number")]
)
def test_wrong_type_of_a_rating_score(score: Any, shown: str) -> None:
    row = clean("rating") | {"scale": "likert5", "scores": [{"criterion": "overall", "score": score}]}
    _assert_rejected(row, "wrong_type:scores.score", "'scores.score'", shown)


def test_wrong_type_of_a_rating_scores_entry() -> None:
    row = clean("rating") | {"scale": "likert5", "scores": ["overall=4"]}
    _assert_rejected(row, "wrong_type:scores", "'scores'", "'overall=4' (str)")


@pytest.mark.parametrize(
    ("signal_type", "changes", "reason", "shown"),
    [
        ("pairwise", {"confidence": 1.5}, "out_of_range:confidence", "1.5"),
        ("pairwise", {"confidence": -0.01}, "out_of_range:confidence", "-0.01"),
        ("rating", {"scale": "likert5", "scores": [{"criterion": "overall", "score": 6}]}, "out_of_range:scores.score",
         "got 6"),
        ("rating", {"scale": "likert5", "scores": [{"criterion": "overall", "score": 0.5}]},
         "out_of_range:scores.score", "0.5"),
        ("rating", {"scale": "thumbs", "scores": [{"criterion": "overall", "score": 2}]}, "out_of_range:scores.score",
         "got 2"),
        ("rating", {"scale": "rubric5", "scores": [{"criterion": "safety", "score": 5.5}]},
         "out_of_range:scores.score", "5.5"),
        ("implicit", {"event": "dwell", "value": -3.0}, "out_of_range:value", "-3.0"),
        ("safety_flag", {"flagged": True, "category": "privacy", "severity": 9}, "out_of_range:severity", "9"),
        ("safety_flag", {"flagged": True, "category": "privacy", "severity": 0}, "out_of_range:severity", "got 0"),
        ("pairwise", {"session_position": -1}, "out_of_range:session_position", "-1"),
        ("ranking", {"responses": ["only"], "ranking": [0]}, "out_of_range:responses", "got 1"),
        ("ranking", {"responses": ["r"] * 9, "ranking": list(range(9))}, "out_of_range:responses", "got 9"),
    ],
)
def test_out_of_range(signal_type: str, changes: dict[str, Any], reason: str, shown: str) -> None:
    field = reason.split(":", 1)[1]
    _assert_rejected(clean(signal_type) | changes, reason, repr(field), shown)


@pytest.mark.parametrize(
    ("signal_type", "field", "value"),
    [
        ("pairwise", "source", "robot"),
        ("pairwise", "choice", "c"),
        ("pairwise", "choice", "A"),
        ("rating", "scale", "stars10"),
        ("implicit", "event", "scroll"),
        ("safety_flag", "category", "spam"),
    ],
)
def test_unknown_enum(signal_type: str, field: str, value: str) -> None:
    _assert_rejected(clean(signal_type) | {field: value}, f"unknown_enum:{field}", repr(field), repr(value), "one of")


@pytest.mark.parametrize("value", ["thumbs_up", "Pairwise", "", 7])
def test_unknown_signal_type(value: Any) -> None:
    _assert_rejected(clean("pairwise") | {"signal_type": value}, "unknown_enum:signal_type", "'signal_type'",
                     repr(value), "pairwise")


def test_missing_signal_type_is_an_unknown_enum() -> None:
    row = clean("pairwise")
    del row["signal_type"]
    _assert_rejected(row, "unknown_enum:signal_type", "'signal_type'")


@pytest.mark.parametrize(
    ("scale", "scores", "bad"),
    [
        ("rubric5", [{"criterion": "style", "score": 3.0}], "'style'"),
        ("rubric5", [{"criterion": "overall", "score": 3.0}], "'overall'"),
        ("likert5", [{"criterion": "helpfulness", "score": 3.0}], "'helpfulness'"),
        ("rubric5", [{"criterion": "safety", "score": 3.0}, {"criterion": "safety", "score": 4.0}], "'safety'"),
        ("thumbs", [{"criterion": "overall", "score": 1.0}, {"criterion": "overall", "score": 1.0}], "'overall'"),
        ("likert5", [{"score": 3.0}], "'scores.criterion'"),
    ],
)
def test_unknown_or_duplicated_rubric_criterion(scale: str, scores: list[dict[str, Any]], bad: str) -> None:
    row = clean("rating") | {"scale": scale, "scores": scores}
    _assert_rejected(row, "unknown_enum:scores.criterion", "'scores.criterion'", bad, "distinct criteria")


@pytest.mark.parametrize(
    ("ranking", "shown"),
    [
        ([0, 0, 1, 2], "[0, 0, 1, 2]"),  # repeat
        ([0, 1, 2, 4], "[0, 1, 2, 4]"),  # index 3 missing
        ([0, 1, 2], "[0, 1, 2]"),  # length mismatch (short)
        ([0, 1, 2, 3, 4], "[0, 1, 2, 3, 4]"),  # length mismatch (long)
        ([-1, 0, 1, 2], "[-1, 0, 1, 2]"),
        ([], "[]"),
    ],
)
def test_inconsistent_ranking(ranking: list[int], shown: str) -> None:
    row = clean("ranking")
    assert len(row["responses"]) == 4
    _assert_rejected(row | {"ranking": ranking}, "inconsistent_ranking:ranking", "'ranking'", shown, "0..3")


@pytest.mark.parametrize("field", ["prompt", "rationale"])
def test_oversize_text_field(field: str) -> None:
    size = MAX_TEXT_CHARS + 1
    rejection = _assert_rejected(clean("pairwise") | {field: "x" * size}, f"oversize_text:{field}", repr(field),
                                 str(MAX_TEXT_CHARS), str(size))
    assert len(rejection.detail) < 200  # the text itself is not copied into the detail


def test_oversize_ranked_response_names_its_index() -> None:
    row = clean("ranking")
    row["responses"] = [*row["responses"][:2], "y" * (MAX_TEXT_CHARS + 1), row["responses"][3]]
    rejection = _assert_rejected(row, "oversize_text:responses[2]", "'responses[2]'", str(MAX_TEXT_CHARS))
    assert len(rejection.detail) < 200


def test_oversize_ranked_response_detail_names_the_length() -> None:
    row = clean("ranking")
    row["responses"] = [*row["responses"][:2], "y" * (MAX_TEXT_CHARS + 1), row["responses"][3]]
    assert str(MAX_TEXT_CHARS + 1) in reject(row).detail


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("yesterday", "'yesterday'"),
        ("", "''"),
        ("2026-02-30T10:00:00Z", "'2026-02-30T10:00:00Z'"),  # impossible date
        ("2026-01-05T25:00:00Z", "'2026-01-05T25:00:00Z'"),
        (1767225600, "1767225600 (int)"),  # epoch seconds are not ISO-8601
        (["2026-01-05"], "['2026-01-05'] (list)"),
        (NOW + timedelta(days=400), "2027-"),  # far future
        ("2099-01-01T00:00:00Z", "2099-01-01"),
        ((NOW + timedelta(hours=2)).isoformat(), "2026-03-02T02:00"),  # beyond the allowed clock skew
        ("1999-12-31T23:59:59Z", "1999-12-31"),  # before 2000
        (datetime(1970, 1, 1, tzinfo=UTC), "1970-01-01"),
    ],
)
def test_bad_timestamp(value: Any, shown: str) -> None:
    _assert_rejected(clean("correction") | {"event_time": value}, "bad_timestamp:event_time", "'event_time'", shown)


@pytest.mark.parametrize("version", ["2.0", "1", "1.0.0", ""])
def test_unsupported_schema_version(version: str) -> None:
    _assert_rejected(clean("implicit") | {"schema_version": version}, "unsupported_schema_version:schema_version",
                     "'schema_version'", repr(version), "1.0")


@pytest.mark.parametrize(
    ("signal_type", "extra"),
    [("pairwise", "extra"), ("pairwise", "responses"), ("ranking", "response_a"), ("task_success", "flagged"),
     ("implicit", "Prompt"), ("rating", "user id")],
)
def test_unknown_field(signal_type: str, extra: str) -> None:
    rejection = _assert_rejected(clean(signal_type) | {extra: "x"}, f"unknown_field:{extra}", repr(extra),
                                 signal_type)
    assert rejection.field == extra


def test_unknown_empty_key_detail_names_the_field() -> None:
    rejection = reject(clean("rating") | {"": "x"})
    assert rejection.reason == "unknown_field:"
    assert "''" in rejection.detail


def test_unknown_field_even_when_null() -> None:
    _assert_rejected(clean("pairwise") | {"user_email": None}, "unknown_field:user_email", "'user_email'")


@pytest.mark.parametrize(("row", "shown"), [([1, 2], "[1, 2] (list)"), ("{}", "'{}' (str)"), (42, "42 (int)"),
                                            ((), "() (tuple)")])
def test_non_dict_row(row: Any, shown: str) -> None:
    rejection = _assert_rejected(row, "wrong_type", shown, "JSON object")
    assert rejection.field is None


def test_none_row_is_rejected() -> None:
    rejection = _assert_rejected(None, "wrong_type", "JSON object")
    assert rejection.field is None


def test_none_row_detail_names_the_value() -> None:
    assert "None" in reject(None).detail


def test_the_first_problem_is_reported_unknown_field_before_types() -> None:
    row = clean("pairwise") | {"extra": 1, "confidence": "high"}
    assert reject(row).reason == "unknown_field:extra"


# --- hostile values (huge ints, unhashable enums) still get a contract reason, never validator_error ---------


@pytest.mark.parametrize("value", [["pairwise"], {"v": "pairwise"}, {"pairwise"}])
def test_unhashable_signal_type_gets_a_contract_reason(value: Any) -> None:
    _assert_rejected(clean("pairwise") | {"signal_type": value}, "unknown_enum:signal_type", "'signal_type'")


def test_unhashable_rubric_criterion_gets_a_contract_reason() -> None:
    row = clean("rating") | {"scale": "likert5", "scores": [{"criterion": ["overall"], "score": 3}]}
    assert reject(row).reason == "unknown_enum:scores.criterion"


@pytest.mark.parametrize(
    ("signal_type", "field"),
    [("pairwise", "confidence"), ("implicit", "value"), ("pairwise", "session_position"), ("safety_flag", "severity")],
)
def test_huge_integer_gets_a_contract_reason(signal_type: str, field: str) -> None:
    rejection = reject(clean(signal_type) | {field: 10**400})
    assert rejection.code in DOCUMENTED_CODES, rejection


@pytest.mark.parametrize("position", [2**31, 2**40])
def test_session_position_beyond_int32_is_rejected(position: int) -> None:
    assert reject(clean("pairwise") | {"session_position": position}).reason == "out_of_range:session_position"


# --- properties: never raises ------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "\x00", "\u2028", "é漢字🙂", "x" * (MAX_TEXT_CHARS + 5), "2026-01-05T10:00:00Z",
                      "NaN", "pairwise", "likert5", "1.0", "overall"])
)
json_like = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_result(result: Any) -> None:
    assert result is None or isinstance(result, Rejection)
    if result is not None:
        assert isinstance(result.reason, str) and result.reason
        assert isinstance(result.detail, str) and result.detail


@PROPERTY
@given(json_like)
def test_arbitrary_json_like_values_never_raise(value: Any) -> None:
    _check_result(validate_row(value, NOW))


@PROPERTY
@given(st.sampled_from(SIGNAL_TYPES), st.dictionaries(st.sampled_from(sorted(KNOWN_FIELDS)), json_like, max_size=6))
def test_arbitrary_values_in_known_fields_never_raise(signal_type: str, overrides: dict[str, Any]) -> None:
    _check_result(validate_row(clean(signal_type) | overrides, NOW))
    _check_result(validate_row(as_json(clean(signal_type)) | overrides, NOW))


def _mutations(signal_type: str) -> st.SearchStrategy[list[tuple[str, str, Any]]]:
    keys = st.sampled_from(sorted(_rows(signal_type)[0]))
    one = st.one_of(
        st.tuples(st.just("drop"), keys, st.none()),
        st.tuples(st.just("set"), keys, json_like),
    )
    return st.lists(one, min_size=1, max_size=4)


@st.composite
def mutated_rows(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    signal_type = draw(st.sampled_from(SIGNAL_TYPES))
    row = clean(signal_type) if draw(st.booleans()) else as_json(clean(signal_type))
    for action, key, value in draw(_mutations(signal_type)):
        if action == "drop":
            row.pop(key, None)
        else:
            row[key] = value
    return signal_type, row


@PROPERTY
@given(mutated_rows())
def test_random_mutations_of_clean_rows_never_raise(case: tuple[str, dict[str, Any]]) -> None:
    _, row = case
    _check_result(validate_row(row, NOW))


@PROPERTY
@given(mutated_rows(), st.text(min_size=0, max_size=15).filter(lambda key: key not in KNOWN_FIELDS), json_like)
def test_a_row_with_an_added_unknown_key_is_always_rejected(case: tuple[str, dict[str, Any]], key: str,
                                                            value: Any) -> None:
    _, row = case
    row[key] = value
    rejection = validate_row(row, NOW)
    _check_result(rejection)
    assert rejection is not None


@PROPERTY
@given(st.sampled_from(SIGNAL_TYPES), st.booleans(),
       st.text(min_size=0, max_size=15).filter(lambda key: key not in KNOWN_FIELDS), json_like)
def test_a_clean_row_plus_an_unknown_key_names_that_key(signal_type: str, json_form: bool, key: str,
                                                        value: Any) -> None:
    row = as_json(clean(signal_type)) if json_form else clean(signal_type)
    rejection = validate_row(row | {key: value}, NOW)
    assert rejection is not None and rejection.reason == f"unknown_field:{key}"


# --- identifiers -------------------------------------------------------------------------------------

_GOOD_IDS = ["bfd07f7c-3798-4445-6a60-0a7501fa448e", "sig-0123abcd", "wb-r-9f8e", "chatcmpl-abc123", "p-000024",
             "meta-llama/Llama-3-8B", "gl-1.1", "policy:v2+cu121", "a", "x" * MAX_IDENTIFIER_CHARS]


@pytest.mark.parametrize("value", _GOOD_IDS)
@pytest.mark.parametrize("field", ["signal_id", "prompt_id", "policy_version"])
def test_well_formed_identifiers_are_accepted(field: str, value: str) -> None:
    assert validate_row(clean("pairwise") | {field: value}, NOW) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("bfd07f7c-3798-4445-6a60-0a7501fa448e reach me at a.b@example.com", "it holds whitespace"),
        ("a.b@example.com", "it holds '@'"),
        ("", "it is empty"),
        ("x" * (MAX_IDENTIFIER_CHARS + 1), f"it is {MAX_IDENTIFIER_CHARS + 1} characters long"),
        ("-leading-dash", "it starts with '-'"),
        ("café-1", "it holds 'é'"),
        ("tab\tinside", "it holds whitespace"),
    ],
)
def test_an_identifier_that_is_not_one_is_a_bad_identifier(value: str, problem: str) -> None:
    assert identifier_problem(value) == problem
    for field in IDENTIFIER_FIELDS:
        rejection = reject(clean("ranking") | {field: value})
        assert rejection.reason == f"bad_identifier:{field}"
        assert problem in rejection.detail and "an identifier" in rejection.expected
        assert rejection.value == value  # travels with the rejection, for redacted details


def test_a_rejection_can_show_its_value_redacted() -> None:
    rejection = reject(clean("pairwise") | {"choice": "my name is X"})
    assert "'my name is X'" in rejection.detail
    assert rejection.detail_showing(lambda value: "<hidden>") == (
        "field 'choice': got <hidden> (str), expected one of ['a', 'b', 'tie']")
    missing = reject({k: v for k, v in clean("pairwise").items() if k != "prompt"})
    assert missing.value is NO_VALUE and missing.detail_showing(lambda value: "?") == missing.detail
