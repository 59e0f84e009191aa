"""An offline byte-level BPE tokenizer with chat markers, trained on whatever corpus the caller has.

rlhf-ray never downloads a tokenizer: tiny models get one trained here in milliseconds, so tests and
CPU runs are self-contained and a checkpoint directory always carries its own tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
# Order fixes the ids: <pad> is 0, <bos> 1, <eos> 2, <unk> 3, then the chat markers.
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, SYSTEM, USER, ASSISTANT, END)
DEFAULT_MODEL_MAX_LENGTH = 512

# Every turn is `<|role|>\n{content}<|end|>\n`; the generation prompt opens an assistant turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, model_max_length: int = DEFAULT_MODEL_MAX_LENGTH
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` and wrap it as a Hugging Face fast tokenizer.

    Byte-level means any string encodes without `<unk>` and decodes back exactly, whatever the corpus
    covered. `vocab_size` is an upper bound: a small corpus runs out of merges sooner. The BPE trainer
    breaks ties by token id, so the same corpus and size give the same vocabulary on every run.
    Plain `encode` prepends `<bos>`; chat prompts get theirs from the chat template instead.
    """
    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        extra_special_tokens=list(SPECIAL_TOKENS[4:]),
        add_bos_token=True,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )
