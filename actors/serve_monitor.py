"""`CanaryMonitor`: the one place that owns the canary's state, judges it, and acts.

Router replicas report batches of events (requests, errors, latencies, safety flags, feedback judgments);
after each batch the monitor checks the guardrails and the sequential test, and when one decides it rolls the
canary back or promotes it: the new weight goes to every router replica as a `user_config` update (no
restart), an audit entry is written, and promote / rollback / kill become lineage events. Admin actions
arrive here from the router's admin endpoints, so every change has one writer and one audit trail.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from ray import serve

from actors.serve_control import serve_metric, set_user_config
from rlhf_ray.evaluation.sequential import (
    ArmCounts,
    CountedOutcomes,
    SequentialResult,
    SequentialSettings,
    fixed_horizon_total,
    sequential_decision,
)
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.serving.assignment import VARIANTS
from rlhf_ray.serving.config import CanaryAppArgs, RouterState
from rlhf_ray.serving.guardrails import GuardrailBounds, VariantStats, check_guardrails
from rlhf_ray.serving.tokens import SeenKeys
from rlhf_ray.storage import StorageRoot

ROUTER_DEPLOYMENT = "CanaryRouter"
DECISIONS = {"promote": ("promoted", 1.0), "rollback": ("rolled_back", 0.0), "kill": ("killed", 0.0)}
LINEAGE_EVENTS = {"promote": "canary.promote", "rollback": "canary.rollback", "kill": "canary.kill",
                  "weights": "canary.weights"}
# (response, user, kind) keys remembered per answer the monitor remembers: a few feedback kinds at most
FEEDBACK_KEYS_PER_RESPONSE = 4


class CanaryStateError(ValueError):
    """An action the canary's current phase does not allow (e.g. reweighting after a rollback)."""


def initial_router_state(args: CanaryAppArgs) -> RouterState:
    return RouterState(canary_weight=args.router.initial_weight, mode=args.router.mode)


