"""An offline byte-level BPE tokenizer with chat markers, trained on whatever corpus the caller has.

rlhf-ray never downloads a tokenizer: tiny models get one trained here in milliseconds, so tests and
CPU runs are self-contained and a checkpoint directory always carries its own tokenizer.

Three chat formats (`CHAT_FORMATS`) give tiny stand-ins for the checkpoints users bring: `native` (this
project's own markers), `chatml` (Qwen2-Instruct: `<|im_start|>role\\n…<|im_end|>`, eos `<|im_end|>`) and
`llama3` (`<|start_header_id|>role<|end_header_id|>\\n\\n…<|eot_id|>`). Their templates are also what
`model.chat_template: chatml | llama3` puts on a checkpoint that ships none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
# Order fixes the ids: <pad> is 0, <bos> 1, <eos> 2, <unk> 3, then the chat markers.
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, SYSTEM, USER, ASSISTANT, END)
DEFAULT_MODEL_MAX_LENGTH = 512

_UNKNOWN_ROLE = (
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{%- endif -%}"
)

# Every turn is `<|role|>\n{content}<|end|>\n`; the generation prompt opens an assistant turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}" + _UNKNOWN_ROLE +
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)

# ChatML as Qwen2-Instruct writes it (without Qwen's default system prompt): no bos, `<|im_end|>\n` after a turn.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}" + _UNKNOWN_ROLE +
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

# Llama 3's layout (without the date/tool preamble of 3.1): bos once, a header per turn, `<|eot_id|>` after it.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}" + _UNKNOWN_ROLE +
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class ChatFormat:
    """The special tokens and chat template of one family of checkpoints.

    `tokens` are the special tokens in id order (the pad token is left out of the vocabulary when a
    checkpoint is built without one, unless it doubles as another role, as `<|endoftext|>` does in Qwen2).
    `generation_eos` are the tokens the model's generation config stops on (eos and the end-of-turn marker).
    """

    template: str
    tokens: tuple[str, ...]
    eos: str
    generation_eos: tuple[str, ...]
    bos: str | None = None
    pad: str | None = None
    unk: str | None = None

    def vocabulary_tokens(self, pad_token: bool) -> list[str]:
        """The special tokens to train into the vocabulary; a pad-only token is dropped without a pad."""
        pad_only = self.pad is not None and self.pad not in (self.eos, self.bos, self.unk, *self.generation_eos)
        return [t for t in self.tokens if pad_token or not (pad_only and t == self.pad)]


CHAT_FORMATS: Mapping[str, ChatFormat] = MappingProxyType({
    "native": ChatFormat(CHAT_TEMPLATE, SPECIAL_TOKENS, eos=EOS, generation_eos=(EOS, END), bos=BOS, pad=PAD, unk=UNK),
    # Qwen2-Instruct: eos is the end of a turn; <|endoftext|> is its pad and the base model's end of document.
    "chatml": ChatFormat(CHATML_TEMPLATE, ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), eos="<|im_end|>",
                         generation_eos=("<|im_end|>", "<|endoftext|>"), pad="<|endoftext|>"),
    # Llama 3 base: eos is the end of a document; the instruct generation config adds <|eot_id|>.
    "llama3": ChatFormat(LLAMA3_TEMPLATE, ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                           "<|end_header_id|>", "<|eot_id|>", "<|finetune_right_pad_id|>"),
                         eos="<|end_of_text|>", generation_eos=("<|end_of_text|>", "<|eot_id|>"),
                         bos="<|begin_of_text|>", pad="<|finetune_right_pad_id|>"),
})
# The templates `model.chat_template` may name (see `rlhf_ray.models.options`).
NAMED_TEMPLATES: Mapping[str, str] = MappingProxyType({"chatml": CHATML_TEMPLATE, "llama3": LLAMA3_TEMPLATE})


def get_chat_format(name: str) -> ChatFormat:
    """The chat format named `name`; an unknown name fails naming the value and the choices."""
    if name not in CHAT_FORMATS:
        raise ValueError(f"unknown chat format {name!r}; expected one of {sorted(CHAT_FORMATS)}")
    return CHAT_FORMATS[name]


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
    chat_format: str = "native", pad_token: bool = True,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` and wrap it as a Hugging Face fast tokenizer.

    Byte-level means any string encodes without `<unk>` and decodes back exactly, whatever the corpus
    covered. `vocab_size` is an upper bound: a small corpus runs out of merges sooner. The BPE trainer
    breaks ties by token id, so the same corpus and size give the same vocabulary on every run.
    Plain `encode` prepends the bos token when the format has one; chat prompts get theirs from the chat
    template instead. `pad_token=False` builds a tokenizer without a pad token, as Qwen2 and Llama 3 ship.
    """
    fmt = get_chat_format(chat_format)
    special = fmt.vocabulary_tokens(pad_token)
    backend = Tokenizer(models.BPE(unk_token=fmt.unk))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    named = {fmt.pad if pad_token else None, fmt.bos, fmt.eos, fmt.unk}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=fmt.pad if pad_token else None,
        bos_token=fmt.bos,
        eos_token=fmt.eos,
        unk_token=fmt.unk,
        extra_special_tokens=[t for t in special if t not in named],
        add_bos_token=fmt.bos is not None,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        chat_template=fmt.template,
    )
