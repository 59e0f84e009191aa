"""Offline tokenizer, tiny/small Llama presets, atomic checkpoint writes and hub-free loading."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import torch
from jinja2 import TemplateError

from rlhf_ray.models import (
    PRESETS,
    SPECIAL_TOKENS,
    ModelCard,
    ModelNotFoundError,
    build_model,
    count_parameters,
    get_preset,
    init_model,
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
    train_tokenizer,
)

PRODUCTS = ["laptop", "Headphones", "coffee maker", "running shoes", "e-book", "Router X200", "café table"]
ISSUES = ["arrived broken", "never arrived", "is the wrong colour", "stopped working", "was charged twice"]
ASKS = ["Can I get a refund", "How do I return it", "When will it ship", "Could you swap it", "Who do I call"]
REPLIES = ["Sorry to hear that!", "Thanks for reaching out.", "I can help with that.", "Let me check."]
ACTIONS = ["A refund of ${n}.99 is on its way", "A new one ships in {n} days", "Order #{n}42 is cancelled"]


def make_corpus(n: int = 300) -> list[str]:
    """Customer-support questions and answers, a pure function of the seed."""
    rng = random.Random(0)
    corpus = []
    for _ in range(n):
        corpus.append(f"My {rng.choice(PRODUCTS)} {rng.choice(ISSUES)}. {rng.choice(ASKS)}?")
        corpus.append(f"{rng.choice(REPLIES)} {rng.choice(ACTIONS).format(n=rng.randint(1, 99))}.")
    return corpus


CORPUS = make_corpus()
TINY_VOCAB = PRESETS["tiny"].vocab_size
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "My laptop arrived broken."},
    {"role": "assistant", "content": "Sorry to hear that!"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, TINY_VOCAB)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> ModelCard:
    return init_model(CORPUS, tmp_path_factory.mktemp("models") / "tiny", size="tiny", seed=7)


def test_round_trip_restores_text_without_unknown_tokens(tokenizer) -> None:
    unseen = "Ünïcode 🚚 arrives\ttomorrow,  maybe?"
    for text in [*CORPUS, unseen]:
        ids = tokenizer.encode(text)
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_special_tokens_are_set_distinct_and_atomic(tokenizer) -> None:
    named = [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id]
    assert named == [0, 1, 2, 3]
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert len(set(ids)) == len(SPECIAL_TOKENS)
    assert tokenizer.encode("<|user|><|end|>") == [tokenizer.bos_token_id, *ids[5:6], ids[7]]
    assert tokenizer.model_max_length == 512
    assert TINY_VOCAB // 8 < len(tokenizer) <= TINY_VOCAB


def test_chat_template_renders_roles_and_generation_prompt(tokenizer) -> None:
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert rendered == (
        "<bos><|system|>\nBe brief.<|end|>\n<|user|>\nMy laptop arrived broken.<|end|>\n"
        "<|assistant|>\nSorry to hear that!<|end|>\n"
    )
    prompt = tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|user|>\nMy laptop arrived broken.<|end|>\n<|assistant|>\n")
    ids = tokenizer.apply_chat_template(CHAT[:2], add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1


def test_chat_template_rejects_unknown_role(tokenizer) -> None:
    with pytest.raises(TemplateError, match="unknown chat role: tool"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "{}"}], tokenize=False)


def test_same_corpus_and_size_give_identical_tokenizer(tokenizer) -> None:
    again = train_tokenizer(CORPUS, TINY_VOCAB)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_preset_parameter_counts() -> None:
    assert 500_000 <= PRESETS["tiny"].num_parameters() <= 2_000_000
    assert 8_000_000 <= PRESETS["small"].num_parameters() <= 35_000_000
    with pytest.raises(ValueError, match="'huge'"):
        get_preset("huge")


def test_build_model_takes_tokenizer_ids_and_seed(tokenizer) -> None:
    model = build_model(tokenizer, "tiny", seed=0)
    config = model.config
    assert (config.vocab_size, config.pad_token_id, config.bos_token_id, config.eos_token_id) == (
        len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert 500_000 <= count_parameters(model) <= 2_000_000
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    same = build_model(tokenizer, "tiny", seed=0).state_dict()
    other = build_model(tokenizer, "tiny", seed=1).state_dict()
    assert all(torch.equal(tensor, same[name]) for name, tensor in model.state_dict().items())
    embedding = "model.embed_tokens.weight"
    assert not torch.equal(model.state_dict()[embedding], other[embedding])


def test_init_model_card(checkpoint: ModelCard, tokenizer) -> None:
    assert checkpoint.size == "tiny"
    assert checkpoint.vocab_size == len(tokenizer) == checkpoint.config["vocab_size"]
    assert checkpoint.num_parameters == PRESETS["tiny"].num_parameters(len(tokenizer))
    assert checkpoint.config["tie_word_embeddings"] is True
    written = {path.name for path in checkpoint.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= written
    assert list(checkpoint.path.parent.iterdir()) == [checkpoint.path]


def test_checkpoint_reloads_offline_with_identical_logits(checkpoint: ModelCard, tokenizer,
                                                          monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # conftest also sets it before huggingface_hub is imported
    loaded_tokenizer = load_tokenizer(checkpoint.path)
    loaded = load_causal_lm(str(checkpoint.path))
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert loaded_tokenizer.chat_template == tokenizer.chat_template

    original = build_model(train_tokenizer(CORPUS, TINY_VOCAB), "tiny", seed=7)
    batch = loaded_tokenizer(CORPUS[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, original(**batch).logits)


def test_reloaded_model_generates_from_chat_prompt(checkpoint: ModelCard) -> None:
    tokenizer = load_tokenizer(checkpoint.path)
    model = load_causal_lm(checkpoint.path)
    prompt = tokenizer.apply_chat_template(CHAT[:2], add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    generated = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


def test_init_model_replaces_existing_dir_atomically(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"old")
    card = init_model(CORPUS[:50], out, seed=1)
    assert card.path == out.absolute()
    assert list(tmp_path.iterdir()) == [out]
    assert not (out / "stale.bin").exists()
    assert resolve_model_path(out) == out.absolute()


@pytest.mark.parametrize("value", ["gpt2", "meta-llama/Llama-3-8B", "missing-dir", "empty-dir", "a-file"])
def test_resolve_model_path_rejects_anything_but_a_local_checkpoint(tmp_path: Path, monkeypatch,
                                                                    value: str) -> None:
    monkeypatch.chdir(tmp_path)
    Path("empty-dir").mkdir()
    Path("a-file").write_text("{}")
    with pytest.raises(ModelNotFoundError) as raised:
        resolve_model_path(value)
    message = str(raised.value)
    assert repr(value) in message
    assert "a local Hugging Face checkpoint directory containing config.json" in message
    assert "never downloads" in message and "rlhf-ray init-model --out DIR" in message
    with pytest.raises(ModelNotFoundError, match=re.escape(value)):
        load_causal_lm(value)
