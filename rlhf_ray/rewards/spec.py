"""Reward sources by name: the `reward.sources` entries and the judge spec strings `RM_DIR | http(s)://URL |
package.module:function`."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, model_validator

from rlhf_ray.config import StrictModel

SourceKind = Literal["rm", "http", "function", "llm_judge"]
# what each kind needs, named so a config error can say which field is missing
NEEDS: dict[str, str] = {"rm": "path", "http": "url", "function": "function", "llm_judge": "path"}
FUNCTION_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
RewardFunction = Callable[[str, str, dict[str, Any]], float]


class RewardSourceSpec(StrictModel):
    """One reward source. `total = Σ_k weight_k · score_k` over the configured sources (`combine_scores`)."""

    kind: SourceKind
    name: str | None = Field(None, description="the source's name in metrics and errors (default: kind and index)")
    weight: float = Field(1.0, description="w_k in the weighted sum")
    path: str | None = Field(None, description="rm: a reward model directory; llm_judge: a causal-LM checkpoint")
    url: str | None = Field(None, description="http: a URL answering POST {prompts, responses} with {scores}")
    function: str | None = Field(None, description="function: 'package.module:function(prompt, response, meta)'")
    normalize: bool = Field(True, description="rm: (r − μ)/σ with the statistics saved beside the model")
    rubric: str | None = Field(None, description="llm_judge: the instructions before the answer (default: "
                               "rlhf_ray.rewards.judge.JUDGE_RUBRIC)")
    score_range: tuple[float, float] = Field((1.0, 10.0), description="llm_judge: the scale the rubric asks for; "
                                             "scores outside it are parse failures")
    max_new_tokens: int = Field(16, ge=1, description="llm_judge: tokens the judge may write")
    failure_score: float | None = Field(None, description="llm_judge: the score of an unparseable verdict (default: "
                                        "the middle of score_range)")
    timeout_s: float = Field(30.0, gt=0, description="http: seconds per request")
    batch_size: int = Field(16, ge=1, description="rows per forward pass or request")

    @model_validator(mode="after")
    def _complete(self) -> RewardSourceSpec:
        field = NEEDS[self.kind]
        if not getattr(self, field):
            raise ValueError(f"reward source kind={self.kind!r} needs {field!r}; got none")
        if self.kind == "http" and not re.match(r"^https?://", self.url or ""):
            raise ValueError(f"reward source url must start with http:// or https://; got {self.url!r}")
        if self.kind == "function" and not FUNCTION_SPEC.match(self.function or ""):
            raise ValueError(f"reward source function must be 'package.module:function'; got {self.function!r}")
        low, high = self.score_range
        if not low < high:
            raise ValueError(f"score_range must be [low, high] with low < high; got {list(self.score_range)}")
        return self

    def label(self, index: int) -> str:
        """The name metrics and errors use: `name`, else `<kind>_<index>`."""
        return self.name or f"{self.kind}_{index}"


def parse_judge_spec(spec: str, **fields: Any) -> RewardSourceSpec:
    """A judge spec string as a source: `http(s)://…` → http, `package.module:function` → function, anything
    else → a reward model directory. `fields` set the rest (e.g. normalize)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"judge must be RM_DIR, http(s)://URL or package.module:function; got {spec!r}")
    if re.match(r"^https?://", spec):
        return RewardSourceSpec(kind="http", url=spec, name="judge", **fields)
    if FUNCTION_SPEC.match(spec):
        return RewardSourceSpec(kind="function", function=spec, name="judge", **fields)
    return RewardSourceSpec(kind="rm", path=spec, name="judge", **fields)


def load_function(spec: str) -> RewardFunction:
    """Import `package.module:function`; the module must be importable from this process (installed or on
    PYTHONPATH, which Ray workers inherit from the driver's working directory)."""
    if not FUNCTION_SPEC.match(spec):
        raise ValueError(f"function must be 'package.module:function'; got {spec!r}")
    module_name, attribute = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"function {spec!r}: cannot import module {module_name!r} ({error})") from error
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"function {spec!r}: module {module_name!r} has no callable {attribute!r}")
    return function
