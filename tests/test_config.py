"""Config loading: YAML + dotted overrides into a frozen schema, and errors that name the key."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, ValidationError, model_validator

from rlhf_ray.config import (
    ConfigError,
    JobConfig,
    StrictModel,
    apply_overrides,
    config_keys,
    dump_config,
    load_config,
    parse_override,
)


class ModelSection(StrictModel):
    path: str = Field(description="local checkpoint directory")
    layers: int = Field(2, ge=1)


class OptimSection(StrictModel):
    lr: float = 1e-3
    schedule: Literal["constant", "cosine"] = "constant"


class DataSection(StrictModel):
    formats: list[str] = Field(default_factory=lambda: ["parquet"])
    num_prompts: int = Field(100, ge=1)
    rows_per_shard: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _shard_fits(self) -> DataSection:
        if self.rows_per_shard > self.num_prompts:
            raise ValueError("rows_per_shard must not exceed num_prompts")
        return self


class EvalSection(StrictModel):
    every: int = Field(10, ge=1)


class TrainConfig(JobConfig):
    model: ModelSection
    optim: OptimSection = OptimSection()
    data: DataSection = DataSection()
    eval: EvalSection | None = None
    batch_size: int | Literal["auto"] = "auto"


BASE = ("model.path=ckpt",)


def problems(overrides: tuple[str, ...], path: Path | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load_config(TrainConfig, path, [*BASE, *overrides])
    return caught.value.problems


@pytest.fixture
def yaml_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text("seed: 7\nmodel:\n  path: from-yaml\ndata:\n  num_prompts: 50\noptim:\n  lr: 0.1\n")
    return path


def test_overrides_win_over_yaml_and_yaml_over_defaults(yaml_file: Path) -> None:
    config = load_config(TrainConfig, yaml_file, ["data.num_prompts=70", "seed=1", "seed=2"])
    assert (config.seed, config.data.num_prompts, config.optim.lr) == (2, 70, 0.1)
    assert config.model.path == "from-yaml"
    assert config.optim.schedule == "constant" and config.data.formats == ["parquet"]


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("a=3", "a", 3),
        ("a=0.5", "a", 0.5),
        ("a=true", "a", True),
        ("a=[a,b]", "a", ["a", "b"]),
        ("a=null", "a", None),
        ("a={x: 1}", "a", {"x": 1}),
        ("a=", "a", ""),
        ("a=hello", "a", "hello"),
        ("a.b.c=x=y", "a.b.c", "x=y"),
    ],
)
def test_override_values_are_yaml_typed(text: str, key: str, value: object) -> None:
    assert parse_override(text) == (key, value)


def test_override_values_reach_the_schema_typed() -> None:
    overrides = ["optim.lr=1", "data.formats=[parquet,jsonl]", "eval.every=3"]
    config = load_config(TrainConfig, None, [*BASE, *overrides])
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.data.formats == ["parquet", "jsonl"]
    assert config.eval is not None and config.eval.every == 3
    assert load_config(TrainConfig, None, [*BASE, "eval.every=3", "eval=null"]).eval is None


def test_apply_overrides_copies_and_creates_sections() -> None:
    data = {"a": {"b": 1}, "c": None}
    result = apply_overrides(data, ["a.x.y=2", "c.d=3"])
    assert result == {"a": {"b": 1, "x": {"y": 2}}, "c": {"d": 3}}
    assert data == {"a": {"b": 1}, "c": None}


def test_apply_overrides_refuses_to_descend_into_a_value() -> None:
    with pytest.raises(ConfigError, match=r"override 'a\.b=1': 'a' is 3 \(int\), not a section"):
        apply_overrides({}, ["a=3", "a.b=1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("modle.path=x", "unknown key 'modle' (did you mean 'model'?)"),
        ("data.num_promts=3", "unknown key 'data.num_promts' (did you mean 'data.num_prompts'?)"),
        ("eval.evry=3", "unknown key 'eval.evry' (did you mean 'eval.every'?)"),
    ],
)
def test_unknown_key_suggests_the_closest_valid_key(override: str, message: str) -> None:
    assert problems((override,)) == (message,)


def test_unknown_key_with_nothing_close_lists_the_valid_keys() -> None:
    assert problems(("data.zzzz=1",)) == (
        "unknown key 'data.zzzz' (valid keys in 'data': formats, num_prompts, rows_per_shard)",
    )
    assert problems(("qqqq=1",)) == (
        "unknown key 'qqqq' (valid keys at the top level: "
        "seed, output_dir, ray, wandb, lineage, model, optim, data, eval, batch_size)",
    )


WANDB_MODES = "one of 'offline', 'online', 'disabled'"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.num_prompts=many", "key 'data.num_prompts': got 'many' (str), expected int"),
        ("data.num_prompts=0", "key 'data.num_prompts': got 0 (int), expected a value >= 1"),
        ("optim.schedule=cos", "key 'optim.schedule': got 'cos' (str), expected one of 'constant', 'cosine'"),
        ("wandb.mode=cloud", f"key 'wandb.mode': got 'cloud' (str), expected {WANDB_MODES}"),
        ("wandb.mode=off", f"key 'wandb.mode': got False (bool), expected {WANDB_MODES}"),
        ("data.formats=parquet", "key 'data.formats': got 'parquet' (str), expected a list"),
        ("optim=3", "key 'optim': got 3 (int), expected a mapping"),
        ("batch_size=lots", "key 'batch_size': got 'lots' (str), expected int or one of 'auto'"),
        ("data.rows_per_shard=500", "key 'data': rows_per_shard must not exceed num_prompts"),
        ("data={1: 2}", "invalid key 1 (int) in 'data': keys must be strings"),
    ],
)
def test_invalid_value_names_key_value_and_expectation(override: str, message: str) -> None:
    assert problems((override,)) == (message,)


def test_missing_required_key_and_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(TrainConfig, None, ["seed=x", "optim.lrr=1"])
    assert caught.value.problems == (
        "key 'seed': got 'x' (str), expected int",
        "missing required key 'model.path'",
        "unknown key 'optim.lrr' (did you mean 'optim.lr'?)",
    )
    assert str(caught.value) == "\n".join(caught.value.problems)


def test_config_error_survives_pickling() -> None:
    error = ConfigError(["one", "two"])
    assert pickle.loads(pickle.dumps(error)).problems == ("one", "two")


@pytest.mark.parametrize(
    ("override", "reason"), [("foo", "no '='"), ("=3", "empty key"), ("a..b=1", "empty key")]
)
def test_malformed_override_shows_the_expected_form(override: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(TrainConfig, None, [override])
    assert f"malformed override {override!r}: {reason}" in str(caught.value)
    assert "key.sub=value" in str(caught.value)


def test_override_value_that_is_not_yaml_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"override 'seed=\[1,': value is not valid YAML"):
        parse_override("seed=[1,")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml' not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 1\nmodel:\n  path: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config file '.*bad\.yaml', line 4, column 1: invalid YAML"):
        load_config(TrainConfig, path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- seed\n- 1\n")
    with pytest.raises(
        ConfigError, match=r"list\.yaml' must hold a mapping of keys at the top level, got list$"
    ):
        load_config(TrainConfig, path)


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert load_config(TrainConfig, path, BASE) == load_config(TrainConfig, None, BASE)


def test_dump_config_round_trips(tmp_path: Path) -> None:
    config = load_config(
        TrainConfig,
        None,
        [*BASE, "eval.every=4", "data.formats=[jsonl]", "wandb.tags=[a,b]", "batch_size=8", "optim.lr=2e-5"],
    )
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(TrainConfig, path) == config


def test_job_config_defaults_are_valid() -> None:
    config = load_config(JobConfig)
    assert config == JobConfig()
    assert (config.seed, config.output_dir, config.ray.namespace) == (0, "runs/default", "rlhf-ray")
    assert config.ray.address is None and config.lineage.root is None and config.wandb.mode == "offline"


def test_config_is_frozen() -> None:
    config = JobConfig()
    with pytest.raises(ValidationError, match="frozen"):
        config.seed = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        config.ray.num_cpus = 2  # type: ignore[misc]


def test_config_keys_list_every_leaf_with_type_and_default() -> None:
    keys = config_keys(TrainConfig)
    assert "model.path (str, required): local checkpoint directory" in keys
    assert "data.num_prompts (int, default 100)" in keys
    assert "eval.every (int, default 10)" in keys
    assert (
        "wandb.mode (Literal['offline', 'online', 'disabled'], default \"offline\"): wandb run mode"
    ) in keys
    assert not any(key.startswith(("ray ", "data ", "eval ")) for key in keys)


VALID_KEYS = [line.split(" ")[0] for line in config_keys(TrainConfig)]
ODD_KEYS = ["model", "eval", "data", "", ".", "a..b", "data.formats.0"]
KEYS = st.sampled_from([*VALID_KEYS, *ODD_KEYS]) | st.text(max_size=12)
VALUES = st.sampled_from(
    [
        "3",
        "-1",
        "0.5",
        "true",
        "null",
        "[a, b]",
        "{x: 1}",
        "{1: 2}",
        "!!int x",
        "!!bool x",
        "[1,",
        "'q",
        "&a [*a]",
        "2020-02-30",
        ".inf",
        "auto",
        "[" * 2000,
        "a: b: c",
    ]
) | st.text(max_size=12)
OVERRIDES = st.builds(lambda key, value: f"{key}={value}", KEYS, VALUES) | st.text(max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(OVERRIDES, max_size=4))
def test_any_override_fails_only_with_config_error(overrides: list[str]) -> None:
    try:
        config = load_config(TrainConfig, None, [*BASE, *overrides])
    except ConfigError as error:
        assert error.problems and all(isinstance(problem, str) and problem for problem in error.problems)
    else:
        assert isinstance(config, TrainConfig)


def test_a_retired_key_is_dropped_with_a_warning_so_old_configs_still_load(tmp_path: Path) -> None:
    from jobs.loop import LoopConfig
    from jobs.ppo import PPOConfig

    old = tmp_path / "ppo.yaml"
    old.write_text("model_path: m\ndata_cpus: 0.2\niterations: 3\n")
    with pytest.warns(DeprecationWarning, match=r"data_cpus is no longer read \(training prompts are shuffled"):
        config = load_config(PPOConfig, old)
    assert config.iterations == 3 and "data_cpus" not in config.model_dump()
    with pytest.warns(DeprecationWarning, match=r"ppo\.data_cpus is no longer read"):
        assert LoopConfig.model_validate({"ppo": {"data_cpus": 0.2, "iterations": 4}}).ppo.iterations == 4
    with pytest.raises(ValidationError, match="data_cpu"):  # a typo of it is still an unknown key
        PPOConfig(model_path="m", data_cpu=0.2)
