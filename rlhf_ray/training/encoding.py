"""Chat examples → padded token batches with a response mask, the shape every trainer consumes.

The prompt is rendered by the tokenizer's chat template up to the assistant turn; the response and its
end-of-turn marker are tokenized separately and appended, so the boundary never depends on how BPE
merges across it. `response_mask[b, t]` is 1 where token t belongs to the response.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

END_OF_TURN = "<|end|>\n"


def prompt_text(tokenizer: PreTrainedTokenizerBase, prompt: str, system: str | None = None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_chat(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str],
                max_length: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and response_mask [B, T], right-padded; long examples keep their start."""
    rows, masks = [], []
    for prompt, response in zip(prompts, responses, strict=True):
        head = tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        tail = tokenizer(response + END_OF_TURN, add_special_tokens=False)["input_ids"]
        ids = (head + tail)[:max_length]
        rows.append(ids)
        masks.append(([0] * len(head) + [1] * len(tail))[:max_length])
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    response = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (ids, mask) in enumerate(zip(rows, masks, strict=True)):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        attention[b, : len(ids)] = 1
        response[b, : len(mask)] = torch.tensor(mask)
    return {"input_ids": input_ids, "attention_mask": attention, "response_mask": response}
