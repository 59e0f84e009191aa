"""The HTTP API's request bodies as pydantic models, and error messages that name field, value, expectation.

Chat requests follow the OpenAI chat-completions format: system (or `developer`, its newer name), user and
assistant turns whose content is a string or a list of text parts, `n`, `stop`,
`max_tokens`, `temperature`, `top_p`, `seed`, `logprobs`, `stream` (+ `stream_options.include_usage`). Unknown
fields are ignored there on purpose: OpenAI clients send optional parameters (`frequency_penalty`, ...) this
server does not implement and that change nothing about the shape of the answer; `top_logprobs > 0`, which
would, is refused with a 400. Feedback and admin bodies are ours, so they are strict.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from rlhf_ray.contracts import MAX_TEXT_CHARS

MAX_MESSAGES = 64
MAX_ID_CHARS = 256
MAX_METADATA_KEYS = 16
MAX_STOP = 4  # OpenAI's limit on stop sequences
MAX_STOP_CHARS = 64
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]


MAX_CONTENT_PARTS = 32


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: Text

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_joined(cls, content: Any) -> Any:
        """OpenAI's list form of content: its text parts join with newlines (as vLLM's OpenAI server joins them).
        Other parts (images, audio, files) are refused: the policies read text."""
        if not isinstance(content, list):
            return content
        if not 1 <= len(content) <= MAX_CONTENT_PARTS:
            raise ValueError(f"a string, or a list of 1 to {MAX_CONTENT_PARTS} text parts")
        for index, part in enumerate(content):
            if not (isinstance(part, dict) and set(part) == {"type", "text"} and part["type"] == "text"
                    and isinstance(part["text"], str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"text parts only, each {{'type': 'text', 'text': '...'}}; part {index} is {kind!r}")
        return "\n".join(part["text"] for part in content)

    def turn(self) -> dict[str, str]:
        """The message as a chat template reads it; `developer` is OpenAI's newer name for the system turn."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.content}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


StopText = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Identifier
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="newer clients' name for max_tokens")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0)
    n: int = Field(1, ge=1)
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP)] | None = None
    logprobs: bool = False
    top_logprobs: Literal[0] | None = Field(None, description="only the sampled tokens' log-probs are returned")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Identifier | None = None
    metadata: dict[Identifier, Identifier] | None = Field(None, max_length=MAX_METADATA_KEYS)

    @field_validator("messages")
    @classmethod
    def _ends_with_a_user_turn(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError("a last message with role 'user' (the turn the model answers)")
        return messages

    def conversation(self) -> list[dict[str, str]]:
        """The whole conversation (system, user and assistant turns), for the policy's chat template."""
        return [message.turn() for message in self.messages]

    def stop_strings(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens or self.max_completion_tokens

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class _Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response_id: Identifier
    feedback_token: Identifier | None = Field(None, description="the answer's feedback token (or the "
                                              "x-rlhf-feedback-token header)")
    rationale: Text | None = None


class ThumbsFeedback(_Feedback):
    kind: Literal["thumbs"]
    value: Literal[0, 1] = Field(description="1 = thumbs up, 0 = thumbs down")


class LikertFeedback(_Feedback):
    kind: Literal["likert"]
    value: int = Field(ge=1, le=5)


class PairwiseFeedback(_Feedback):
    kind: Literal["pairwise"]
    other_response_id: Identifier
    other_feedback_token: Identifier | None = Field(None, description="the other answer's feedback token")
    choice: Literal["a", "b", "tie"] = Field(description="a = response_id, b = other_response_id")


class CorrectionFeedback(_Feedback):
    kind: Literal["correction"]
    text: Text = Field(min_length=1, description="the answer as the user corrected it")


class FlagFeedback(_Feedback):
    kind: Literal["flag"]
    category: Literal["harmful_instructions", "privacy", "harassment"]
    severity: int | None = Field(None, ge=1, le=3)


FeedbackRequest = Annotated[
    ThumbsFeedback | LikertFeedback | PairwiseFeedback | CorrectionFeedback | FlagFeedback,
    Field(discriminator="kind"),
]


FEEDBACK_ADAPTER: TypeAdapter[Any] = TypeAdapter(FeedbackRequest)


class WeightsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    canary_weight: float = Field(ge=0, le=1)
    mode: Literal["split", "shadow"] | None = None
    reason: Annotated[str, Field(max_length=500)] = "admin"


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(max_length=500)] = "admin"


_MAX_SHOWN = 60
_KINDS = frozenset({"thumbs", "likert", "pairwise", "correction", "flag"})


def _location(loc: tuple[int | str, ...]) -> str:
    # pydantic puts the tag of the union member tried first in the location ('thumbs', 'value'): drop it
    parts = loc[1:] if loc and loc[0] in _KINDS else loc
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def describe_validation_error(error: ValidationError) -> str:
    """`field 'messages[0].role': got 'bot', expected 'system', 'user' or 'assistant'` — one line per problem,
    at most three, so a client sees what to change without reading pydantic's internals."""
    lines = []
    for detail in error.errors()[:3]:
        field = _location(detail["loc"])
        if detail["type"] == "missing":
            lines.append(f"field '{field}': missing, expected a value")
        elif detail["type"] == "extra_forbidden":
            lines.append(f"field '{field}': unknown field, expected only the documented fields")
        else:
            shown = repr(detail.get("input"))
            shown = shown if len(shown) <= _MAX_SHOWN else shown[:_MAX_SHOWN] + "…"
            expected = detail["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
            lines.append(f"field '{field}': got {shown}, expected {expected}")
    return "; ".join(lines)


def parse_model(model: type[BaseModel] | TypeAdapter[Any], data: Any) -> Any:
    """Validate `data` against a model (or the feedback union's adapter); a ValidationError becomes a
    ValueError with a readable message."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data)
        return model.model_validate(data)
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None