@serve.deployment(num_replicas=1)
class CanaryMonitor:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = CanaryAppArgs.model_validate(args)
        self.state = initial_router_state(self.args)
        g = self.args.guardrails
        self.bounds = GuardrailBounds(g.max_error_rate, g.max_p95_latency_s, g.max_safety_flag_rate,
                                      g.min_requests, g.window)
        s = self.args.sequential
        self.settings = SequentialSettings(s.alpha, s.power, s.mde, s.baseline_rate, s.tau, s.min_samples,
                                           s.max_samples)
        self.stats = {v: VariantStats(window=g.window) for v in VARIANTS}
        self.p_value = 1.0
        self.last_test: SequentialResult | None = None
        self.decisions: list[dict[str, Any]] = []
        self.responses: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.counted = CountedOutcomes(s.max_outcomes_per_user, self.args.router.response_cache)
        self.feedback_keys = SeenKeys(FEEDBACK_KEYS_PER_RESPONSE * self.args.router.response_cache)
        self.state_root = StorageRoot.from_uri(self.args.state_dir)
        self.lineage = LineageRegistry(self.args.lineage_root) if self.args.lineage_root else None
        self.app_name = serve.get_replica_context().app_name
        self._lock = asyncio.Lock()
        self._weight_gauge = serve_metric("rlhf_serve_canary_weight")
        self._decision_counter = serve_metric("rlhf_serve_canary_decisions_total")
        self._weight_gauge.set(self.state.canary_weight)

    # ------------------------------------------------------------------ reports from router replicas

    async def report(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Merge one router batch, then judge: guardrails first (safety before statistics), then the test.
        Returns the router state, so a replica that missed a reconfigure catches up."""
        for variant, events in batch.get("requests", {}).items():
            self.stats[variant].add_requests(events)
        for variant, count in batch.get("shadow", {}).items():
            self.stats[variant].shadow_requests += count
        for variant, accepted, flagged, thumbs, response_id, user, authenticated in batch.get("judgments", ()):
            # every judgment is feedback; only those `CountedOutcomes` admits are trials of the test
            counts = accepted is not None and self.counted.admit(response_id, user, variant, authenticated)
            self.stats[variant].add_judgment(accepted if counts else None, flagged, thumbs)
        for record in batch.get("served", ()):
            self.responses[record["response_id"]] = record
        while len(self.responses) > self.args.router.response_cache:
            self.responses.popitem(last=False)
        await self._judge()
        return self.state.model_dump()

    async def _judge(self) -> None:
        if self.state.phase != "running":
            return
        canary = self.stats["canary"]
        breaches = check_guardrails(canary.window_figures(), self.bounds)
        if breaches:
            reason = "guardrail: " + "; ".join(b.describe() for b in breaches)
            await self.decide("rollback", reason, source="guardrail")
            return
        incumbent = self.stats["incumbent"]
        self.last_test = sequential_decision(ArmCounts(incumbent.accepts, incumbent.trials),
                                             ArmCounts(canary.accepts, canary.trials), self.settings, self.p_value)
        self.p_value = self.last_test.p_value
        if self.args.sequential.auto_decide and self.last_test.action != "continue":
            await self.decide(self.last_test.action, f"sequential test: {self.last_test.reason}",
                              source="sequential")

    # ------------------------------------------------------------------ actions

    async def admin(self, action: str, canary_weight: float | None = None, mode: str | None = None,
                    reason: str = "admin") -> dict[str, Any]:
        """An admin request from a router: the new status, or {"error": ...} when the phase forbids it
        (returned rather than raised, so the router answers 409 without unwrapping a remote exception)."""
        try:
            if action == "weights":
                return await self.set_weight(float(canary_weight), mode, reason)  # type: ignore[arg-type]
            return await self.decide(action, reason)
        except CanaryStateError as error:
            return {"error": str(error)}

    async def set_weight(self, canary_weight: float, mode: str | None, reason: str,
                         source: str = "admin") -> dict[str, Any]:
        async with self._lock:
            if self.state.phase != "running":
                raise CanaryStateError(f"the canary is {self.state.phase}; weights can no longer change")
            before = self.state
            self.state = RouterState(canary_weight=canary_weight, mode=mode or before.mode, phase="running",
                                     revision=before.revision + 1)
            await self._publish()
            self._lineage_event("weights", self._audit("weights", reason, source, before))
        return self.status()

    async def decide(self, action: str, reason: str, source: str = "admin") -> dict[str, Any]:
        """promote (canary weight 1), rollback or kill (canary weight 0); final for this deployment."""
        if action not in DECISIONS:
            raise CanaryStateError(f"unknown action {action!r}; expected one of {sorted(DECISIONS)}")
        async with self._lock:
            if self.state.phase != "running" and not (action == "kill" and self.state.phase == "promoted"):
                raise CanaryStateError(f"the canary is already {self.state.phase}")
            before = self.state
            phase, weight = DECISIONS[action]
            self.state = RouterState(canary_weight=weight, mode="split", phase=phase, revision=before.revision + 1)
            await self._publish()
            entry = self._audit(action, reason, source, before)
            self._decision_counter.inc(tags={"decision": action})
            self.decisions.append(entry)
            self._lineage_event(action, entry)
        return self.status()

    async def _publish(self) -> None:
        self._weight_gauge.set(self.state.canary_weight)
        # the Serve controller call blocks on ray.get: keep it off this replica's event loop
        await asyncio.to_thread(set_user_config, self.app_name, ROUTER_DEPLOYMENT, self.state.model_dump())

    def _figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = {v: self.stats[v].summary() for v in VARIANTS}
        if self.last_test is not None:
            figures["sequential"] = {k: v for k, v in vars(self.last_test).items()}
        return figures

    def _audit(self, action: str, reason: str, source: str, before: RouterState) -> dict[str, Any]:
        now = datetime.now(UTC)
        entry = {"time": now.isoformat(), "deployment_id": self.args.deployment_id, "action": action,
                 "source": source, "reason": reason, "before": before.model_dump(), "after": self.state.model_dump(),
                 "incumbent_policy_id": self.args.incumbent.policy_id, "canary_policy_id": self.args.canary.policy_id,
                 "figures": self._figures()}
        name = f"{now:%Y%m%dT%H%M%S%fZ}-{action}-{uuid.uuid4().hex[:8]}.json"
        self.state_root.write_bytes_atomic(json.dumps(entry, sort_keys=True, default=str).encode(), "audit", name)
        return entry

    def _lineage_event(self, action: str, entry: dict[str, Any]) -> None:
        if self.lineage is None:
            return
        policy_id = self.args.canary.policy_id
        target = self.args.deployment_id if self.lineage.has(self.args.deployment_id) else None
        payload = {"deployment_id": self.args.deployment_id, "policy_id": policy_id,
                   "incumbent_policy_id": self.args.incumbent.policy_id, "reason": entry["reason"],
                   "source": entry["source"], "before": entry["before"], "after": entry["after"],
                   "figures": json.loads(json.dumps(entry["figures"], default=str))}
        self.lineage.record_event(LINEAGE_EVENTS[action], target, payload)

    # ------------------------------------------------------------------ reads

    def status(self) -> dict[str, Any]:
        return {
            "deployment_id": self.args.deployment_id,
            **self.state.model_dump(),
            "policies": {"incumbent": self.args.incumbent.policy_id, "canary": self.args.canary.policy_id},
            "variants": {v: self.stats[v].summary() for v in VARIANTS},
            "guardrails": {"bounds": vars(self.bounds),
                           "breaches": [vars(b) for b in check_guardrails(self.stats["canary"].window_figures(),
                                                                          self.bounds)]},
            "sequential": {"settings": vars(self.settings),
                           "fixed_horizon_total": fixed_horizon_total(self.settings),
                           "last": None if self.last_test is None else vars(self.last_test),
                           "not_counted": dict(self.counted.refused)},
            "decisions": self.decisions,
        }

    def lookup(self, response_id: str) -> dict[str, Any] | None:
        return self.responses.get(response_id)

    def claim_feedback(self, key: tuple[str, str, str]) -> bool:
        """Record that (response id, user, kind) was rated; False if it was already: every router replica asks
        here, so a repeat is refused whichever replica it reaches."""
        return self.feedback_keys.add(tuple(key))
