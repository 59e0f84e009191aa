"""The workbench: a task queue with adaptive redundancy, blind presentation, sessions, disputes and dashboards.

Event-sourced: every change (session start, label, comment, resolution) is appended to the event log first and
then applied to the in-memory state by the same `_apply` that replays the log on start, so the state after a
restart is exactly the state before it. Callers are the Serve deployment's HTTP handlers (or a test, or a
script); the public methods take an `Identity` and a JSON body and return JSON-ready dicts, raising
`SubmissionError` (status + field) for anything a client got wrong.

A reviewer's resolution is also an event in the lineage audit chain, when the curate output names its lineage:
`workbench-resolution` about the pairs artifact, with artifact ids and counts only, never who resolved or labeled.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from rlhf_ray.contracts import RUBRIC_CRITERIA
from rlhf_ray.governance import PiiMasker
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.storage import StorageRoot
from rlhf_ray.workbench import dashboard as dash
from rlhf_ray.workbench.config import Identity, WorkbenchArgs
from rlhf_ray.workbench.disputes import MAX_COMMENT_CHARS, OPEN, Dispute, describe_label, dispute_id, resolved_answer
from rlhf_ray.workbench.disputes import thread as dispute_thread
from rlhf_ray.workbench.guidelines import GuidelineStore, render_markdown
from rlhf_ray.workbench.inputs import WorkbenchInputs, build_candidates, history_accuracy, load_inputs
from rlhf_ray.workbench.redundancy import DONE, ESCALATE, decide, item_posterior, shrunk_accuracy
from rlhf_ray.workbench.rows import SubmissionError, contract_row, label_class, parse_payload, parse_rationale
from rlhf_ray.workbench.sessions import ACTIVE, SessionBook
from rlhf_ray.workbench.sla import TaskTimes, sla_report
from rlhf_ray.workbench.store import EventLog, ShardWriter, read_json, write_json_atomic
from rlhf_ray.workbench.tasks import (
    CORRECTION,
    FAMILY_OF,
    RUBRIC,
    Task,
    make_task,
    task_id,
)

OPEN_TASK, DONE_TASK, ESCALATED, RESOLVED_TASK, REUSED = "open", "done", "escalated", "resolved", "reused"
SETTLED = (DONE_TASK, RESOLVED_TASK, REUSED)
QUEUE_FILE, EVENTS_FILE = "queue.json", "events.jsonl"
RESOLVED_FILE, THREADS_FILE = "adjudication/resolved.jsonl", "disputes/threads.jsonl"
RESOLUTION_EVENT = "workbench-resolution"
F = TypeVar("F", bound=Callable[..., Any])


def _locked(method: F) -> F:
    @wraps(method)
    def wrapper(self: Workbench, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass
class Progress:
    """A task's state, derived from its events."""

    wanted: int
    labels: list[dict[str, Any]] = field(default_factory=list)
    state: str = OPEN_TASK
    consensus: int | None = None
    confidence: float | None = None
    completed_at: float | None = None
    reused_from: str | None = None


@dataclass(frozen=True)
class Lease:
    assignment_id: str
    task_id: str
    actor: str
    presented: tuple[int, ...]
    issued_at: float
    expires_at: float


@dataclass(frozen=True)
class AuditTarget:
    """Where resolutions become chain events: the lineage log curate registered its pairs in, about those pairs."""

    registry: LineageRegistry
    pairs_id: str
    versions: dict[str, str]

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> AuditTarget | None:
        """From curate's report; None when it names no lineage (the demo inputs): resolutions then stay in the
        workbench's own event log. An unknown pairs id fails here, at start, naming it."""
        root, pairs_id = report.get("lineage_root"), report.get("pairs_id")
        if not root or not pairs_id:
            return None
        registry = LineageRegistry(root)
        versions = {k: str(report[k]) for k in ("dataset_version", "pairs_version") if report.get(k)}
        return cls(registry, registry.get(pairs_id).id, versions)


def _require(who: Identity, role: str) -> None:
    if who.role != role:
        raise SubmissionError(None, f"this action needs a {role} token; you are signed in as {who.role}", 403)


