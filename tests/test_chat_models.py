"""Any local HF checkpoint: tiny random-weight Llama (native format), Qwen2 (ChatML, no pad token) and GPT-NeoX
(Llama-3 format), built offline. Encoding masks exactly the assistant turns, generation stops at the template's
end of turn, a checkpoint without a template is refused until `model.chat_template` names one, and
`sft --data` trains on a user's file and exports a model that keeps its tokenizer and template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rlhf_ray.algos.sft import sft_loss
from rlhf_ray.models import (
    MissingChatTemplateError,
    init_model,
    load_causal_lm,
    load_tokenizer,
    prepare_checkpoint,
)
from rlhf_ray.rollout.backends import GenerationParams, HFBackend, stop_token_ids
from rlhf_ray.training.encoding import encode_chat, encode_conversation, end_of_turn, prompt_text

CORPUS = [
    "Where is my parcel? It left the depot this morning and should arrive tomorrow.",
    "Can I get a refund for the broken lamp? Yes, a refund is on its way.",
    "Be brief. Thanks for reaching out, I can help with that.",
] * 30
# (architecture, chat format, pad token, the end-of-turn text the template writes, its marker token)
FORMATS = {
    "llama": ("native", True, "<|end|>\n", "<|end|>"),
    "qwen2": ("chatml", False, "<|im_end|>\n", "<|im_end|>"),
    "gpt_neox": ("llama3", True, "<|eot_id|>", "<|eot_id|>"),
}
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Where is my parcel?"},
    {"role": "assistant", "content": "It left the depot."},
    {"role": "user", "content": "When does it arrive?"},
    {"role": "assistant", "content": "Tomorrow."},
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("chat-models")
    return {arch: str(init_model(CORPUS, root / arch, "tiny", seed=0, architecture=arch, chat_format=fmt,
                                 pad_token=pad).path)
            for arch, (fmt, pad, _, _) in FORMATS.items()}


@pytest.mark.parametrize("arch", list(FORMATS))
def test_checkpoint_is_the_named_class_and_format(checkpoints: dict[str, str], arch: str) -> None:
    _, pad, eot, _ = FORMATS[arch]
    model, tokenizer = load_causal_lm(checkpoints[arch]), load_tokenizer(checkpoints[arch])
    assert model.config.model_type == arch
    saved = json.loads((Path(checkpoints[arch]) / "tokenizer_config.json").read_text())
    assert (saved["pad_token"] is not None) is pad
    assert tokenizer.pad_token is not None  # chosen in memory from existing tokens: no embedding resize
    assert len(tokenizer) == model.get_input_embeddings().num_embeddings
    assert end_of_turn(tokenizer) == eot


@pytest.mark.parametrize("arch", list(FORMATS))
def test_encoding_masks_exactly_the_assistant_turns(checkpoints: dict[str, str], arch: str) -> None:
    _, _, eot, marker = FORMATS[arch]
    tokenizer = load_tokenizer(checkpoints[arch])
    ids, mask = encode_conversation(tokenizer, CONVERSATION)
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    taught = [t for t, m in zip(ids, mask, strict=True) if m]
    replies = [m["content"] + eot for m in CONVERSATION if m["role"] == "assistant"]
    assert taught == [t for r in replies for t in tokenizer(r, add_special_tokens=False)["input_ids"]]
    assert taught.count(tokenizer.convert_tokens_to_ids(marker)) == 2
    context = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert "Be brief." in context and "When does it arrive?" in context and "Tomorrow" not in context
    # OpenAI's weight 0 keeps a turn as context; a text prompt is one user turn, padded rows masked out
    _, weighted = encode_conversation(tokenizer, [*CONVERSATION[:2], {**CONVERSATION[2], "weight": 0},
                                                  *CONVERSATION[3:]])
    assert 0 < sum(weighted) < sum(mask)
    batch = encode_chat(tokenizer, ["Where is my parcel?", CONVERSATION[:4]], ["Tomorrow.", "Tomorrow."], 512)
    assert batch["response_mask"].sum(1).tolist() == [len(tokenizer("Tomorrow." + eot, add_special_tokens=False)
                                                          ["input_ids"])] * 2
    assert bool((batch["response_mask"] <= batch["attention_mask"]).all())


@pytest.fixture
def one_thread():
    """One torch thread for the in-process training below: on a busy 2-core machine two threads spin-wait on
    each other and 40 tiny steps take minutes instead of 2 seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("arch", list(FORMATS))
def test_generation_stops_at_the_templates_end_of_turn(checkpoints: dict[str, str], arch: str, tmp_path: Path,
                                                        one_thread: None) -> None:
    """Overfit one reply in-process, then generate: the response ends at the template's marker (for Llama 3 the
    tokenizer's eos is <|end_of_text|>, so <|eot_id|> comes only from the template and generation config)."""
    _, _, _, marker = FORMATS[arch]
    tokenizer, model = load_tokenizer(checkpoints[arch]), load_causal_lm(checkpoints[arch])
    batch = encode_chat(tokenizer, ["Where is my parcel?"], ["It left."], 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        sft_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                 batch["input_ids"], batch["response_mask"]).backward()
        optimizer.step()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    backend = HFBackend(tmp_path)
    marker_id = tokenizer.convert_tokens_to_ids(marker)
    assert marker_id in backend.stops == stop_token_ids(tokenizer, model.generation_config.eos_token_id)
    sample, = backend.generate(["Where is my parcel?"], ["p"], 1, GenerationParams(max_new_tokens=24, temperature=0))
    assert sample.finished and sample.response_ids[-1] == marker_id
    assert sample.response == "It left."


