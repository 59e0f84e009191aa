"""TRL's `GRPOTrainer` on the PPO benchmark's model, prompts and rule reward; run by `benchmarks/ppo.py` in TRL's
own virtual environment (`benchmarks/requirements-ppo.txt`), never imported by the project:

    /tmp/rlhf-ray-trl-venv/bin/python benchmarks/trl_grpo.py SPEC.json RESULT.json

SPEC.json holds: model_dir, prompts (plain texts, passed as conversations so TRL applies the checkpoint's chat
template), keywords, penalties_path (the project's `rlhf_ray/algos/penalties.py`, loaded by file so the reward is
the very same `keyword_coverage`), group_size, prompts_per_iteration, max_new_tokens, temperature, lr, beta,
clip_eps, num_minibatches, max_grad_norm, warmup_iterations, iterations, seed, output_dir and optionally
torch_threads (`torch.set_num_threads`; unset: torch's default, one per core).

One "iteration" is one generation batch (prompts_per_iteration × group_size samples) followed by
`num_minibatches` optimizer steps, as one `PPOController.step()`. Writes RESULT.json: samples/s over the timed
iterations (the warm-up ones excluded), seconds per iteration, the seconds `generate` took, the process's
CPU-seconds per timed sample (all threads: TRL's share of the 2-core bound), versions and config.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

import datasets
import torch
import transformers
import trl
from transformers import AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer


def load_keyword_coverage(path: str):
    """The project's `keyword_coverage`, loaded from its file (the package itself needs Ray, absent here)."""
    spec = importlib.util.spec_from_file_location("rlhf_ray_penalties", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module.keyword_coverage


class StepClock(TrainerCallback):
    """perf_counter and the process's CPU time (all its threads) at the end of every optimizer step."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.cpu_ends: list[float] = []
        self.begin = self.cpu_begin = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin, self.cpu_begin = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    result_path = Path(sys.argv[2])
    if spec.get("torch_threads"):
        torch.set_num_threads(spec["torch_threads"])
    keyword_coverage = load_keyword_coverage(spec["penalties_path"])
    keywords = list(spec["keywords"])
    rewards_seen: list[float] = []

    def keyword_reward(completions, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        values = keyword_coverage(texts, keywords).tolist()
        rewards_seen.extend(values)
        return values

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"], local_files_only=True)
    conversations = [[{"role": "user", "content": text}] for text in spec["prompts"]]
    # TRL tokenizes conversational prompts with the chat template; the project renders the same template to text
    # and tokenizes without special tokens. Check both give the same ids.
    same_ids = all(
        list(tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
        == tokenizer(tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False),
                     add_special_tokens=False)["input_ids"]
        for c in conversations)
    dataset = datasets.Dataset.from_list([{"prompt": c} for c in conversations])

    group, per_iteration = spec["group_size"], spec["prompts_per_iteration"]
    rows = per_iteration * group
    minibatches = spec["num_minibatches"]
    if rows % minibatches:
        raise ValueError(f"{rows} samples per iteration do not split into {minibatches} minibatches")
    iterations = spec["warmup_iterations"] + spec["iterations"]
    torch.manual_seed(spec["seed"])
    config = GRPOConfig(
        output_dir=spec.get("output_dir") or tempfile.mkdtemp(prefix="trl-grpo-"),
        # one generation batch of `rows` samples → `minibatches` optimizer steps of rows/minibatches samples each
        per_device_train_batch_size=rows // minibatches, gradient_accumulation_steps=1,
        steps_per_generation=minibatches, num_generations=group, num_iterations=1,
        max_completion_length=spec["max_new_tokens"], temperature=spec["temperature"], top_p=1.0, top_k=0,
        beta=spec["beta"], epsilon=spec["clip_eps"], loss_type="bnpo", scale_rewards="group",
        learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=spec["max_grad_norm"], max_steps=iterations * minibatches, seed=spec["seed"],
        use_vllm=False, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        model_init_kwargs={"dtype": torch.float32}, report_to=[], logging_steps=1, save_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, log_completions=False)
    clock = StepClock()
    trainer = GRPOTrainer(model=spec["model_dir"], reward_funcs=keyword_reward, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[clock])
    generate_seconds: list[float] = []
    generate_tokens: list[int] = []
    inner = trainer._generate_single_turn

    def timed_generate(*args, **kwargs):
        started = time.perf_counter()
        out = inner(*args, **kwargs)
        generate_seconds.append(time.perf_counter() - started)
        generate_tokens.append(sum(len(ids) for ids in out[0]))
        return out

    trainer._generate_single_turn = timed_generate
    started = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - started
    if len(clock.ends) != iterations * minibatches:
        raise RuntimeError(f"expected {iterations * minibatches} optimizer steps, saw {len(clock.ends)}")
    ends = [clock.begin, *clock.ends[minibatches - 1 :: minibatches]]  # end of each iteration
    seconds = [b - a for a, b in itertools.pairwise(ends)]
    timed = seconds[spec["warmup_iterations"] :]
    cpu_ends = [clock.cpu_begin, *clock.cpu_ends[minibatches - 1 :: minibatches]]
    timed_cpu = cpu_ends[-1] - cpu_ends[spec["warmup_iterations"]]
    tokens = generate_tokens[spec["warmup_iterations"] :]
    result = {
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
                     "datasets": datasets.__version__},
        "torch_threads": torch.get_num_threads(),
        "prompt_ids_match_project_rendering": same_ids,
        "samples_per_s": rows * len(timed) / sum(timed),
        "cpu_s_per_sample": timed_cpu / (rows * len(timed)),  # CPU-seconds of the timed iterations per sample
        "tokens_per_s": sum(tokens) / sum(timed),
        "iteration_s": sum(timed) / len(timed), "iteration_s_each": [round(s, 3) for s in seconds],
        "generate_s": sum(generate_seconds[spec["warmup_iterations"] :]) / len(timed),
        "response_tokens_mean": sum(tokens) / (rows * len(timed)),
        "reward_mean": sum(rewards_seen) / max(len(rewards_seen), 1),
        "train_s_total": total,
        "config": {"per_device_train_batch_size": config.per_device_train_batch_size,
                   "gradient_accumulation_steps": config.gradient_accumulation_steps,
                   "steps_per_generation": config.steps_per_generation, "num_generations": config.num_generations,
                   "generation_batch_size": config.generation_batch_size,
                   "max_completion_length": config.max_completion_length, "num_iterations": config.num_iterations,
                   "beta": config.beta, "epsilon": config.epsilon, "loss_type": config.loss_type,
                   "scale_rewards": config.scale_rewards, "learning_rate": config.learning_rate,
                   "lr_scheduler_type": getattr(config.lr_scheduler_type, "value", str(config.lr_scheduler_type)),
                   "max_steps": config.max_steps,
                   "temperature": config.temperature, "gradient_checkpointing": config.gradient_checkpointing,
                   "bf16": config.bf16, "use_vllm": config.use_vllm},
    }
    result_path.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
