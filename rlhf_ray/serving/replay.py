"""Replayed production traffic for a canary: the requests of a JSONL file, sent again and again through the HTTP
API, each answer judged by a scripted user (a `package.module:function`), so a canary can reach its decision without
the simulator.

A traffic row is a chat request: `messages` (OpenAI chat messages) or `prompt` (one user turn), an optional
`user` (the router keeps a user on one variant; rows without one get a fresh user per request, so the router's
weights split them), and any other fields, which only the scripted user sees (a reference answer, a label).

The scripted user is `function(request, response, meta)`: `request` is the row, `response` the answer's text,
`meta` = {response_id, variant, model, user, pass, usage}. It returns True/False (a thumb), an int 1–5 (a Likert
rating), a feedback body (`{"kind": "pairwise" | "correction" | "flag", ...}` without `response_id`) or None (no
feedback). Every answer it judges is posted to the feedback endpoint like a real user's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_ray.serving.schemas import FEEDBACK_ADAPTER, ChatMessage, parse_model

ScriptedUser = Callable[[dict[str, Any], str, dict[str, Any]], Any]


class TrafficFileError(ValueError):
    """A traffic file that cannot be replayed: missing, empty, or a row without a request."""


def _messages(row: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(row, dict):
        raise TrafficFileError(f"{where}: got {type(row).__name__}, expected a JSON object")
    if isinstance(row.get("messages"), list) and row["messages"]:
        try:
            return [parse_model(ChatMessage, message).model_dump() for message in row["messages"]]
        except ValueError as error:
            raise TrafficFileError(f"{where}: field 'messages': {error}") from None
    if isinstance(row.get("prompt"), str) and row["prompt"].strip():
        return [{"role": "user", "content": row["prompt"]}]
    shown = {key: row.get(key) for key in ("messages", "prompt")}
    raise TrafficFileError(f"{where}: got {shown}, expected 'messages' (a non-empty list of chat messages) or "
                           "'prompt' (non-empty text)")


def read_traffic(path: str) -> list[dict[str, Any]]:
    """The rows of a traffic file, each with its `messages` made explicit. Any bad line fails the whole file, naming
    its line number: a replay that silently skipped requests would judge the canary on other traffic."""
    file = Path(path)
    if not file.is_file():
        raise TrafficFileError(f"traffic.replay {path!r} is not a file; expected a JSONL file of chat requests")
    rows = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"traffic.replay {path} line {number}"
        try:
            row = json.loads(line)
        except ValueError as error:
            raise TrafficFileError(f"{where}: not JSON ({error})") from None
        user = row.get("user") if isinstance(row, dict) else None
        if user is not None and not (isinstance(user, str) and user):
            raise TrafficFileError(f"{where}: field 'user': got {user!r}, expected a non-empty string")
        rows.append({**row, "messages": _messages(row, where)})
    if not rows:
        raise TrafficFileError(f"traffic.replay {path!r} has no rows; expected one chat request per line")
    return rows


def feedback_body(verdict: Any, response_id: str) -> dict[str, Any] | None:
    """The feedback request a scripted user's verdict stands for (None: no feedback), validated as the server
    would validate it."""
    if verdict is None:
        return None
    if isinstance(verdict, bool):
        body: dict[str, Any] = {"kind": "thumbs", "value": int(verdict)}
    elif isinstance(verdict, int):
        body = {"kind": "likert", "value": verdict}
    elif isinstance(verdict, dict):
        body = dict(verdict)
    else:
        raise ValueError(f"scripted user returned {verdict!r}; expected True/False (thumbs), an int 1–5 (Likert), "
                         "a feedback body dict or None")
    body["response_id"] = response_id
    try:
        parse_model(FEEDBACK_ADAPTER, body)
    except ValueError as error:
        raise ValueError(f"scripted user returned {verdict!r}: {error}") from None
    return body


@dataclass
class ReplayRequest:
    row: dict[str, Any]
    user: str
    replay_pass: int


class ReplayTraffic:
    """Cycles through the traffic rows; judges answers with the scripted user (None: none is given)."""

    def __init__(self, rows: list[dict[str, Any]], judge: ScriptedUser | None, model: str, max_tokens: int,
                 temperature: float) -> None:
        self.rows, self.judge = rows, judge
        self.model, self.max_tokens, self.temperature = model, max_tokens, temperature
        self.sent = 0
        self.feedback: Counter[str] = Counter()
        self.unjudged = 0

    def next_request(self) -> ReplayRequest:
        row = self.rows[self.sent % len(self.rows)]
        request = ReplayRequest(row, row.get("user") or f"replay-user-{self.sent}", self.sent // len(self.rows))
        self.sent += 1
        return request

    def chat_body(self, request: ReplayRequest) -> dict[str, Any]:
        return {"model": self.model, "messages": request.row["messages"], "max_tokens": self.max_tokens,
                "temperature": self.temperature, "user": request.user}

    def judge_reply(self, request: ReplayRequest, reply: dict[str, Any]) -> dict[str, Any] | None:
        """The feedback body for `reply` (a chat completion), or None."""
        if self.judge is None:
            return None
        meta = {"response_id": reply["id"], "variant": reply.get("variant"), "model": reply.get("model"),
                "user": request.user, "pass": request.replay_pass, "usage": reply.get("usage")}
        body = feedback_body(self.judge(request.row, reply["choices"][0]["message"]["content"], meta), reply["id"])
        if body is None:
            self.unjudged += 1
        else:
            self.feedback[body["kind"]] += 1
        return body

    def figures(self) -> dict[str, Any]:
        return {"replay_rows": len(self.rows), "replay_passes": -(-self.sent // len(self.rows)),
                "feedback_sent": dict(self.feedback), "answers_unjudged": self.unjudged}
