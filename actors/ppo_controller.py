"""The PPO controller: one loop on the driver that moves data between the actors and keeps the books.

Per iteration: sample prompts (`PromptSampler`) → generate on the rollout workers → in parallel: reward scores,
reference log-probs, the learner's old log-probs and (GAE) the critic's values → advantages → policy and
critic updates on their groups → weight sync learner → rollout workers. Every stage is timed (`timing/*`).
A rollout worker that dies is restarted by Ray (`max_restarts`); the step is retried after the restarted
worker gets the current weights. Checkpoints every `checkpoint_every` iterations hold the policy (with its
optimizer state), the critic and the controller state, so `--resume` continues the iteration count. A learner
or critic rank that dies takes its torch.distributed group with it, so the controller rebuilds the policy
groups from the latest checkpoint (`max_learner_recoveries`) and replays the iterations since; the metrics
history is cut back to that checkpoint first, so no iteration appears twice.

Pipelining (`pipeline.mode`): in one_step_off and async the generate calls of the next `pipeline.lookahead()`
batches are sent before this iteration's update runs, and the new weights are queued to the workers after it
(`publish_weights`), which apply them between requests; each sample carries the policy version that generated it,
is trained with the decoupled PPO loss against the rollout's behaviour log-probs, and is dropped ("stale") if more
than `max_staleness` updates old. The sample ledger (`rlhf_ray.training.ledger`) follows every prompt draw from
drawn to trained or dropped; it is saved in each checkpoint, and after a resume or a learner recovery the draws that
were in flight are recorded `lost_on_restart` and drawn again. Every iteration that recomputes the old log-probs
compares them with the rollout's (`rollout/logprob_diff_*`); in lockstep at temperature 1 the rollout's stand in for
them (`rollout.logprob_parity_every`).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.groups import ActorGroup
from actors.learner import Critic, PolicyLearner
from actors.ppo_config import PPOEngineConfig, PPOError
from actors.ppo_resources import actor_bundle_layout, colocation_reserve, live_problems
from actors.rollout import RolloutWorker
from actors.runtime import ensure_ray
from actors.scoring import ReferenceModel, RewardScorer
from actors.transport import BroadcastSync
from rlhf_ray.algos.advantages import AdvantageSettings, needs_critic
from rlhf_ray.algos.kl import AdaptiveKLController, FixedKLController
from rlhf_ray.algos.logprobs import logprob_parity
from rlhf_ray.algos.penalties import RulePenaltySettings
from rlhf_ray.evaluation.hacking import FLAGS, hacking_flags, reward_length_correlation
from rlhf_ray.inputs import Evaluator, PromptSource, mean_figures
from rlhf_ray.inputs.evaluators import mean
from rlhf_ray.lineage.jobs import directory_digest, lineage_for, register_input_checkpoint
from rlhf_ray.models import load_tokenizer, resolve_model_path
from rlhf_ray.roles.engines import zero_stage
from rlhf_ray.roles.rollout import UNVERIFIED, unverified_marker, verify_due
from rlhf_ray.rollout.batch import Sample, pack_samples, response_token_view, rollout_token_logprobs, stale_rows
from rlhf_ray.rollout.prompts import PromptSampler, prompt_row, row_conversation, row_shards
from rlhf_ray.storage import StorageRoot, swap_in_directory
from rlhf_ray.telemetry import MetricsSink
from rlhf_ray.training.experience import KL_PLACEMENT, build_experience, shard_rows
from rlhf_ray.training.ledger import SampleLedger

LATEST = "latest"
STATE_FILE = "controller.json"
HISTORY_FILE = "metrics.jsonl"
LEDGER_FILE = "ledger.json"
ROLES = ("rollout", "scorer", "reference", "learner")
RESTART_WAIT_S = 120.0
RANK_PROBE_S = 30.0


def gather_timed(named: dict[str, ray.ObjectRef | list[ray.ObjectRef]]) -> tuple[dict[str, Any], dict[str, float]]:
    """Wait for concurrently running calls; returns their results and, per name, the seconds from now until
    its last call finished (so overlapping stages each get their own wall time)."""
    started = time.perf_counter()
    owner = {ref: name for name, refs in named.items() for ref in (refs if isinstance(refs, list) else [refs])}
    finished: dict[str, float] = {}
    pending = list(owner)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready[0])  # a dead actor raises now, not after its peers (e.g. DDP ranks left waiting on it)
        finished[owner[ready[0]]] = time.perf_counter() - started
    return {name: ray.get(refs) for name, refs in named.items()}, finished


@dataclass
class RolloutBatch:
    """One iteration's prompts on their way through the rollout: drawn (ledger ids), generate calls submitted
    (refs, not awaited), and how many weight syncs had been sent to the workers before (a worker answering with
    fewer applied restarted meanwhile)."""

    index: int
    rows: list[dict[str, str]]
    draws: list[str]
    refs: list[ray.ObjectRef]
    syncs_before: int


@dataclass
class PendingLoad:
    """A weight publication the workers apply between requests: its `version`, the first batch index submitted
    after it (whose generate calls run after it on every worker), and the load calls' refs (digests)."""

    version: int
    before_batch: int
    refs: list[ray.ObjectRef] = field(default_factory=list)


class RewardModelJudge:
    """A second reward model on its own actor as an `Evaluator`: its mean normalised reward, `judge_reward`."""

    figure = "judge_reward"

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer

    def evaluate(self, prompt_ids: Sequence[str], prompts: Sequence[str],
                 responses: Sequence[str]) -> dict[str, float]:
        return {self.figure: mean(ray.get(self.scorer.score.remote(list(prompts), list(responses)))["rm"])}


