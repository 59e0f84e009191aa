"""Labeling sessions against fatigue: a cap in minutes and in tasks, a break before the next session, and a
rotation of task types within a session.

Label quality falls late in long sessions (curate's health report measures it as the fatigue drop), so a
session ends at whichever cap comes first, and the annotator gets a message instead of another task.
Sessions are rebuilt from the event log (start events and labels), so a restart does not reset a cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf_ray.workbench.config import SessionSection

ACTIVE = "active"
ENDED = "ended"
BREAK = "break"


@dataclass
class Session:
    actor: str
    number: int
    started_at: float
    labels: int = 0
    last_label_at: float | None = None
    task_types: list[str] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        """`<actor pseudonym>/ws-<n>`: joins to its actor like the other sessions of the data plane."""
        return f"{self.actor}/ws-{self.number}"


@dataclass(frozen=True)
class SessionState:
    state: str
    session: Session | None
    message: str
    resume_at: float | None = None

    def to_dict(self) -> dict[str, object]:
        session = self.session
        return {"state": self.state, "message": self.message, "resume_at": self.resume_at,
                "session_id": session.session_id if session else None,
                "labels": session.labels if session else 0,
                "started_at": session.started_at if session else None}


class SessionBook:
    """Each annotator's sessions; `state` says whether they may label now."""

    def __init__(self, settings: SessionSection) -> None:
        self.settings = settings
        self.sessions: dict[str, list[Session]] = {}

    def latest(self, actor: str) -> Session | None:
        sessions = self.sessions.get(actor)
        return sessions[-1] if sessions else None

    def ended_at(self, session: Session) -> float | None:
        """When the session hit a cap: its last label for the task cap, start + minutes for the time cap."""
        by_time = session.started_at + self.settings.max_minutes * 60.0
        if session.labels >= self.settings.max_tasks and session.last_label_at is not None:
            return min(session.last_label_at, by_time)
        return by_time

    def state(self, actor: str, now: float) -> SessionState:
        session = self.latest(actor)
        if session is None:
            return SessionState(ENDED, None, "No session yet: sign in to start one.")
        end = self.ended_at(session)
        if session.labels < self.settings.max_tasks and now < end:
            left = max(0, self.settings.max_tasks - session.labels)
            return SessionState(ACTIVE, session, f"left in this session: {left} task(s), {(end - now) / 60:.0f} "
                                                 "minutes")
        capped = (f"you labeled {session.labels} tasks (cap {self.settings.max_tasks})"
                  if session.labels >= self.settings.max_tasks
                  else f"it lasted {self.settings.max_minutes:g} minutes (cap)")
        resume = end + self.settings.break_minutes * 60.0
        if now < resume:
            return SessionState(BREAK, session, f"Session over: {capped}. Take a break; a new session can start in "
                                                f"{(resume - now) / 60:.0f} minutes.", resume)
        return SessionState(ENDED, session, f"Session over: {capped}. Sign in again to start a new session.")

    def start(self, actor: str, at: float) -> Session:
        session = Session(actor, len(self.sessions.get(actor, [])) + 1, at)
        self.sessions.setdefault(actor, []).append(session)
        return session

    def record_label(self, actor: str, task_type: str, at: float) -> None:
        session = self.latest(actor)
        if session is not None:
            session.labels += 1
            session.last_label_at = at
            session.task_types.append(task_type)

    def avoid_type(self, actor: str) -> str | None:
        """The task type to rotate away from: the last `rotate_after` labels of the session were all of it."""
        session, run = self.latest(actor), self.settings.rotate_after
        if not run or session is None or len(session.task_types) < run:
            return None
        recent = set(session.task_types[-run:])
        return recent.pop() if len(recent) == 1 else None
