"""Chat examples → padded token batches with a response mask, the shape every trainer consumes.

Prompts are rendered by the checkpoint's own chat template (`apply_chat_template`), system messages and
multi-turn history included. Each assistant turn is appended as its own text followed by the template's
end-of-turn text (`end_of_turn`, read off the template itself), and the pieces are tokenized separately,
so the boundary never depends on how BPE merges across it. `response_mask[b, t]` is 1 where token t belongs
to an assistant turn (its end-of-turn marker included, so the model learns to stop); padding is marked by
`attention_mask` alone, so a pad id equal to eos is harmless.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rlhf_ray.models.loading import require_chat_template

Message = Mapping[str, str]
# A prompt is a user text, or a conversation (system / user / assistant messages) that ends before the reply.
Prompt = str | Sequence[Message]
ROLES = ("system", "user", "assistant")
# Stands in for a reply when the end-of-turn text is read off a template; no template emits it by itself.
_PROBE_REPLY = "RLHFRAYPROBEREPLY"


def as_messages(prompt: Prompt, system: str | None = None) -> list[dict[str, str]]:
    """The conversation a prompt stands for: a text becomes one user turn (after `system` when given)."""
    head = [{"role": "system", "content": system}] if system else []
    if isinstance(prompt, str):
        return [*head, {"role": "user", "content": prompt}]
    return [*head, *({"role": m["role"], "content": m["content"]} for m in prompt)]


def prompt_text(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, system: str | None = None) -> str:
    """The prompt rendered by the tokenizer's chat template, ending with the opening of the assistant turn."""
    require_chat_template(tokenizer)
    return tokenizer.apply_chat_template(as_messages(prompt, system), add_generation_prompt=True, tokenize=False)


def end_of_turn(tokenizer: PreTrainedTokenizerBase) -> str:
    """The text the chat template writes after an assistant reply (`<|end|>\\n`, `<|im_end|>\\n`, `<|eot_id|>`).

    Read off the template: render a conversation whose reply is a probe string and keep what follows the
    probe. A template that writes nothing there ends turns with the tokenizer's eos.
    """
    require_chat_template(tokenizer)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE_REPLY}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    at = rendered.rfind(_PROBE_REPLY)
    if at < 0:
        raise ValueError(f"the chat template of {tokenizer.name_or_path!r} does not write the assistant's reply "
                         "into the conversation; expected a template that renders assistant messages")
    suffix = rendered[at + len(_PROBE_REPLY):] or (tokenizer.eos_token or "")
    if not suffix:
        raise ValueError(f"the chat template of {tokenizer.name_or_path!r} writes nothing after a reply and the "
                         "tokenizer has no eos token: nothing would mark where a response ends")
    return suffix


def check_conversation(messages: object) -> list[dict[str, str]]:
    """`messages` as a list of {role, content} dicts with at least one assistant turn, or ValueError saying
    what is wrong (the reason `sft --data` reports for a bad row)."""
    if not isinstance(messages, list | tuple) or not messages:
        raise ValueError("messages must be a non-empty list of {role, content} objects")
    checked = []
    for k, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"messages[{k}] is {type(message).__name__}, expected an object with role and content")
        role, content, weight = message.get("role"), message.get("content"), message.get("weight", 1)
        if role not in ROLES:
            raise ValueError(f"messages[{k}].role is {role!r}; expected one of {list(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"messages[{k}].content is empty or not text")
        if weight not in (0, 1) or isinstance(weight, bool):
            raise ValueError(f"messages[{k}].weight is {weight!r}; expected 0 or 1 (OpenAI's per-turn loss switch)")
        checked.append({"role": role, "content": content, **({"weight": 0} if weight == 0 else {})})
    if not any(m["role"] == "assistant" for m in checked):
        raise ValueError("messages have no assistant turn to learn from")
    if checked[0]["role"] == "assistant":
        raise ValueError("messages start with an assistant turn; expected a system or user turn first")
    return checked


def encode_conversation(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message],
                        eot: str | None = None) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and its mask: 1 on every assistant turn's tokens and end-of-turn marker
    (except turns with OpenAI's `"weight": 0`, which stay context).

    Turn by turn: the template renders the history up to assistant turn i with the generation prompt; the part
    not yet written is context (mask 0), then the reply and `eot` (mask 1). A template that renders earlier
    turns differently once later turns follow (it is not prefix-consistent) is refused, since its history
    could not be split at the replies. Messages after the last assistant turn are dropped.
    """
    eot = end_of_turn(tokenizer) if eot is None else eot
    weights = [m.get("weight", 1) for m in messages]
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    written, ids, mask = "", [], []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        context = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=False)
        if not context.startswith(written):
            raise ValueError(f"the chat template of {tokenizer.name_or_path!r} renders turns before assistant turn "
                             f"{i} differently once that turn follows, so the history cannot be split at replies")
        head = tokenizer(context[len(written):], add_special_tokens=False)["input_ids"]
        tail = tokenizer(message["content"] + eot, add_special_tokens=False)["input_ids"]
        ids += head + tail
        mask += [0] * len(head) + [int(weights[i] != 0)] * len(tail)
        written = context + message["content"] + eot
    if not ids:
        raise ValueError("a conversation to encode needs an assistant turn")
    return ids, mask


def encode_conversations(tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[Message]],
                         max_length: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and response_mask [B, T], right-padded; long examples keep their start."""
    eot = end_of_turn(tokenizer)
    rows, masks = [], []
    for messages in conversations:
        ids, mask = encode_conversation(tokenizer, messages, eot)
        rows.append(ids[:max_length])
        masks.append(mask[:max_length])
    width = max(len(r) for r in rows)
    # Any valid id fills the padding: attention_mask marks it, nothing compares ids with the pad id.
    fill = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    input_ids = torch.full((len(rows), width), fill, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    response = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (ids, mask) in enumerate(zip(rows, masks, strict=True)):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        attention[b, : len(ids)] = 1
        response[b, : len(mask)] = torch.tensor(mask)
    return {"input_ids": input_ids, "attention_mask": attention, "response_mask": response}


def with_response(prompt: Prompt, response: str) -> list[dict[str, Any]]:
    """The prompt's conversation with `response` as the final assistant turn; assistant turns inside the prompt
    are context (`weight` 0), as in a preference pair or a rollout, where only the response is judged."""
    history = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in as_messages(prompt)]
    return [*history, {"role": "assistant", "content": response}]


def conversation_of(row: Mapping[str, Any]) -> list[dict[str, str]]:
    """The conversation of a training row: its `messages` (a list, or that list as JSON text, as SFT datasets
    carry it through Ray Data), else its `prompt` (text or conversation) followed by its `response`."""
    if "messages" in row:
        messages = row["messages"]
        return json.loads(messages) if isinstance(messages, str) else list(messages)
    return with_response(row["prompt"], row["response"])


def batch_conversations(batch: Mapping[str, Sequence[Any]]) -> list[list[dict[str, str]]]:
    """`conversation_of` every row of a column batch (columns as lists or numpy arrays)."""
    columns = list(batch)
    return [conversation_of({c: batch[c][i] for c in columns}) for i in range(len(batch[columns[0]]))]


def encode_chat(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], responses: Sequence[str],
                max_length: int) -> dict[str, torch.Tensor]:
    """`encode_conversations` of (prompt, response) pairs: each prompt (a text or a conversation) followed by
    its response as the assistant's turn (`with_response`)."""
    conversations = [with_response(prompt, response) for prompt, response in zip(prompts, responses, strict=True)]
    return encode_conversations(tokenizer, conversations, max_length)