def _text(body: Mapping[str, Any], name: str, max_chars: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise SubmissionError(name, f"field {name!r}: expected non-empty text")
    if len(value) > max_chars:
        raise SubmissionError(name, f"field {name!r}: {len(value)} characters, expected at most {max_chars}")
    return " ".join(value.split())


class Workbench:
    def __init__(self, args: WorkbenchArgs, tasks: dict[str, Task], salt: str, accuracy: dict[str, float],
                 guidelines: GuidelineStore, history: Mapping[str, Any], clock: Callable[[], float]) -> None:
        self.args = args
        self.tasks = tasks
        self.salt = salt
        self.history_accuracy = accuracy
        self.guidelines = guidelines
        self.history = history
        self.clock = clock
        self.masker = PiiMasker()
        self.sessions = SessionBook(args.session)
        self.progress = {tid: Progress(task.labels_wanted) for tid, task in tasks.items()}
        self.disputes: dict[str, Dispute] = {}
        self.leases: dict[str, Lease] = {}
        self.checks: dict[str, list[int]] = {}  # actor → [hits, checked] against gold and settled consensus
        self.judged: dict[str, tuple[str, str]] = {}  # comparison key → (task id, answer as response text)
        self.same_question: dict[str, list[str]] = {}  # comparison key → task ids asking it
        for task in tasks.values():
            self.same_question.setdefault(task.comparison_key, []).append(task.task_id)
        self.out = StorageRoot.from_uri(args.output_dir)
        self.state_dir = Path(args.output_dir) / "state"
        self.log = EventLog(self.state_dir / EVENTS_FILE)
        self.shards = ShardWriter(StorageRoot.from_uri(self.out.join("shards")))
        self.pending: list[tuple[int, dict[str, Any]]] = []
        self.pending_since: float | None = None
        self._lock = threading.RLock()
        self.audit: AuditTarget | None = None

    # -- opening --------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, args: WorkbenchArgs, inputs: WorkbenchInputs | None = None,
             clock: Callable[[], float] = time.time) -> Workbench:
        """Load inputs, add tasks not yet in the saved queue, replay the event log, write pending shards."""
        if "://" in args.output_dir:
            raise ValueError(f"output_dir {args.output_dir!r} must be a local directory: it holds the event log")
        guidelines = GuidelineStore.load(args.guidelines_dir)
        inputs = inputs or load_inputs(args.curated, args.dataset, args.gold)
        path = Path(args.output_dir) / "state" / QUEUE_FILE
        saved = read_json(path) or {"salt": secrets.token_hex(16), "tasks": [], "accuracy": {}}
        tasks = {t["task_id"]: Task.from_dict(t) for t in saved["tasks"]}
        accuracy = {**history_accuracy(inputs), **saved["accuracy"]}
        now, added = clock(), 0
        for candidate in build_candidates(inputs, args.queue):
            tid = task_id(candidate.source, candidate.item.item_id, candidate.task_type)
            if tid not in tasks:
                sla = args.queue.sla_hours.get(candidate.source, args.queue.sla_hours["default"])
                version = guidelines.current(FAMILY_OF[candidate.task_type])
                tasks[tid] = make_task(candidate, version, now, sla, args.queue.labels_wanted)
                added += 1
        if added or not path.is_file():
            write_json_atomic(path, {"salt": saved["salt"], "accuracy": accuracy,
                                     "tasks": [t.to_dict() for t in tasks.values()]})
        history = {"agreement": dash.history_agreement(inputs.tables.get("pairwise")),
                   "annotators": dash.history_health(inputs.annotators),
                   "curate_agreement": inputs.report.get("agreement", {})}
        bench = cls(args, tasks, saved["salt"], accuracy, guidelines, history, clock)
        bench.audit = AuditTarget.from_report(inputs.report)
        bench._start()
        return bench

    def _start(self) -> None:
        for task in self.tasks.values():
            if task.source == "adjudication":
                reason = f"adjudication queue: {task.extra.get('reason', 'low confidence')}"
                self.disputes[dispute_id(task.task_id)] = Dispute(dispute_id(task.task_id), task.task_id,
                                                                  task.created_at, reason)
            elif task.source in ("active_learning", "rubric"):
                self._reuse_if_judged(task, task.created_at)
        watermark = self.shards.watermark()
        for event in self.log.replay():
            self._apply(event)
            if "row" in event and event["seq"] > watermark:
                self.pending.append((event["seq"], event["row"]))
        self._flush(force=True)

    # -- consensus ------------------------------------------------------------------------------------------

    def _accuracy(self, actor: str) -> float:
        if actor in self.history_accuracy:
            return float(self.history_accuracy[actor])
        hits, checked = self.checks.get(actor, [0, 0])
        return shrunk_accuracy(hits, checked, self.args.queue.default_accuracy, self.args.queue.prior_strength)

    def posterior(self, task: Task) -> Any:
        classes = task.classes
        votes = [(classes.index(h.label), self._accuracy(h.annotator)) for h in task.history if h.label in classes]
        votes += [(label["label"], self._accuracy(label["actor"])) for label in self.progress[task.task_id].labels]
        return item_posterior([v for v, _ in votes], [a for _, a in votes], len(classes))

    def _answer_text(self, task: Task, label: int) -> str:
        """A settled class as response text, so it carries over to the same comparison in another order."""
        if task.task_type == RUBRIC or task.classes[label] == "tie":
            return task.classes[label]
        return task.item.responses[label]

    def _class_of(self, task: Task, answer: str) -> int:
        if answer in task.classes and (task.task_type == RUBRIC or answer == "tie"):
            return task.classes.index(answer)
        return task.item.responses.index(answer)

    def _reuse_if_judged(self, task: Task, at: float) -> bool:
        """A comparison already judged is not asked again: settled by another task, or by the labels it had."""
        progress = self.progress[task.task_id]
        if progress.state != OPEN_TASK or progress.labels:
            return False
        key = task.comparison_key
        if key in self.judged:
            source, answer = self.judged[key]
            progress.state, progress.reused_from = REUSED, source
            progress.consensus, progress.completed_at = self._class_of(task, answer), at
            return True
        if task.history:
            posterior = self.posterior(task)
            if float(posterior.max()) >= self.args.queue.confidence:
                progress.state, progress.reused_from = REUSED, "history"
                progress.consensus, progress.confidence = int(posterior.argmax()), float(posterior.max())
                progress.completed_at = at
                self.judged[key] = (task.task_id, self._answer_text(task, progress.consensus))
                return True
        return False

    def _settle(self, task: Task, state: str, label: int | None, confidence: float | None, at: float) -> None:
        progress = self.progress[task.task_id]
        progress.state, progress.consensus, progress.confidence, progress.completed_at = state, label, confidence, at
        if label is None:
            return
        for done in progress.labels:
            if task.gold_answer is None:
                self._check(done["actor"], done["label"] == label)
        self.judged[task.comparison_key] = (task.task_id, self._answer_text(task, label))
        for other in self.same_question[task.comparison_key]:
            if other != task.task_id:
                self._reuse_if_judged(self.tasks[other], at)

    def _check(self, actor: str, hit: bool) -> None:
        counts = self.checks.setdefault(actor, [0, 0])
        counts[0] += int(hit)
        counts[1] += 1

    # -- events ---------------------------------------------------------------------------------------------

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "session":
            self.sessions.start(event["actor"], event["at"])
        elif kind == "label":
            self._apply_label(event)
        elif kind == "comment":
            self.disputes[event["dispute_id"]].comments.append(
                {"author": event["actor"], "text": event["text"], "at": event["at"]})
        elif kind == "resolution":
            dispute = self.disputes[event["dispute_id"]]
            dispute.resolution = {"author": event["actor"], "label": event["described"], "note": event["note"],
                                  "answer": event["answer"], "at": event["at"], "signal_id": event["row"]["signal_id"]}
            self._settle(self.tasks[dispute.task_id], RESOLVED_TASK, event["label"], 1.0, event["at"])

    def _apply_label(self, event: dict[str, Any]) -> None:
        task = self.tasks[event["task_id"]]
        progress = self.progress[task.task_id]
        progress.labels.append({k: event[k] for k in ("actor", "label", "at", "rationale", "elapsed_s", "position",
                                                      "session_id", "presented")})
        self.sessions.record_label(event["actor"], task.task_type, event["at"])
        if progress.state != OPEN_TASK:
            return  # a late label on a settled or disputed item: kept as data, no new decision
        n = len(progress.labels)
        if task.gold_answer is not None:
            gold = task.classes.index(task.gold_answer) if task.gold_answer in task.classes else None
            if gold is not None:
                self._check(event["actor"], event["label"] == gold)
            if n >= progress.wanted:
                self._settle(task, DONE_TASK, gold, 1.0, event["at"])
        elif task.task_type == CORRECTION:
            if n >= progress.wanted:
                self._settle(task, DONE_TASK, None, None, event["at"])
        else:
            decision = decide(self.posterior(task), n, progress.wanted, self.args.queue.max_labels,
                              self.args.queue.confidence)
            progress.wanted, progress.confidence = decision.labels_wanted, decision.confidence
            if decision.state == DONE:
                self._settle(task, DONE_TASK, decision.label, decision.confidence, event["at"])
            elif decision.state == ESCALATE:
                progress.state = ESCALATED
                did = dispute_id(task.task_id)
                self.disputes.setdefault(did, Dispute(did, task.task_id, event["at"],
                                                      f"no consensus after {n} labels (top class "
                                                      f"{decision.confidence:.2f} < τ {self.args.queue.confidence})"))

    def _record(self, event: dict[str, Any]) -> dict[str, Any]:
        """Log first (durable), then apply, then queue its row for the next shard."""
        logged = self.log.append(event)
        self._apply(logged)
        if "row" in logged:
            self.pending.append((logged["seq"], logged["row"]))
            self.pending_since = self.pending_since or self.clock()
            self._flush()
        return logged

    def _flush(self, force: bool = False) -> str | None:
        waited = self.pending_since is not None and self.clock() - self.pending_since >= self.args.shards.flush_seconds
        if not self.pending or not (force or waited or len(self.pending) >= self.args.shards.flush_every):
            return None
        path = self.shards.write(self.pending)
        self.pending, self.pending_since = [], None
        return path

    # -- sign-in and tasks ----------------------------------------------------------------------------------

    @_locked
    def sign_in(self, who: Identity) -> dict[str, Any]:
        """Start a session for an annotator unless one is active or they are on a break; reviewers just sign in."""
        if who.role == "reviewer":
            return {"actor": who.actor, "role": who.role, "session": None}
        now = self.clock()
        state = self.sessions.state(who.actor, now)
        if state.state not in (ACTIVE, "break"):
            self._record({"kind": "session", "actor": who.actor, "at": now})
            state = self.sessions.state(who.actor, now)
        return {"actor": who.actor, "role": who.role, "session": state.to_dict()}

    def _presented(self, task: Task, actor: str) -> tuple[int, ...]:
        """A shuffled response order per (task, annotator), from a secret salt: stable on reload, unpredictable."""
        order = list(range(len(task.item.responses)))
        seed = hashlib.sha256(f"{self.salt}\0{task.task_id}\0{actor}".encode()).digest()
        random.Random(int.from_bytes(seed[:8], "big")).shuffle(order)
        return tuple(order)

    def _open_need(self, task: Task, actor: str, now: float) -> bool:
        progress = self.progress[task.task_id]
        if progress.state != OPEN_TASK or any(label["actor"] == actor for label in progress.labels):
            return False
        held = sum(1 for lease in self.leases.values() if lease.task_id == task.task_id and lease.expires_at > now)
        return len(progress.labels) + held < progress.wanted

    @_locked
    def next_task(self, who: Identity) -> dict[str, Any]:
        """The next task for this annotator (the one they hold, if any), or why there is none."""
        _require(who, "annotator")
        now = self.clock()
        state = self.sessions.state(who.actor, now)
        if state.state != ACTIVE:
            return {"state": state.state, "message": state.message, "session": state.to_dict()}
        held = [lease for lease in self.leases.values() if lease.actor == who.actor and lease.expires_at > now]
        if held:
            lease = held[0]
        else:
            candidates = [t for t in self.tasks.values() if self._open_need(t, who.actor, now)]
            avoid = self.sessions.avoid_type(who.actor)
            rotated = [t for t in candidates if t.task_type != avoid]
            candidates = rotated or candidates
            if not candidates:
                return {"state": "empty", "message": "No tasks need you right now. Thank you!",
                        "session": state.to_dict()}
            task = min(candidates, key=lambda t: (t.due_at, -t.priority, t.task_id))
            lease = Lease(secrets.token_urlsafe(12), task.task_id, who.actor, self._presented(task, who.actor), now,
                          now + self.args.session.lease_minutes * 60.0)
            self.leases[lease.assignment_id] = lease
        return {"state": "task", "assignment_id": lease.assignment_id, "session": state.to_dict(),
                "task": self._view(self.tasks[lease.task_id], lease.presented)}

    def _guideline_ref(self, task: Task) -> dict[str, str]:
        return {"family": FAMILY_OF[task.task_type], "version": task.guideline_version}

    def _view(self, task: Task, presented: tuple[int, ...]) -> dict[str, Any]:
        """What the page shows: blind (no model, variant, source or item id), responses in `presented` order."""
        letters = "ABCDEFGH"
        view: dict[str, Any] = {
            "task_id": task.task_id, "task_type": task.task_type, "prompt": task.item.prompt,
            "responses": [{"label": letters[p], "text": task.item.responses[c]} for p, c in enumerate(presented)],
            "guideline": self._guideline_ref(task), "due_at": task.due_at,
        }
        if task.task_type == RUBRIC:
            view["criteria"] = list(RUBRIC_CRITERIA)
        return view

    @_locked
    def submit(self, who: Identity, body: Mapping[str, Any]) -> dict[str, Any]:
        """Accept one label for a task handed out by `next_task`."""
        _require(who, "annotator")
        assignment = body.get("assignment_id")
        if not isinstance(assignment, str) or not assignment:
            raise SubmissionError("assignment_id", "field 'assignment_id': expected the id next_task returned")
        lease = self.leases.get(assignment)
        if lease is None or lease.actor != who.actor:
            raise SubmissionError("assignment_id", "field 'assignment_id': unknown, expired or not yours; "
                                                   "ask for the next task again", 404)
        task = self.tasks[lease.task_id]
        if any(label["actor"] == who.actor for label in self.progress[task.task_id].labels):
            self.leases.pop(assignment, None)
            raise SubmissionError("assignment_id", "you already labeled this task", 409)
        payload = parse_payload(task, body, lease.presented)
        rationale = parse_rationale(body, self.args.ui.require_rationale and task.task_type != CORRECTION,
                                    self.args.ui.max_rationale_chars)
        now = self.clock()
        session = self.sessions.latest(who.actor)
        session_id = session.session_id if session else None
        position = session.labels if session else None
        signal_id = "wb-" + hashlib.sha256(f"{task.task_id}\0{who.actor}".encode()).hexdigest()[:32]
        row = contract_row(task, payload, signal_id=signal_id, actor=who.actor, session_id=session_id,
                           position=position, at=now, rationale=rationale, masker=self.masker)
        self.leases.pop(assignment, None)
        self._record({"kind": "label", "task_id": task.task_id, "actor": who.actor, "at": now,
                      "label": label_class(task, payload), "rationale": row["rationale"],
                      "elapsed_s": round(now - lease.issued_at, 3), "position": position, "session_id": session_id,
                      "presented": list(lease.presented), "row": row})
        progress = self.progress[task.task_id]
        return {"accepted": True, "signal_id": signal_id, "task_state": progress.state,
                "session": self.sessions.state(who.actor, now).to_dict()}

    # -- disputes -------------------------------------------------------------------------------------------

    def _dispute(self, did: str, who: Identity) -> Dispute:
        if did not in self.disputes:
            raise SubmissionError("dispute_id", f"dispute {did!r} does not exist", 404)
        if not self._may_see(who, self.disputes[did]):
            raise SubmissionError("dispute_id", "annotators see only the disputes of items they labeled", 403)
        return self.disputes[did]

    def _may_see(self, who: Identity, dispute: Dispute) -> bool:
        """Reviewers see every thread; an annotator only threads of items they labeled, so that no one reads
        other people's labels before labeling an item themselves (labels stay independent)."""
        return who.role == "reviewer" or any(label["actor"] == who.actor
                                             for label in self.progress[dispute.task_id].labels)

    @_locked
    def list_disputes(self, who: Identity, status: str | None = OPEN) -> dict[str, Any]:
        if status not in (None, "open", "resolved", "all"):
            raise SubmissionError("status", f"field 'status': got {status!r}, expected open, resolved or all")
        rows = []
        for dispute in sorted(self.disputes.values(), key=lambda d: (d.opened_at, d.dispute_id)):
            if (status in (None, "all") or dispute.status == status) and self._may_see(who, dispute):
                task = self.tasks[dispute.task_id]
                rows.append({"dispute_id": dispute.dispute_id, "status": dispute.status, "reason": dispute.reason,
                             "task_type": task.task_type, "opened_at": dispute.opened_at,
                             "labels": len(task.history) + len(self.progress[task.task_id].labels),
                             "prompt": task.item.prompt[:120]})
        return {"disputes": rows}

    @_locked
    def get_dispute(self, who: Identity, did: str) -> dict[str, Any]:
        dispute = self._dispute(did, who)
        task = self.tasks[dispute.task_id]
        posterior = self.posterior(task) if task.classes else None
        consensus = None if posterior is None else {
            "label": describe_label(task, task.classes[int(posterior.argmax())]),
            "confidence": round(float(posterior.max()), 4)}
        return {"dispute_id": did, "status": dispute.status, "reason": dispute.reason, "consensus": consensus,
                "task": self._view(task, tuple(range(len(task.item.responses)))),
                "thread": dispute_thread(task, dispute, self.progress[task.task_id].labels)}

    @_locked
    def comment(self, who: Identity, did: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._dispute(did, who)
        text = self.masker.mask(_text(body, "text", MAX_COMMENT_CHARS))[0]
        self._record({"kind": "comment", "dispute_id": did, "actor": who.actor, "text": text, "at": self.clock()})
        self._write_threads()
        return {"accepted": True}

    @_locked
    def resolve(self, who: Identity, did: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A reviewer's final label: a contract row (confidence 1.0), a resolved answer for curate, the thread."""
        _require(who, "reviewer")
        dispute = self._dispute(did, who)
        if dispute.resolution is not None:
            raise SubmissionError("dispute_id", f"dispute {did!r} is already resolved", 409)
        task = self.tasks[dispute.task_id]
        payload = parse_payload(task, body, tuple(range(len(task.item.responses))))
        note = self.masker.mask(_text(body, "note", self.args.ui.max_rationale_chars))[0]
        now = self.clock()
        signal_id = "wb-r-" + hashlib.sha256(f"{did}\0{who.actor}".encode()).hexdigest()[:30]
        row = contract_row(task, payload, signal_id=signal_id, actor=who.actor, session_id=None, position=None,
                           at=now, rationale=note, masker=self.masker, confidence=1.0)
        label = label_class(task, payload)
        described = describe_label(task, task.classes[label] if label is not None else None)
        self._audit_resolution(dispute, task)  # the audit chain first: no resolution it does not hold
        self._record({"kind": "resolution", "dispute_id": did, "actor": who.actor, "at": now, "label": label,
                      "described": described, "note": note, "answer": resolved_answer(task, payload), "row": row})
        self._write_resolved()
        self._write_threads()
        return {"accepted": True, "signal_id": signal_id, "label": described}

    def _audit_resolution(self, dispute: Dispute, task: Task) -> None:
        """The resolution as a lineage chain event: artifact ids and counts, never an annotator or reviewer id."""
        if self.audit is None:
            return
        resolved = 1 + sum(d.resolution is not None for d in self.disputes.values())
        self.audit.registry.record_event(RESOLUTION_EVENT, self.audit.pairs_id, {
            **self.audit.versions, "dispute_id": dispute.dispute_id, "task_type": task.task_type,
            "guideline_version": task.guideline_version,
            "labels": len(task.history) + len(self.progress[task.task_id].labels), "comments": len(dispute.comments),
            "disputes_resolved": resolved, "disputes_open": len(self.disputes) - resolved})

    def _write_resolved(self) -> None:
        """`{item_id, signal_type, answer}` per resolved dispute: curate's `adjudication.resolved` input."""
        records = [{"item_id": self.tasks[d.task_id].item.item_id,
                    "signal_type": self.tasks[d.task_id].item.signal_type, "answer": d.resolution["answer"]}
                   for d in self.disputes.values() if d.resolution is not None]
        self.out.write_bytes_atomic("".join(_json_line(r) for r in records).encode(), RESOLVED_FILE)

    def _write_threads(self) -> None:
        records = [{"dispute_id": d.dispute_id, "item_id": self.tasks[d.task_id].item.item_id,
                    "guideline_version": self.tasks[d.task_id].guideline_version, "status": d.status,
                    "reason": d.reason,
                    "thread": dispute_thread(self.tasks[d.task_id], d, self.progress[d.task_id].labels)}
                   for d in self.disputes.values() if d.comments or d.resolution is not None]
        self.out.write_bytes_atomic("".join(_json_line(r) for r in records).encode(), THREADS_FILE)

    # -- guidelines, dashboards, admin ----------------------------------------------------------------------

    @_locked
    def guideline(self, family: str, version: str | None = None, diff_from: str | None = None) -> dict[str, Any]:
        """One version as Markdown and HTML, optionally with the unified diff from an earlier version, and the
        notes of resolved disputes labeled under it (material for the next version)."""
        version = version or self.guidelines.current(family)
        text = self.guidelines.text(family, version)
        notes = [{"dispute_id": d.dispute_id, "label": d.resolution["label"], "note": d.resolution["note"]}
                 for d in self.disputes.values() if d.resolution is not None
                 and FAMILY_OF[self.tasks[d.task_id].task_type] == family
                 and self.tasks[d.task_id].guideline_version == version]
        return {"family": family, "version": version, "versions": self.guidelines.versions(family),
                "current": self.guidelines.current(family), "markdown": text, "html": render_markdown(text),
                "diff": self.guidelines.diff(family, diff_from, version) if diff_from else None,
                "diff_from": diff_from, "resolution_notes": notes}

    @_locked
    def guideline_index(self) -> dict[str, Any]:
        return {"families": self.guidelines.summary()}

    def _facts(self) -> list[dash.LabelFacts]:
        facts = []
        for tid, progress in self.progress.items():
            task = self.tasks[tid]
            gold = task.classes.index(task.gold_answer) if task.gold_answer in task.classes else None
            consensus = progress.consensus if progress.state in SETTLED else None
            facts += [dash.LabelFacts(tid, task.task_type, label["actor"], label["label"], label["at"],
                                      label["elapsed_s"], label["position"] or 0, task.guideline_version,
                                      consensus, gold) for label in progress.labels]
        return facts

    def _active_seconds(self) -> dict[str, float]:
        return {actor: sum(s.last_label_at - s.started_at for s in sessions if s.last_label_at is not None)
                for actor, sessions in self.sessions.sessions.items()}

    def _counts(self) -> dict[str, Any]:
        by_state: dict[str, int] = {}
        by_type: dict[str, dict[str, int]] = {}
        for tid, progress in self.progress.items():
            by_state[progress.state] = by_state.get(progress.state, 0) + 1
            kind = by_type.setdefault(self.tasks[tid].task_type, {})
            kind[progress.state] = kind.get(progress.state, 0) + 1
        labels = sum(len(p.labels) for p in self.progress.values())
        open_disputes = sum(d.resolution is None for d in self.disputes.values())
        return {"tasks": len(self.tasks), "by_state": by_state, "by_type": by_type, "labels": labels,
                "disputes_open": open_disputes, "disputes_resolved": len(self.disputes) - open_disputes,
                "leases": sum(lease.expires_at > self.clock() for lease in self.leases.values()),
                "rows_waiting": len(self.pending)}

    @_locked
    def dashboard(self, who: Identity) -> dict[str, Any]:
        _require(who, "reviewer")
        facts = self._facts()
        # A task reused from an earlier judgement took no labeling work: it is not part of the SLA.
        times = [TaskTimes(self.tasks[tid].created_at, self.tasks[tid].due_at,
                           p.completed_at if p.state in SETTLED else None)
                 for tid, p in self.progress.items() if p.state != REUSED]
        return {"queue": self._counts(), "sla": sla_report(times, self.clock()),
                "agreement": {"workbench": dash.workbench_agreement(facts), "before": self.history["agreement"],
                              "curate": self.history["curate_agreement"]},
                "annotators": dash.annotator_health(facts, self._active_seconds()),
                "annotators_before": self.history["annotators"],
                "guidelines": self.guidelines.summary(), "confidence_threshold": self.args.queue.confidence}

    @_locked
    def flush(self) -> dict[str, Any]:
        """Write every waiting row to a shard now (on shutdown, or before an ingest run)."""
        return {"shard": self._flush(force=True), "shards_dir": self.out.join("shards")}

    @_locked
    def summary(self) -> dict[str, Any]:
        return {**self._counts(), "shards_written": self.shards.files_written, "shards_dir": self.out.join("shards"),
                "resolved_file": self.out.join(RESOLVED_FILE), "events": self.log.last_seq}

    def close(self) -> None:
        with self._lock:
            self._flush(force=True)
            self.log.close()


def _json_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
