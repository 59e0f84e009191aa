"""Clean feedback rows of every signal type, in the contract format, from the world's people.

User and evaluator signals are one row per interaction. Annotator signals come from labeling
*items* (a prompt with candidate responses) that several annotators label, in sessions, so that
agreement, consensus and fatigue can be measured downstream.

Policy feedback comes from train prompts only. The judge set (`split="validation"`: annotator labels on validation
prompts) exists to train and score judges, never the policy's reward; its ids carry a `judge` mark so they never
collide with the policy feedback's.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from rlhf_ray.contracts import RUBRIC_CRITERIA, SCHEMA_VERSION
from rlhf_ray.sim.judgments import (
    TIE_MARGIN,
    best_of_n_ranking,
    describe,
    implicit_events,
    likert,
    pairwise_choice,
    reported_success,
    rubric_scores,
    safety_review,
    spammer_rationale,
    thumbs_up,
)
from rlhf_ray.sim.population import AnnotatorProfile, UserProfile
from rlhf_ray.sim.prompts import PromptSpec
from rlhf_ray.sim.responses import POLICY_STYLE_MIX, STYLES, corrected_response, draw_style
from rlhf_ray.sim.utility import UtilityBreakdown
from rlhf_ray.sim.world import World

Row = dict[str, Any]
SAFETY_REVIEWERS = 5
SECONDS_PER_LABEL = 40.0
USER_RUBRIC_SHARE = 0.5
THUMBS_SHARE = 0.6
MAX_DRAWS_FOR_FLAWED_RESPONSE = 5
# Where a world's clock starts when its config leaves `start_time` unset and nothing pins it (tests, demos,
# benchmarks that build a World directly: the times then only order the events). `rlhf-ray simulate` pins it.
DEFAULT_START_TIME = datetime(2026, 1, 5, tzinfo=UTC)


def signal_id(seed: int, signal_type: str, shard_index: int, row_index: int) -> str:
    """A UUID-shaped id that depends only on its coordinates, so reruns give identical shards."""
    digest = hashlib.blake2b(f"{seed}/{signal_type}/{shard_index}/{row_index}".encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest))


@dataclass(frozen=True)
class Answer:
    """A response from a policy version, with its hidden utility."""

    text: str
    policy_version: str
    breakdown: UtilityBreakdown


@dataclass(frozen=True)
class Item:
    """A labeling task: one prompt and its candidate answers (one for a rubric, two for a pair, N to rank)."""

    item_id: str
    spec: PromptSpec
    answers: tuple[Answer, ...]


@dataclass(frozen=True)
class Assignment:
    """One annotator labeling one item at a position within a session."""

    item: Item
    annotator: AnnotatorProfile
    position: int
    when: datetime
    session_id: str


class RowFactory:
    """Builds the clean rows of one shard; `rng` is the shard's own stream."""

    def __init__(self, world: World, signal_type: str, shard_index: int, rng: np.random.Generator,
                 gold_fraction: float = 0.0, split: str = "train") -> None:
        self.world = world
        self.gold_fraction = gold_fraction
        self.item_truth: list[dict[str, Any]] = []
        self.signal_type = signal_type
        self.shard_index = shard_index
        self.rng = rng
        self._prompts = world.split(split)
        self._mark = "" if split == "train" else "judge-"
        self._row_index = 0
        self._start: datetime = world.config.start_time or DEFAULT_START_TIME
        self._span_seconds = world.config.span_days * 86_400.0

    def rows(self, count: int) -> list[Row]:
        builders: dict[str, Callable[[int], list[Row]]] = {
            "pairwise": lambda n: self._annotated(n, 2, self._label_pair),
            "ranking": lambda n: self._annotated(n, self.world.config.ranking_size, self._label_ranking),
            "rating": self._ratings,
            "correction": lambda n: self._per_interaction(n, self._correction),
            "implicit": self._implicit,
            "safety_flag": lambda n: self._per_interaction(n, self._safety_flag),
            "task_success": lambda n: self._per_interaction(n, self._task_success),
        }
        return builders[self.signal_type](count)[:count]

    # -- shared pieces -------------------------------------------------------------------------

    def _next_id(self) -> str:
        self._row_index += 1
        return signal_id(self.world.seed, self._mark + self.signal_type, self.shard_index, self._row_index)

    def _random_time(self, duration_seconds: float = 0.0) -> datetime:
        offset = self.rng.uniform(0.0, max(1.0, self._span_seconds - duration_seconds))
        return self._start + timedelta(milliseconds=int(offset * 1000))

    def _guideline_for(self, when: datetime) -> str:
        versions = self.world.config.guideline_versions
        fraction = (when - self._start).total_seconds() / self._span_seconds
        return versions[min(len(versions) - 1, int(fraction * len(versions)))]

    def _answer(self, spec: PromptSpec, policy_version: str) -> Answer:
        style = draw_style(POLICY_STYLE_MIX[policy_version], self.rng)
        text = self.world.respond(spec, STYLES[style], self.rng)
        return Answer(text, policy_version, self.world.utility(spec.prompt_id, text))

    def _policy_version(self) -> str:
        return str(self.rng.choice(list(POLICY_STYLE_MIX)))

    def _spec(self) -> PromptSpec:
        return self._prompts[int(self.rng.integers(len(self._prompts)))]

    def _envelope(self, spec: PromptSpec, source: str, actor_id: str, region: str, when: datetime, **extra: Any) -> Row:
        return {
            "signal_id": self._next_id(),
            "signal_type": self.signal_type,
            "schema_version": SCHEMA_VERSION,
            "event_time": when,
            "source": source,
            "actor_id": actor_id,
            "item_id": extra.pop("item_id", None),
            "session_id": extra.pop("session_id", None),
            "session_position": extra.pop("session_position", None),
            "prompt_id": spec.prompt_id,
            "prompt": spec.text,
            "topic": spec.topic,
            "segment": spec.segment,
            "policy_version": extra.pop("policy_version"),
            "guideline_version": extra.pop("guideline_version", None),
            "region": region,
            "confidence": extra.pop("confidence", None),
            **extra,
        }

    # -- annotator signals ---------------------------------------------------------------------

    def _annotated(self, count: int, answers_per_item: int, label: Callable[[Assignment], Row]) -> list[Row]:
        """Items labeled by `labels_per_item` distinct annotators each, worked through in sessions."""
        annotators = self.world.annotators
        per_item = min(self.world.config.labels_per_item, len(annotators))
        items = [self._item(i, answers_per_item) for i in range(-(-count // per_item))]
        queues: dict[int, list[Item]] = {}
        for item in items:
            for a in self.rng.choice(len(annotators), size=per_item, replace=False):
                queues.setdefault(int(a), []).append(item)
        rows = []
        for index in sorted(queues):
            annotator = annotators[index]
            queue = queues[index]
            for session_number, first in enumerate(range(0, len(queue), annotator.session_length)):
                session = queue[first : first + annotator.session_length]
                start = self._random_time(len(session) * SECONDS_PER_LABEL)
                session_id = f"{annotator.annotator_id}/{self._mark}s{self.shard_index}-{session_number}"
                for position, item in enumerate(session):
                    when = start + timedelta(seconds=position * SECONDS_PER_LABEL)
                    rows.append(label(Assignment(item, annotator, position, when, session_id)))
        return rows

    def _item(self, number: int, answers_per_item: int) -> Item:
        """A labeling task; its true order is recorded, and some clear-cut ones become gold questions."""
        spec = self._spec()
        version = self._policy_version()
        answers = tuple(self._answer(spec, version) for _ in range(answers_per_item))
        item = Item(f"{self._mark}item-{self.signal_type}-{self.shard_index}-{number}", spec, answers)
        utilities = [a.breakdown.total for a in answers]
        order = [int(i) for i in np.argsort(utilities, kind="stable")[::-1]]
        clear = len(answers) > 1 and utilities[order[0]] - utilities[order[1]] >= TIE_MARGIN
        self.item_truth.append({
            "item_id": item.item_id, "signal_type": self.signal_type, "true_order": order,
            "utilities": [round(u, 4) for u in utilities],
            "gold": bool(clear and self.rng.random() < self.gold_fraction),
        })
        return item

    def _annotator_envelope(self, task: Assignment) -> Row:
        """Annotators self-report confidence; spammers are always sure of themselves."""
        annotator = task.annotator
        if annotator.spammer:
            confidence = 0.9
        else:
            confidence = float(np.clip(annotator.accuracy_at(task.position) + self.rng.normal(0.0, 0.1), 0.0, 1.0))
        return self._envelope(
            task.item.spec, "annotator", annotator.annotator_id, annotator.region, task.when,
            item_id=task.item.item_id, session_id=task.session_id, session_position=task.position,
            policy_version=task.item.answers[0].policy_version, guideline_version=self._guideline_for(task.when),
            confidence=round(confidence, 3),
        )

    def _rationale(self, annotator: AnnotatorProfile, parts: list[tuple[str, Answer]], spec: PromptSpec) -> str:
        if annotator.spammer:
            return spammer_rationale(self.rng)
        return " . ".join(f"{name} {describe(spec, a.text, a.breakdown)}" for name, a in parts) + " ."

    def _label_pair(self, task: Assignment) -> Row:
        a, b = task.item.answers
        row = self._annotator_envelope(task)
        row.update(
            response_a=a.text,
            response_b=b.text,
            choice=pairwise_choice(task.annotator, task.position, a.breakdown, b.breakdown, self.rng),
            rationale=self._rationale(task.annotator, [("a", a), ("b", b)], task.item.spec),
        )
        return row

    def _label_ranking(self, task: Assignment) -> Row:
        answers = task.item.answers
        breakdowns = [a.breakdown for a in answers]
        ranking = best_of_n_ranking(task.annotator, task.position, breakdowns, task.item.spec.ideal_words, self.rng)
        row = self._annotator_envelope(task)
        best, worst = answers[ranking[0]], answers[ranking[-1]]
        row.update(
            responses=[a.text for a in answers],
            ranking=ranking,
            rationale=self._rationale(task.annotator, [("best", best), ("worst", worst)], task.item.spec),
        )
        return row

    def _label_rubric(self, task: Assignment) -> Row:
        (answer,) = task.item.answers
        scores = rubric_scores(task.annotator, task.position, answer.breakdown, self.rng)
        row = self._annotator_envelope(task)
        row.update(
            response=answer.text,
            scale="rubric5",
            scores=[{"criterion": c, "score": scores[c]} for c in RUBRIC_CRITERIA],
            rationale=self._rationale(task.annotator, [("it", answer)], task.item.spec),
        )
        return row

    # -- user and evaluator signals ------------------------------------------------------------

    def _ratings(self, count: int) -> list[Row]:
        from_annotators = round(count * USER_RUBRIC_SHARE)
        rubric = self._annotated(from_annotators, 1, self._label_rubric)[:from_annotators]
        return rubric + self._per_interaction(count - len(rubric), self._user_rating)

    def _user(self) -> UserProfile:
        return self.world.users[int(self.rng.integers(len(self.world.users)))]

    def _interaction(self) -> tuple[UserProfile, PromptSpec, Answer, datetime]:
        spec = self._spec()
        return self._user(), spec, self._answer(spec, self._policy_version()), self._random_time()

    def _user_envelope(self, user: UserProfile, spec: PromptSpec, answer: Answer, when: datetime) -> Row:
        return self._envelope(spec, "user", user.user_id, user.region, when, policy_version=answer.policy_version)

    def _per_interaction(self, count: int, build: Callable[[], Row]) -> list[Row]:
        return [build() for _ in range(count)]

    def _user_rating(self) -> Row:
        user, spec, answer, when = self._interaction()
        thumbs = self.rng.random() < THUMBS_SHARE
        score = thumbs_up(user, answer.breakdown, self.rng) if thumbs else likert(user, answer.breakdown, self.rng)
        row = self._user_envelope(user, spec, answer, when)
        row.update(
            response=answer.text,
            scale="thumbs" if thumbs else "likert5",
            scores=[{"criterion": "overall", "score": score}],
            rationale=None,
        )
        return row

    def _correction(self) -> Row:
        """Users edit answers that need it: redraw (a few times) until the edit is an improvement."""
        user, spec, answer, when = self._interaction()
        edited = corrected_response(spec, answer.text, self.rng)
        for _ in range(MAX_DRAWS_FOR_FLAWED_RESPONSE):
            if self.world.utility(spec.prompt_id, edited).total > answer.breakdown.total:
                break
            answer = self._answer(spec, answer.policy_version)
            edited = corrected_response(spec, answer.text, self.rng)
        row = self._user_envelope(user, spec, answer, when)
        row.update(
            response=answer.text,
            edited_response=edited,
            rationale=describe(spec, answer.text, answer.breakdown),
        )
        return row

    def _implicit(self, count: int) -> list[Row]:
        rows: list[Row] = []
        while len(rows) < count:
            user, spec, answer, when = self._interaction()
            for event, value in implicit_events(user, answer.breakdown, self.rng):
                row = self._user_envelope(user, spec, answer, when)
                row.update(response=answer.text, event=event, value=round(value, 3))
                rows.append(row)
        return rows

    def _task_success(self) -> Row:
        user, spec, answer, when = self._interaction()
        row = self._user_envelope(user, spec, answer, when)
        row.update(response=answer.text, success=reported_success(answer.breakdown, self.rng))
        return row

    def _safety_flag(self) -> Row:
        _, spec, answer, when = self._interaction()
        reviewer = int(self.rng.integers(SAFETY_REVIEWERS))
        regions = self.world.config.population.regions
        flagged, category, severity = safety_review(answer.breakdown, self.rng)
        row = self._envelope(
            spec, "evaluator", f"ts-reviewer-{reviewer:02d}", regions[reviewer % len(regions)], when,
            policy_version=answer.policy_version, confidence=round(float(self.rng.uniform(0.6, 1.0)), 3),
        )
        row.update(
            response=answer.text,
            flagged=flagged,
            category=category,
            severity=severity,
            rationale=describe(spec, answer.text, answer.breakdown) if flagged else None,
        )
        return row
