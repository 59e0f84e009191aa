"""Prompt sources and evaluators: a user's prompt files, the world adapter, and the PPO config that picks one."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.ppo import PPOConfig, inputs_for
from rlhf_ray.inputs import FilePromptSource, Prompt, mean_figures
from rlhf_ray.inputs.prompts import PromptFileError
from rlhf_ray.inputs.world import WorldConfig, WorldOracle, WorldPromptSource
from rlhf_ray.sim import World


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_prompt_files_give_each_split_with_stable_ids(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "train.jsonl", [{"prompt": "How do I reset my router?"},
                                              {"prompt": "Where is my order?", "prompt_id": "order-1"}])
    pq.write_table(pa.table({"prompt": ["Can I change my plan?"]}), tmp_path / "test.parquet")
    source = FilePromptSource({"train": train, "test": str(tmp_path / "test.parquet")})
    first, second = source.split("train")
    assert second == Prompt("order-1", "Where is my order?")
    assert first.prompt_id.startswith("p-") and first.text == "How do I reset my router?"
    again = FilePromptSource({"train": train}).split("train")[0]
    assert again.prompt_id == first.prompt_id  # a content hash: the same in every run
    assert [p.text for p in source.split("test")] == ["Can I change my plan?"]
    with pytest.raises(PromptFileError, match=r"no prompt file for the .validation. split: set prompts\.validation"):
        source.split("validation")


@pytest.mark.parametrize(("rows", "match"), [
    ([{"text": "no prompt field"}], r"row 1: field 'prompt' must be a non-empty string; got None"),
    ([{"prompt": "fine"}, {"prompt": "  "}], r"row 2: field 'prompt' must be a non-empty string; got '  '"),
    ([], "holds no prompts"),
])
def test_bad_prompt_files_are_refused_naming_the_row_and_field(tmp_path: Path, rows: list[dict], match: str) -> None:
    with pytest.raises(PromptFileError, match=match):
        FilePromptSource({"train": _jsonl(tmp_path / "p.jsonl", rows)}).split("train")


def test_unreadable_prompt_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "broken.jsonl").write_text('{"prompt": "ok"}\n{not json\n')
    with pytest.raises(PromptFileError, match=r"broken.jsonl:2: not a JSON object"):
        FilePromptSource({"train": str(tmp_path / "broken.jsonl")}).split("train")
    with pytest.raises(PromptFileError, match="does not exist"):
        FilePromptSource({"train": str(tmp_path / "missing.jsonl")}).split("train")
    (tmp_path / "p.csv").write_text("prompt\nhi\n")
    with pytest.raises(PromptFileError, match=r"expected a \.jsonl or \.parquet file"):
        FilePromptSource({"train": str(tmp_path / "p.csv")}).split("train")


def test_the_world_adapter_is_a_prompt_source_and_an_oracle() -> None:
    config = WorldConfig(num_prompts=60)
    world = World(config, 3)
    source = WorldPromptSource(config, 3)
    assert [p.prompt_id for p in source.split("train")] == [p.prompt_id for p in world.split("train")]
    for name in ("validation", "test"):  # the world's own splits; the novel-intent slice is read apart
        assert [p.prompt_id for p in source.split(name)] == [p.prompt_id for p in world.split(name)]
        assert [p.prompt_id for p in source.novel_intent(name)] == [p.prompt_id
                                                                    for p in world.split(name, "novel_intent")]
    assert not {p.prompt_id for p in source.split("validation")} & {p.prompt_id for p in source.split("test")}
    assert not source.novel_intent("train")
    oracle = pickle.loads(pickle.dumps(WorldOracle(config, 3)))  # travels to Tune trials and tasks small
    prompt = source.split("test")[0]
    answer = "thanks for asking ! " * 3
    figures = mean_figures([oracle], [prompt.prompt_id], [prompt.text], [answer])
    assert figures == {"true_utility": pytest.approx(world.utility(prompt.prompt_id, answer).total)}
    with pytest.raises(ValueError, match="evaluators report the same figure twice"):
        mean_figures([oracle, oracle], [prompt.prompt_id], [prompt.text], [answer])


def test_ppo_takes_prompt_files_or_the_world(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "train.jsonl", [{"prompt": "hello"}])
    with pytest.raises(ValueError, match=r"eval_split='validation' needs prompts\.validation"):
        PPOConfig(prompts={"train": train})
    files = PPOConfig(prompts={"train": train, "validation": train})
    source, evaluators = inputs_for(files)
    assert isinstance(source, FilePromptSource) and evaluators == []  # no oracle outside simulation
    source, evaluators = inputs_for(PPOConfig())
    assert isinstance(source, WorldPromptSource) and [e.figure for e in evaluators] == ["true_utility"]