class PPOController:
    """Args:
        config: the job's config.
        sink: where per-iteration metrics go.
        prompts: the train prompts and the `eval_split` prompts held-out figures are measured on.
        evaluators: judges of answers that never train the policy (in simulation the world's oracle); the
            judge reward model (`judge_model_path`) is added to them. The first one's figure is the quality the
            reward-hacking monitors compare with the reward.
        within: `(placement_group, first_bundle)`: start the actors in bundles `first_bundle ..` of a group
            reserved elsewhere (a Ray Tune trial's), laid out as `actors.ppo_resources.actor_bundle_layout`; None
            reserves one placement group per actor group.
        on_iteration: called after every iteration with its metrics plus the latest held-out figures (`eval/*`,
            and the start's as `start/*`), e.g. to report them to Ray Tune.
    """

    def __init__(self, config: PPOEngineConfig, sink: MetricsSink, prompts: PromptSource,
                 evaluators: Sequence[Evaluator] = (), within: tuple[PlacementGroup, int] | None = None,
                 on_iteration: Callable[[dict[str, Any]], None] | None = None) -> None:
        if not config.model_path:
            raise PPOError("ppo needs --model DIR (the starting policy, e.g. an SFT model)")
        if not config.reward.model_path and not config.reward.sources and not config.reward.rule_keywords:
            raise PPOError("ppo needs a reward: --reward-model DIR (from `rlhf-ray train-rm`), reward.sources or "
                           "reward.rule_keywords")
        self.config, self.sink, self.on_iteration = config, sink, on_iteration
        self.out = Path(config.output_dir)
        # The injected evaluators also watch the training samples; the judge RM (added once started) only
        # held-out ones, as before: one more actor call per iteration would slow every step.
        self.prompt_source, self.sample_evaluators = prompts, list(evaluators)
        self.evaluators = list(evaluators)
        self.estimator = config.advantage.estimator
        self.base_policy = str(resolve_model_path(config.model_path))
        self.reward_model = str(resolve_model_path(config.reward.model_path)) if config.reward.model_path else None
        self.canned_phrases = tuple(config.reward.phrases())  # before any Ray work: a bad file fails here
        resume = self._latest_checkpoint() if config.resume else None
        if config.resume and resume is None:
            raise PPOError(f"--resume: no checkpoint under {self.out / 'checkpoints'}")
        self.step_retries = self.learner_recoveries = 0
        self.start_figures: dict[str, float] = {}  # the first run's starting point, kept in every checkpoint
        self.parity_alerts = 0
        # seconds each role spent executing calls, and when the first step started: `idle/*` shares of wall time
        self._busy: dict[str, float] = defaultdict(float)
        self._run_started: float | None = None
        policy_path = self._restore(resume)
        self.pad_id = load_tokenizer(policy_path).pad_token_id
        self._placement = within
        ensure_ray(config.ray)
        alive = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        # Inside a trial the reservation already holds the actors: the trial's factory was checked instead.
        if within is None and (problems := live_problems(config, alive)):
            raise PPOError("the actors do not fit this Ray cluster (nothing started): " + "; ".join(problems))
        try:
            self.prompts = PromptSampler([prompt_row(p) for p in prompts.split("train")],
                                         config.prompts_per_iteration, config.seed)
        except ValueError as error:  # too few training prompts: a config error, reported as the job's own
            raise PPOError(str(error)) from error
        self._start_actors(policy_path, resume)

    def _restore(self, checkpoint: Path | None) -> str:
        """The controller's books as of `checkpoint` (None: a fresh start); returns the policy to start from.
        Counters of failures survived only grow; the starting point is kept when there is no checkpoint yet."""
        state = json.loads((checkpoint / STATE_FILE).read_text()) if checkpoint else {}
        self.iteration: int = state.get("iteration", 0)
        self.step_retries = max(self.step_retries, state.get("step_retries", 0))
        self.learner_recoveries = max(self.learner_recoveries, state.get("learner_recoveries", 0))
        self.start_figures = state.get("start", self.start_figures)
        config = self.config
        self.kl = (AdaptiveKLController(config.kl.coef, config.kl.target, config.kl.horizon) if config.kl.target
                   else FixedKLController(config.kl.coef))
        if "kl" in state:
            self.kl.load_state_dict(state["kl"])
        # The ledger as of the checkpoint (a checkpoint written before ledgers existed starts one): the draws in
        # flight then had samples that are gone now; they are recorded dropped and drawn again (a replay) when
        # their batch is submitted again.
        saved = checkpoint / LEDGER_FILE if checkpoint else None
        self.ledger = SampleLedger.load(str(saved)) if saved is not None and saved.exists() else SampleLedger()
        self.ledger.reconcile("lost_on_restart")
        return str(checkpoint / "policy") if checkpoint else self.base_policy

    # ---- actors -------------------------------------------------------------------------------------------
    def _within(self, group: str) -> tuple[PlacementGroup, int] | None:
        """Inside a trial: the placement group and the first bundle of `group` (see `actor_bundle_layout`)."""
        if self._placement is None:
            return None
        placement, first = self._placement
        return placement, first + actor_bundle_layout(self.config)[1][group]

    def _single(self, cls: type, group: str, num_cpus: float, num_gpus: float = 0.0) -> Any:
        """`cls` as a one-off actor, in its bundle when inside a trial."""
        options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
        if (within := self._within(group)) is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=within[0], placement_group_bundle_index=within[1])
        return ray.remote(cls).options(**options)

    def _start_actors(self, policy_path: str, resume: Path | None) -> None:
        config = self.config
        reward = config.reward
        penalties = RulePenaltySettings(reward.verbosity_target_words, reward.verbosity_coef,
                                        self.canned_phrases, reward.canned_coef, reward.repetition_coef)
        self.scorer = self._single(RewardScorer, "reward", reward.num_cpus, reward.num_gpus).remote(
            self.reward_model, penalties, reward.max_length, reward.normalize,
            {"keywords": reward.rule_keywords} if not self.reward_model and not reward.sources else None,
            sources=reward.sources, retries=reward.retries, device=reward.device, dtype=reward.dtype)
        self.reference = self._single(ReferenceModel, "reference", config.reference_num_cpus,
                                      config.reference_num_gpus).remote(
            str(resolve_model_path(config.reference_path or config.model_path)), device=config.reference_device,
            dtype=config.reference_dtype, token_budget=config.reference_logprob_token_budget)
        # The judge scores held-out answers only: no penalties, its own normalisation.
        self.judge = (self._single(RewardScorer, "judge", config.judge_num_cpus).remote(
            str(resolve_model_path(config.judge_model_path)), None, reward.max_length, True)
            if config.judge_model_path else None)
        self._start_policy_groups(policy_path, resume)
        ray.get([actor.ready.remote() for actor in (self.scorer, self.reference, self.judge) if actor is not None])
        if self.judge is not None:
            self.evaluators.append(RewardModelJudge(self.judge))

    def _start_policy_groups(self, policy_path: str, resume: Path | None) -> None:
        """The actors holding the policy being trained: learner ranks, critic ranks and rollout workers. They are
        created before any is waited on, so their processes start (import torch, load the model) side by side;
        except that colocated rollout engines start once the learner ranks sharing their GPUs are up, so an engine
        sizes its memory against what the learner already holds."""
        config, rollout = self.config, self.config.rollout
        learner_settings = {**self._optimizer_settings(config.learner), "kl_loss_coef": self._kl_loss_coef(),
                            "lora": config.model.lora.model_dump() if config.model.lora else None}
        learner_group = "learner+rollout" if rollout.colocate_with_learner else "learner"
        self.learners = self._group(PolicyLearner, config.learner, policy_path, learner_settings,
                                    reserve=colocation_reserve(config), within=self._within(learner_group))
        self.critic = None
        if needs_critic(self.estimator):
            start = (str(resume / "critic") if resume else
                     self.reward_model if config.critic.init_from == "reward_model" and self.reward_model
                     else self.base_policy)
            self.critic = self._group(Critic, config.critic, start, self._optimizer_settings(config.critic),
                                      within=self._within("critic"))
        self._syncs = 0  # weight syncs sent to this rollout group; until the first it holds `policy_path`'s weights
        self._pending: list[RolloutBatch] = []  # generation batches submitted ahead of the update (pipeline modes)
        self._loads: list[PendingLoad] = []  # publications not yet verified (pipeline modes)
        self._parity_due = True  # the first iteration after a start or a recovery checks log-prob parity
        self._broadcast: BroadcastSync | None = None  # rollout.weight_sync: nccl, opened at the first sync
        trained = [group for group in (self.learners, self.critic) if group is not None]
        if rollout.colocate_with_learner:
            for group in trained:
                self._join(group)
        self.rollout = ActorGroup(  # after the learners: colocated workers go into their bundles
            RolloutWorker, rollout.num_workers, rollout.num_cpus, rollout.num_gpus, config.placement_strategy,
            max_restarts=rollout.max_restarts, name_prefix=None, resources=rollout.resources,
            within=(self._within(learner_group) or (self.learners.placement_group, 0)) if rollout.colocate_with_learner
            else self._within("rollout"),
            init_kwargs={"model_path": policy_path, "backend": rollout.backend,
                         "backend_kwargs": rollout.worker_backend_kwargs(), "seed": config.seed,
                         "policy_version": self.iteration})
        if not rollout.colocate_with_learner:
            for group in trained:
                self._join(group)
        if resume:
            ray.get(self.learners.call("load_optimizer", str(resume / "policy")))
            if self.critic:
                ray.get(self.critic.call("load_optimizer", str(resume / "critic")))
        self.rollout.ready()

    def _kl_loss_coef(self) -> float:
        """β of the KL term in the policy loss (GRPO): the controller's current value, 0 where the KL goes into
        the reward instead. Passed with every update, so an adaptive β reaches the loss, and a resumed or
        recovered run trains with the β an uninterrupted one would."""
        return self.kl.value if KL_PLACEMENT[self.estimator] == "loss" else 0.0

    def _optimizer_settings(self, section: Any) -> dict[str, Any]:
        """A section's settings plus what the update engine needs: the seed, the per-rank minibatch size
        (DeepSpeed's micro-batch) and whether the ranks have GPUs."""
        rows = self.config.prompts_per_iteration * self.config.samples_per_prompt
        return {**section.model_dump(), "seed": self.config.seed, "use_gpu": section.num_gpus > 0,
                "batch_size": max(1, rows // (section.num_workers * section.num_minibatches))}

    def _group(self, cls: type, section: Any, model_path: str, settings: dict[str, Any],
               reserve: dict[str, float] | None = None,
               within: tuple[PlacementGroup, int] | None = None) -> ActorGroup:
        """A data-parallel group's actors, placed together (not waited on: `_join` makes them one group)."""
        return ActorGroup(cls, section.num_workers, section.num_cpus, section.num_gpus,
                          self.config.placement_strategy, resources=section.resources, reserve=reserve, within=within,
                          init_kwargs={"model_path": model_path, "world_size": section.num_workers,
                                       "settings": settings, "num_threads": section.torch_threads})

    @staticmethod
    def _join(group: ActorGroup) -> None:
        """Join a group's ranks into one torch.distributed group (rank 0's address is the rendezvous)."""
        host, port = ray.get(group.actors[0].address.remote())
        ray.get([actor.init_group.remote(host, port, rank) for rank, actor in enumerate(group.actors)])

    def _stop_policy_groups(self) -> None:
        for group in (getattr(self, name, None) for name in ("rollout", "learners", "critic")):
            if group is not None:
                group.shutdown()

    def shutdown(self) -> None:
        self._stop_policy_groups()
        for actor in (getattr(self, name, None) for name in ("scorer", "reference", "judge")):
            if actor is not None:
                ray.kill(actor)

    # ---- rollout ------------------------------------------------------------------------------------------
    def _params(self, temperature: float, seed: int, logprobs: bool = False) -> dict[str, Any]:
        rollout = self.config.rollout
        return {"max_new_tokens": rollout.max_new_tokens, "temperature": temperature, "top_p": rollout.top_p,
                "top_k": rollout.top_k, "seed": seed, "logprobs": logprobs}

    def _generate_calls(self, rows: list[dict[str, str]], samples_per_prompt: int,
                        params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [([row_conversation(rows[i]) for i in part], [rows[i]["prompt_id"] for i in part], samples_per_prompt,
                 {**params, "seed": params["seed"] * 101 + w})
                for w, part in enumerate(row_shards(len(rows), len(self.rollout)))]

    def generate(self, rows: list[dict[str, str]], samples_per_prompt: int, params: dict[str, Any],
                 submitted: RolloutBatch | None = None) -> list[dict]:
        """Prompts split over the workers in order (so a prompt's samples stay contiguous); a dead worker is
        awaited, re-synced and the step retried, up to `max_step_retries` times. `submitted`: these rows' calls
        were already sent (a pipelined batch): they are awaited first, and retried like any other."""
        calls = self._generate_calls(rows, samples_per_prompt, params)
        refs, syncs_before = (submitted.refs, submitted.syncs_before) if submitted else (None, self._syncs)
        attempt, cause = 0, None
        while True:
            try:
                parts = ray.get(refs if refs is not None else self.rollout.call_sharded("generate", calls))
                self._busy["rollout"] += sum(part["seconds"] for part in parts) / len(parts)
                # A worker Ray restarted between two calls answers without error, but with its checkpoint's
                # weights (version 0) although syncs were sent to the group before this call.
                stale = [w for w, part in enumerate(parts) if syncs_before > 0 and part["weights_version"] == 0]
                if not stale:
                    return parts
                failure = f"worker(s) {stale} restarted since the last weight sync"
            except (RayActorError, ActorUnavailableError) as error:
                failure, cause = f"rollout worker failed ({type(error).__name__})", error
            if attempt == self.config.max_step_retries:
                raise RuntimeError(f"rollout: {failure}; gave up after {attempt} retries") from cause
            attempt += 1
            self.step_retries += 1
            print(f"[ppo] {failure}; retry {attempt}", file=sys.stderr)
            self._await_rollout()
            self.sync_weights()
            refs, syncs_before = None, self._syncs

    def _await_rollout(self) -> None:
        # a restarted worker's engine is not in the broadcast group: the next sync opens a new one with everyone
        self._broadcast = None
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                self.rollout.ready(timeout_s=10)
                return
            except (RayActorError, ActorUnavailableError, GetTimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def sync_weights(self) -> dict[str, float]:
        """The learner's weights (policy version `iteration`) to every rollout worker, waiting until they hold
        them, by `rollout.weight_sync`: learner rank 0 puts them in the object store once and every worker loads
        that object, or broadcasts them over NCCL into the engines; the workers' digests (of what their engines
        hold) must agree. Over the object store the workers hash what they loaded only when `verify_due` (and at a
        worker's first load after a restart); the other syncs check that every worker holds this policy version."""
        started = time.perf_counter()
        if self.config.rollout.weight_sync == "nccl":
            proofs = self._broadcast_weights()
        else:
            proofs = self._put_weights(verify_due(self._syncs, self.config.rollout.verify_weights_every))
            unverified = [proof.startswith(UNVERIFIED) for proof in proofs]
            if any(unverified) and not all(unverified):  # a restarted worker hashed: the others' digests to compare
                proofs = ray.get(self.rollout.call("weights_digest"))
            elif all(unverified) and proofs[0] != unverified_marker(self.iteration):
                raise RuntimeError(f"rollout workers report {proofs} after the sync of policy version {self.iteration}")
        if len(set(proofs)) != 1:
            raise RuntimeError(f"rollout workers disagree on the policy weights after sync: {proofs}")
        self._syncs += 1
        return {"timing/sync": time.perf_counter() - started}

    def publish_weights(self) -> dict[str, float]:
        """Pipeline modes: the learner's weights (policy version `iteration`) queued to every rollout worker
        without waiting. A Ray actor runs its calls in order, so each worker applies them between the generate
        calls already queued and the next: those produce samples of the older policy, tagged with its version.
        What they loaded (hashed when `verify_due`, as in `sync_weights`) is checked once a later batch came back
        (`_verify_loads`)."""
        started = time.perf_counter()
        weights = ray.get([actor.publish.remote() for actor in self._weight_readers()])[0]
        verify = verify_due(self._syncs, self.config.rollout.verify_weights_every)
        refs = self.rollout.call("load_weights", weights, self.iteration, verify=verify)
        self._loads.append(PendingLoad(self.iteration, self._next_batch(), refs))
        self._syncs += 1
        return {"timing/sync": time.perf_counter() - started}

    def _verify_loads(self, collected: int) -> None:
        """Check the publications every worker applied before batch `collected` came back (they are done: the
        worker ran them first): the digests agree, and an unhashed load reports the version published. A worker
        that died meanwhile is skipped: its restart reported version 0 weights and that batch was regenerated."""
        done = [load for load in self._loads if load.before_batch <= collected]
        self._loads = [load for load in self._loads if load.before_batch > collected]
        for load in done:
            proofs = []
            for ref in load.refs:
                try:
                    proofs.append(ray.get(ref))
                except (RayActorError, ActorUnavailableError):
                    continue
            digests = {proof for proof in proofs if not proof.startswith(UNVERIFIED)}
            markers = {proof for proof in proofs if proof.startswith(UNVERIFIED)}
            if len(digests) > 1 or markers - {unverified_marker(load.version)}:
                raise RuntimeError(f"rollout workers disagree on the weights of policy version {load.version}: "
                                   f"{proofs}")

    def _broadcast_weights(self) -> list[str]:
        """rollout.weight_sync: nccl. The group is opened with the current workers at the first sync (and again
        after the groups were rebuilt); a member dying inside a broadcast leaves a collective that cannot
        finish, so that ends the run naming the setting instead of retrying."""
        if self._broadcast is None:
            self._broadcast = BroadcastSync(self._weight_readers(), list(self.rollout.actors),
                                            int(self.config.rollout.weight_sync_bucket_mb * 2**20))
        try:
            return self._broadcast.sync()
        except (RayActorError, ActorUnavailableError) as error:
            self._broadcast = None
            raise RuntimeError("rollout.weight_sync='nccl': a member of the broadcast group died during a sync; "
                               "a broken collective cannot be retried (rollout.weight_sync='object_store' can)"
                               ) from error

    def _put_weights(self, verify: bool) -> list[str]:
        """rollout.weight_sync: object_store; each worker's digest (`verify`) or version marker. A worker that dies
        meanwhile is awaited and the load repeated, hashed."""
        weights = ray.get([actor.publish.remote() for actor in self._weight_readers()])[0]
        for attempt in range(self.config.max_step_retries + 1):
            try:
                digests = ray.get(self.rollout.call("load_weights", weights, self.iteration,
                                                    verify=verify or attempt > 0))
                break
            except (RayActorError, ActorUnavailableError) as error:
                if attempt == self.config.max_step_retries:
                    raise
                self.step_retries += 1
                print(f"[ppo] rollout worker failed in weight sync ({type(error).__name__}); retry {attempt + 1}",
                      file=sys.stderr)
                self._await_rollout()
        return digests

    # ---- one iteration ------------------------------------------------------------------------------------
    def _next_batch(self) -> int:
        """The index of the next generation batch to submit."""
        return self._pending[-1].index + 1 if self._pending else self.iteration

    def _submit(self, index: int) -> RolloutBatch:
        """Draw batch `index`'s prompts (ledger) and send its generate calls without waiting for them."""
        rows = self.prompts.batch(index)
        epoch = index // self.prompts.per_epoch  # one epoch = one pass over the shuffled training prompts
        draws = [self.ledger.draw(epoch, row["draw_key"]) for row in rows]
        params = self._params(self.config.rollout.temperature, self.config.seed + index, logprobs=True)
        refs = self.rollout.call_sharded("generate", self._generate_calls(rows, self.config.samples_per_prompt, params))
        return RolloutBatch(index, rows, draws, refs, self._syncs)

    def _fill_pipeline(self) -> None:
        """Submit generation batches up to `pipeline.lookahead()` ahead of this iteration (none past the last)."""
        last = min(self.iteration + self.config.pipeline.lookahead(), self.config.iterations - 1)
        while self._next_batch() <= last:
            self._pending.append(self._submit(self._next_batch()))

    def _rollout_is_old_policy(self) -> bool:
        """Whether the rollout's log-probs are the learner's old log-probs (up to numerical noise), so the learner's
        forward can be skipped: lockstep (the workers hold the learner's weights), sampling from the policy itself
        (temperature 1, no top-p/top-k) and the hf backend in the learner's dtype (vLLM's kernels differ)."""
        rollout, learner = self.config.rollout, self.config.learner
        own_distribution = (rollout.temperature, rollout.top_p, rollout.top_k) == (1.0, 1.0, 0)
        return (self.config.pipeline.mode == "sync" and own_distribution and rollout.backend == "hf"
                and rollout.dtype == learner.dtype)

    def step(self) -> dict[str, Any]:
        config, started = self.config, time.perf_counter()
        if self._run_started is None:
            self._run_started = started
        self._fill_pipeline()
        batch = self._pending.pop(0)
        timings = {"timing/sample_prompts": time.perf_counter() - started}
        generated = self.generate(batch.rows, config.samples_per_prompt,
                                  self._params(config.rollout.temperature, config.seed + batch.index, logprobs=True),
                                  submitted=batch)
        self._verify_loads(batch.index)
        timings["timing/generate"] = time.perf_counter() - started - timings["timing/sample_prompts"]
        # Each row's policy version: in lockstep the workers were verified to hold the learner's weights.
        versions = [self.iteration] * len(batch.rows)
        if config.pipeline.mode != "sync":
            for part, shard in zip(generated, row_shards(len(batch.rows), len(generated)), strict=True):
                for row in shard:
                    versions[row] = part["policy_version"]
        for draw, version in zip(batch.draws, versions, strict=True):
            self.ledger.generated(draw, version)
        dropped = stale_rows(versions, self.iteration, config.pipeline.lookahead())
        for row in dropped:
            self.ledger.dropped(batch.draws[row], "stale")
        kept = [row for row in range(len(batch.rows)) if row not in dropped]
        per_row = config.samples_per_prompt
        row_samples = [s for part in generated for s in part["samples"]]
        samples: list[Sample] = [row_samples[row * per_row + k] for row in kept for k in range(per_row)]
        staleness = [self.iteration - versions[row] for row in kept for _ in range(per_row)]

        sequences = pack_samples(samples, self.pad_id)
        rollout_logp = rollout_token_logprobs(samples, sequences)
        # The learner recomputes the old log-probs unless the rollout's are the same policy's; then only on a
        # sample of iterations, to check that they are (log-prob parity), and the rollout's are still the ones
        # trained on, so a resumed run (whose first iteration is checked) trains as an uninterrupted one. When every
        # sample is an older policy's, the learner computes the proximal log-probs inside its update instead (its
        # first step's forward pass gives that minibatch's), and the rollout's behaviour log-probs stand in for the
        # old ones in the KL estimate; parity has no sample of the current policy to compare on then.
        rollout_is_old = self._rollout_is_old_policy()
        proximal_in_update = bool(staleness) and min(staleness) > 0
        learner_forward = not proximal_in_update and (not rollout_is_old or self._parity_due
                                                      or self.iteration % config.rollout.logprob_parity_every == 0)
        ids, attention = ray.put(sequences["input_ids"]), ray.put(sequences["attention_mask"])
        calls: dict[str, Any] = {
            "reward": self.scorer.score.remote([s.prompt for s in samples], [s.response for s in samples]),
            "reference": self.reference.logprobs.remote(ids, attention)}
        if learner_forward:
            calls["old_logprobs"] = [actor.logprobs.remote(ids, attention)
                                     for actor in self._collective_ranks(self.learners, config.learner)]
        if self.critic:
            calls["values"] = [actor.values.remote(ids, attention)
                               for actor in self._collective_ranks(self.critic, config.critic)]
        scored, seconds = gather_timed(calls)
        # under ZeRO-3 every rank ran the same forward (each layer's gather is a collective): rank 0's result is used
        scored.update({name: scored[name][0] for name in ("old_logprobs", "values") if name in scored})
        timings.update({f"timing/{name}": value for name, value in seconds.items()})
        timings.update(ray.get(self.scorer.source_figures.remote()))  # each reward source's mean, latency, failures
        for role, name in (("scorer", "reward"), ("reference", "reference"), ("learner", "old_logprobs")):
            self._busy[role] += seconds.get(name, 0.0)
        for row in kept:
            self.ledger.scored(batch.draws[row])
        parity = self._parity(rollout_logp, scored.get("old_logprobs"), sequences["response_mask"], staleness)
        self._parity_due = False
        old_logp = rollout_logp if rollout_is_old or proximal_in_update else scored["old_logprobs"]
        advantage_started = time.perf_counter()
        settings = AdvantageSettings(config.advantage.gamma, config.advantage.lam, config.samples_per_prompt,
                                     config.advantage.grpo_scale, config.advantage.whiten)
        experience, stats = build_experience(sequences, old_logp, scored["reference"],
                                             scored.get("values"), torch.tensor(scored["reward"]["total"]),
                                             self.estimator, settings, self.kl.value, config.kl.kind)
        if any(staleness):
            # samples of older policies: the loss clips against the proximal policy (old_logprobs, the learner's
            # weights now) and weights each token by min(π_prox / π_behav, is_cap) against the rollout's policy
            experience["behaviour_logprobs"] = response_token_view(rollout_logp, sequences["response_mask"])[0]
        timings["timing/advantages"] = time.perf_counter() - advantage_started
        updates = {"policy_update": self.learners.call_sharded(
            "train", [(shard, self.iteration, self._kl_loss_coef(), proximal_in_update)
                      for shard in shard_rows(experience, len(self.learners))])}
        if self.critic:
            updates["critic_update"] = self.critic.call_sharded(
                "train", [(shard, self.iteration) for shard in shard_rows(experience, len(self.critic))])
        trained, seconds = gather_timed(updates)
        timings.update({f"timing/{name}": value for name, value in seconds.items()})
        for row in kept:
            self.ledger.trained(batch.draws[row], self.iteration)
        self.kl.update(stats["kl"], len(samples))
        self.iteration += 1
        timings.update(self.sync_weights() if config.pipeline.mode == "sync" else self.publish_weights())
        self._busy["learner"] += seconds["policy_update"] + timings["timing/sync"]
        elapsed = time.perf_counter() - started
        tokens = sum(len(s.response_ids) for s in samples)
        reward = scored["reward"]
        answers = self._answer_figures(samples, reward, self.sample_evaluators)
        metrics = {
            "iteration": self.iteration, "reward/rm": answers["reward"], "reward/total": mean(reward["total"]),
            "reward/verbosity_penalty": mean(reward["verbosity_penalty"]),
            "reward/canned_penalty": mean(reward["canned_penalty"]),
            "reward/repetition_penalty": mean(reward["repetition_penalty"]),
            "response/repeats": mean(reward["repeats"]),
            "response/words": answers["words"], "response/tokens": tokens / len(samples),
            "response/canned_rate": answers["canned_rate"],
            "kl": stats["kl"], "kl_per_token": stats["kl_per_token"], "kl_coef": self.kl.value,
            **{f"policy/{k}": mean([r[k] for r in trained["policy_update"]]) for k in trained["policy_update"][0]},
            **({f"critic/{k}": mean([r[k] for r in trained["critic_update"]]) for k in trained["critic_update"][0]}
               if self.critic else {}),
            "samples_per_s": len(samples) / elapsed, "tokens_per_s": tokens / elapsed,
            **{name: answers[name] for name in self._evaluated_figures(self.sample_evaluators)},
            **parity, **self._pipeline_figures(staleness, len(dropped) * per_row),
            "step_retries": self.step_retries, **timings, "timing/iteration": elapsed,
        }
        return metrics

    def _parity(self, rollout_logp: torch.Tensor, learner_logp: torch.Tensor | None, response_mask: torch.Tensor,
                staleness: Sequence[int]) -> dict[str, float]:
        """`rollout/logprob_diff_mean|max`: the rollout's reported log-probs against the learner's recomputation,
        over the samples of the learner's current policy (a stale sample differs by design). Absent where there is
        no recomputation this iteration, no such sample, or the rollout did not sample at temperature 1 (it reports
        log softmax(logits / T), which the learner does not compute; top-p/top-k act after, so they do not
        matter). Above `rollout.logprob_diff_alert` a warning goes to stderr and the alert is counted."""
        fresh = [row for row, age in enumerate(staleness) if age == 0]
        if learner_logp is None or not fresh or self.config.rollout.temperature != 1.0:
            return {}
        rows = torch.tensor(fresh)
        reported, mask = response_token_view(rollout_logp[rows], response_mask[rows])
        recomputed, _ = response_token_view(learner_logp[rows], response_mask[rows])
        gap = logprob_parity(reported, recomputed, mask)
        threshold = self.config.rollout.logprob_diff_alert
        if gap["mean"] > threshold:
            self.parity_alerts += 1
            print(f"[ppo] log-prob parity alert at iteration {self.iteration}: mean |Δ| = {gap['mean']:.4g} (max "
                  f"{gap['max']:.4g}) between the rollout's reported log-probs and the learner's, above "
                  f"rollout.logprob_diff_alert={threshold}: the rollout samples from another distribution than the "
                  "learner trains (weights, dtype, kernels or temperature)", file=sys.stderr)
        return {"rollout/logprob_diff_mean": gap["mean"], "rollout/logprob_diff_max": gap["max"],
                "rollout/logprob_diff_alerts": self.parity_alerts}

    def _pipeline_figures(self, staleness: Sequence[int], dropped_samples: int) -> dict[str, float]:
        """`pipeline/staleness_mean`, the histogram `pipeline/staleness_<s>` (samples trained s updates behind, s
        up to `lookahead`), `pipeline/dropped_stale` (samples), and `idle/<role>`: the share of wall time since
        the first step that the role's actors were not executing a call (rollout: each worker's own generate
        time, averaged over the workers; scorer, reference, learner: the controller's timing of their calls)."""
        figures: dict[str, float] = {"pipeline/staleness_mean": float(np.mean(staleness)),
                                     "pipeline/dropped_stale": float(dropped_samples)}
        for age in range(self.config.pipeline.lookahead() + 1):
            figures[f"pipeline/staleness_{age}"] = float(sum(1 for s in staleness if s == age))
        wall = time.perf_counter() - (self._run_started or time.perf_counter())
        for role in ROLES:
            figures[f"idle/{role}"] = max(0.0, 1.0 - self._busy[role] / wall) if wall > 0 else 0.0
        return figures

    @staticmethod
    def _evaluated_figures(evaluators: Sequence[Evaluator]) -> list[str]:
        return [evaluator.figure for evaluator in evaluators]

    @staticmethod
    def _answer_figures(samples: list[Sample], reward: dict[str, list],
                        evaluators: Sequence[Evaluator]) -> dict[str, float]:
        """Mean RM reward, words, canned-phrase rate and the evaluators' figures (e.g. the world's true utility in
        simulation: monitoring only, never a training signal)."""
        return {**mean_figures(evaluators, [s.prompt_id for s in samples], [s.prompt for s in samples],
                               [s.response for s in samples]),
                "reward": mean(reward["rm"]), "words": mean(reward["words"]),
                "canned_rate": mean([float(h > 0) for h in reward["canned_hits"]])}

    def evaluate(self) -> dict[str, float]:
        """Prompts of `eval_split`, sampled at `eval_temperature` with a fixed seed: RM reward, length,
        canned-phrase rate and every evaluator's figures (the judge RM's, the world's true utility in simulation)."""
        started = time.perf_counter()
        heldout = self.prompt_source.split(self.config.eval_split)[: self.config.eval_prompts]
        rows = [prompt_row(p) for p in heldout]
        params = self._params(self.config.eval_temperature, self.config.seed)
        samples = [s for part in self.generate(rows, self.config.eval_samples_per_prompt, params)
                   for s in part["samples"]]
        prompts, responses = [s.prompt for s in samples], [s.response for s in samples]
        reward = ray.get(self.scorer.score.remote(prompts, responses))
        figures = {**self._answer_figures(samples, reward, self.evaluators),
                   "reward_length_corr": reward_length_correlation(reward["rm"], reward["words"])}
        return {**{f"eval/{name}": value for name, value in figures.items()},
                "timing/eval": time.perf_counter() - started}

    def _hacking_monitors(self, start: dict[str, Any], latest: dict[str, Any]) -> dict[str, float]:
        """Each reward-hacking flag (1/0) since the start, quality judged by the first evaluator (the world's true
        utility in simulation); with no evaluator the flag that needs quality is never raised."""
        quality = next(iter(self._evaluated_figures(self.evaluators)), "")
        raised = hacking_flags({k.removeprefix("start/"): v for k, v in start.items()},
                               {k.removeprefix("eval/"): v for k, v in latest.items()}, quality)
        return {f"hacking_flag/{flag}": float(flag in raised) for flag in FLAGS}

    # ---- checkpoints --------------------------------------------------------------------------------------
    def _policy_rank_died(self) -> bool:
        """Whether a learner or critic rank is dead, probed: the first error seen may be a surviving rank's (its
        collective losing the peer), and a rollout worker's death is retried in place, not here."""
        ranks = self.learners.actors + (self.critic.actors if self.critic else [])
        for actor in ranks:
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=RANK_PROBE_S)
            except (RayActorError, GetTimeoutError):  # a rank stuck waiting on a dead peer counts as lost
                return True
        return False

    def recover(self, error: RayError) -> None:
        """Rebuild the policy groups from the latest checkpoint (or the starting policy if none yet): the dead
        rank's torch.distributed peers cannot go on without it, and the rollout workers must match the learner.
        The iterations after the checkpoint run again, so their history rows are dropped first."""
        self.learner_recoveries += 1
        checkpoint = self._latest_checkpoint()
        print(f"[ppo] a learner/critic rank died ({type(error).__name__}) at iteration {self.iteration}; "
              f"recovery {self.learner_recoveries}/{self.config.max_learner_recoveries} from "
              f"{checkpoint or 'the starting policy'}", file=sys.stderr)
        self._stop_policy_groups()
        policy_path = self._restore(checkpoint)
        self._truncate_history(self.iteration)
        self._start_policy_groups(policy_path, checkpoint)

    def _truncate_history(self, last_iteration: int) -> None:
        """Keep the history rows up to `last_iteration` (none if negative), rewritten atomically."""
        history = self.out / HISTORY_FILE
        if not history.exists():
            return
        rows = [line for line in history.read_text().splitlines()
                if line and json.loads(line)["iteration"] <= last_iteration]
        StorageRoot.from_uri(str(self.out.absolute())).write_bytes_atomic(
            "".join(f"{row}\n" for row in rows).encode(), HISTORY_FILE)

    def _latest_checkpoint(self) -> Path | None:
        pointer = self.out / "checkpoints" / LATEST
        return self.out / "checkpoints" / pointer.read_text().strip() if pointer.exists() else None

    def checkpoint(self) -> str:
        """Policy (+ optimizer shards), critic, controller state and the sample ledger, staged then renamed into
        place."""
        root = self.out / "checkpoints"
        final = root / f"iter-{self.iteration:06d}"
        staging = root / f".{final.name}.tmp-{uuid.uuid4().hex}"
        ray.get(self.learners.call("save", str(staging / "policy")))
        if self.critic:
            ray.get(self.critic.call("save", str(staging / "critic")))
        state = {"iteration": self.iteration, "kl": self.kl.state_dict(), "step_retries": self.step_retries,
                 "learner_recoveries": self.learner_recoveries, "start": self.start_figures}
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
        # inside the staging folder: the ledger on disk is always the one of the checkpoint it sits in
        self.ledger.save(StorageRoot.from_uri(str(staging.absolute())), LEDGER_FILE)
        swap_in_directory(staging, final)
        StorageRoot.from_uri(str(root.absolute())).write_bytes_atomic(final.name.encode(), LATEST)
        return str(final)

    def export_policy(self) -> str:
        target = (self.out / "policy").absolute()
        staging = target.with_name(f".policy.tmp-{uuid.uuid4().hex}")
        ray.get([actor.save_model.remote(str(staging)) for actor in self._weight_readers()])
        swap_in_directory(staging, target)
        return str(target)

    def _weight_readers(self) -> list[Any]:
        """The learner ranks a read of the full policy weights calls (see `_collective_ranks`)."""
        return self._collective_ranks(self.learners, self.config.learner)

    def _collective_ranks(self, group: ActorGroup, section: Any) -> list[Any]:
        """The ranks of a trained group that a forward pass or a read of the full weights must call: every rank
        under ZeRO-3, where each parameter gather is a collective over the group (rank 0's result is the one
        used), else rank 0 alone."""
        partitioned = zero_stage(self._optimizer_settings(section)) == 3
        return list(group.actors) if partitioned else group.actors[:1]

    # ---- the run ------------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        config = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        history = self.out / HISTORY_FILE
        first_iteration = self.iteration
        # Rows past the checkpoint resumed from (or any, on a fresh start) came from a run that died: drop them.
        self._truncate_history(self.iteration if config.resume else -1)
        start_eval = self.evaluate()
        self.sink.log(start_eval, step=self.iteration)
        if not self.start_figures:  # a fresh run: its starting point opens the history
            self.start_figures = {f"start/{k.removeprefix('eval/')}": v for k, v in start_eval.items()
                                  if k.startswith("eval/")}
            with history.open("a") as stream:
                stream.write(json.dumps({"iteration": self.iteration, **start_eval}) + "\n")
        start_figures, latest_eval = self.start_figures, start_eval
        metrics: dict[str, Any] = {}
        checkpoint = None
        while self.iteration < config.iterations:
            try:
                metrics = self.step()
                if self.iteration % config.eval_every == 0 or self.iteration == config.iterations:
                    latest_eval = self.evaluate()
                    metrics.update(latest_eval)
                    metrics.update(self._hacking_monitors(start_figures, latest_eval))
                if self.iteration % config.checkpoint_every == 0 or self.iteration == config.iterations:
                    checkpoint = self.checkpoint()
            except RayError as error:
                if self.learner_recoveries >= config.max_learner_recoveries or not self._policy_rank_died():
                    raise
                self.recover(error)
                continue
            metrics["learner_recoveries"] = self.learner_recoveries
            self.sink.log(metrics, step=self.iteration)
            with history.open("a") as stream:
                stream.write(json.dumps(metrics) + "\n")
            if self.on_iteration is not None:
                self.on_iteration({**start_figures, **latest_eval, **metrics})
        self._verify_loads(config.iterations)  # the last publication's digests (pipeline modes)
        end_eval = {k: v for k, v in metrics.items() if k.startswith("eval/")} or start_eval
        policy_dir = self.export_policy()
        registry = lineage_for(config)
        parents = [register_input_checkpoint(registry, self.base_policy)]
        if self.reward_model:
            parents.append(register_input_checkpoint(registry, self.reward_model))
        parents += [parent for parent in config.parent_ids if registry.has(parent)]
        summary = dict(start_figures)
        summary.update({f"end/{k.removeprefix('eval/')}": v for k, v in end_eval.items() if k.startswith("eval/")})
        artifact = registry.register("policy", f"ppo-{self.estimator}-seed-{config.seed}",
                                     directory_digest(policy_dir), parents=tuple(parents),
                                     config=config.model_dump(mode="json", exclude={"ray", "wandb", "lineage"}),
                                     metrics={k: round(v, 4) for k, v in summary.items() if v is not None},
                                     uri=policy_dir)
        final = {k: v for k, v in metrics.items() if not k.startswith("eval/")}
        # drawn = trained + Σ dropped + in_flight; replayed: draws drawn again after their samples were lost
        books = {**self.ledger.summary(),
                 "replayed": sum(entry["attempts"] > 1 for entry in self.ledger.entries.values())}
        return {"policy_dir": policy_dir, "policy_id": artifact.id, "estimator": self.estimator,
                "iterations": self.iteration, "iterations_this_run": self.iteration - first_iteration,
                "checkpoint": checkpoint, **summary, **final,
                "ledger": books}