def test_missing_template_is_refused_until_one_is_configured(checkpoints: dict[str, str], tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(checkpoints["qwen2"], bare)
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(MissingChatTemplateError, match=r"model\.chat_template") as raised:
        prompt_text(load_tokenizer(bare), "Where is my parcel?")
    assert "chatml" in str(raised.value) and str(bare) in str(raised.value)
    with pytest.raises(MissingChatTemplateError):
        prepare_checkpoint(bare, None, tmp_path / "work")
    prepared = prepare_checkpoint(bare, "chatml", tmp_path / "work")
    assert not (bare / "chat_template.jinja").exists()  # the user's directory is never written
    tokenizer = load_tokenizer(prepared)
    assert prompt_text(tokenizer, "Hi") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert HFBackend(prepared).stops == [tokenizer.convert_tokens_to_ids("<|endoftext|>"), tokenizer.eos_token_id]
    template = tmp_path / "mine.jinja"
    template.write_text(load_tokenizer(checkpoints["gpt_neox"]).chat_template)
    assert end_of_turn(load_tokenizer(bare, str(template))) == "<|eot_id|>"


def _sft_file(path: Path) -> int:
    """A small SFT file: multi-turn `messages` rows, prompt/response rows and five bad lines; returns the bad count."""
    good = [{"messages": CONVERSATION}, {"prompt": "Where is my parcel?", "response": "It left the depot."},
            {"messages": [{"role": "user", "content": "Can I get a refund?"},
                          {"role": "assistant", "content": "Yes, a refund is on its way."}]}]
    bad = ["{not json", json.dumps({"text": "no fields"}), json.dumps({"messages": [{"role": "tool", "content": "x"}]}),
           json.dumps({"prompt": "Hi", "response": "  "}), json.dumps({"messages": [{"role": "user", "content": "x"}]})]
    lines = [json.dumps(row) for row in good * 8] + bad
    path.write_text("\n".join(lines) + "\n")
    return len(bad)


@pytest.mark.ray
def test_sft_data_on_a_qwen2_chatml_checkpoint_without_pad(ray_cluster, checkpoints: dict[str, str],
                                                            tmp_path: Path, capsys) -> None:
    from jobs.sft import SFTConfig, train
    from rlhf_ray.config import LineageConfig, RayConfig, WandbConfig

    data = tmp_path / "sft.jsonl"
    bad = _sft_file(data)
    out = tmp_path / "sft"
    result = train(SFTConfig(model_path=checkpoints["qwen2"], data=str(data), output_dir=str(out),
                             ray=RayConfig(num_cpus=2), wandb=WandbConfig(mode="disabled"),
                             lineage=LineageConfig(root=str(tmp_path / "lineage")),
                             train={"epochs": 2, "batch_size": 8, "lr": 3e-3}))
    assert (result["data_rows"], result["bad_rows"]) == (24 + bad, bad)
    assert result["train_rows"] + result["heldout_rows"] == 24 and result["heldout_rows"] >= 1
    assert result["heldout_loss"] < result["heldout_loss_before"]
    reported = [json.loads(line) for line in (out / "bad_rows-sft.jsonl").read_text().splitlines()]
    assert [r["line"] for r in reported] == list(range(25, 30))
    assert "not JSON" in reported[0]["reason"] and "messages[0].role is 'tool'" in reported[2]["reason"]
    assert "line 25 skipped" in capsys.readouterr().err
    exported, given = Path(result["model_dir"]), Path(checkpoints["qwen2"])
    assert (exported / "chat_template.jinja").read_text() == (given / "chat_template.jinja").read_text()
    assert json.loads((exported / "tokenizer_config.json").read_text())["pad_token"] is None
    assert load_tokenizer(exported).get_vocab() == load_tokenizer(given).get_vocab()
    assert load_causal_lm(exported).config.model_type == "qwen2"


def test_init_model_job_builds_from_corpus_files(tmp_path: Path) -> None:
    from jobs.init_model import InitModelConfig, build
    from rlhf_ray.config import LineageConfig

    (tmp_path / "chats.jsonl").write_text(json.dumps({"messages": CONVERSATION}) + "\n")
    (tmp_path / "notes.txt").write_text("\n".join(CORPUS[:3]) + "\n")
    figures = build(InitModelConfig(out=str(tmp_path / "model"), lineage=LineageConfig(root=str(tmp_path / "lin")),
                                    model={"architecture": "gpt_neox", "chat_format": "llama3", "pad_token": False,
                                           "corpus": [str(tmp_path / "chats.jsonl"), str(tmp_path / "notes.txt")]}))
    tokenizer = load_tokenizer(figures["model_dir"])
    assert (figures["architecture"], tokenizer.eos_token) == ("gpt_neox", "<|end_of_text|>")
    assert "<|finetune_right_pad_id|>" not in tokenizer.get_vocab()  # no pad token: it is not in the vocabulary
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        (tmp_path / "bad.jsonl").write_text("{oops\n")
        build(InitModelConfig(out=str(tmp_path / "m2"), model={"corpus": [str(tmp_path / "bad.jsonl")]}))


def test_model_options_name_the_bad_value() -> None:
    from pydantic import ValidationError

    from rlhf_ray.models import ModelOptions

    assert ModelOptions(chat_template="chatml").chat_template == "chatml"
    with pytest.raises(ValidationError, match="'qwen' is neither a named template"):
        ModelOptions(chat_template="qwen")
    lora = ModelOptions(lora={"r": 4, "target_modules": ["q_proj", "v_proj"]}).lora
    assert (lora.r, lora.alpha, lora.target_modules) == (4, 16.0, ["q_proj", "v_proj"])
    with pytest.raises(ValidationError, match=r"lora\.r"):
        ModelOptions(lora={"r": 0})
    with pytest.raises(ValidationError, match=r"lora\.target_modules\n.*target_modules is empty"):
        ModelOptions(lora={"target_modules": []})
