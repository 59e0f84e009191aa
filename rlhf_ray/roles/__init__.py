"""PPO's roles as plain classes: their logic runs in one process with torch and transformers, no Ray needed.

    learner.PolicyLearner, learner.Critic    trained ranks of a data-parallel group (`engines` updates them)
    scoring.RewardScorer, scoring.ReferenceModel    frozen scorers
    rollout.RolloutWorker                   one generation backend (HF `generate`, vLLM)

`actors` wraps each in a Ray actor, adding only placement, restarts and transport (object-store weights, the
node's address for a rendezvous). The SFT/RM/DPO batch steps are in `rlhf_ray.training.steps`.
"""
