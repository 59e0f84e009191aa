"""Memory and time of token log-probs + entropy, forward and backward: whole logits against chunked.

A random final-hidden-state tensor [B, T, H] and output head [V, H] (no model download) stand in for a causal
LM's last layer. Each variant runs in its own subprocess, so its peak is its own:

- `full`: logits = h Wᵀ, then `token_logprobs` and `token_entropy` (what the learner did before);
- `chunked@N`: `rlhf_ray.algos.chunked.chunked_token_logprobs` with token_budget N (recomputes each chunk's
  logits in the backward pass);
- `checkpoint@N`: the alternative design, `torch.utils.checkpoint` around each N-token chunk of the full
  computation (kept here only to compare with).

Figures per variant: seconds for forward+backward (median of `--repeats`), the peak memory above the inputs
(CUDA: `torch.cuda.max_memory_allocated`; CPU: the peak resident set size of the process, `ru_maxrss`), and
the bytes autograd keeps between forward and backward (`torch.autograd.graph.saved_tensors_hooks`, storages
counted once). Prints one JSON object.

    python benchmarks/logprobs.py                          # 4 × 1024 tokens, V = 128256, H = 256 on CPU
    python benchmarks/logprobs.py --device cuda --hidden 4096 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf_ray.algos.chunked import chunked_token_logprobs
from rlhf_ray.algos.logprobs import token_logprobs
from rlhf_ray.algos.policy_loss import token_entropy


def full(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = hidden @ weight.t()
    return token_logprobs(logits, labels), token_entropy(logits[:, :-1])


def checkpointed(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                 budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`full` per chunk of `budget` tokens under `torch.utils.checkpoint` (non-reentrant)."""
    flat_hidden = hidden[:, :-1].reshape(1, -1, hidden.shape[-1])
    flat_labels = labels[:, 1:].reshape(1, -1)
    parts = []
    for start in range(0, flat_hidden.shape[1], budget):
        rows = slice(start, start + budget)

        def chunk(h: torch.Tensor, rows: slice = rows) -> tuple[torch.Tensor, torch.Tensor]:
            logits = h @ weight.t()  # labels are already shifted: position t scores flat_labels[t]
            logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, flat_labels[:, rows].unsqueeze(-1))
            return logp.squeeze(-1), token_entropy(logits)

        parts.append(torch.utils.checkpoint.checkpoint(chunk, flat_hidden[:, rows], use_reentrant=False))
    shape = (hidden.shape[0], hidden.shape[1] - 1)
    return torch.cat([p[0] for p in parts], 1).view(shape), torch.cat([p[1] for p in parts], 1).view(shape)


def run_variant(args: argparse.Namespace) -> dict[str, float]:
    """One variant, in this process: time, peak memory above the inputs, bytes saved for backward."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    hidden = (torch.randn(args.batch, args.length, args.hidden, device=device) * 0.5).to(dtype).requires_grad_()
    weight = (torch.randn(args.vocab, args.hidden, device=device) / args.hidden ** 0.5).to(dtype).requires_grad_()
    labels = torch.randint(args.vocab, (args.batch, args.length), device=device)
    kind, _, budget = args.variant.partition("@")

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        if kind == "full":
            return full(hidden, weight, labels)
        if kind == "chunked":
            logp, entropy = chunked_token_logprobs(hidden, weight, labels, int(budget), with_entropy=True)
            return logp, entropy
        return checkpointed(hidden, weight, labels, int(budget))

    def step() -> None:
        logp, entropy = compute()
        (logp.sum() + 0.01 * entropy.sum()).backward()
        hidden.grad = weight.grad = None

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        outputs = compute()
    del outputs
    inputs = {hidden.untyped_storage().data_ptr(), weight.untyped_storage().data_ptr()}
    saved_bytes = sum(size for pointer, size in saved.items() if pointer not in inputs)

    return {"seconds": round(statistics.median(times), 4), "peak_mib": round((peak - base) / 2**20, 1),
            "saved_for_backward_mib": round(saved_bytes / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--budgets", default="512,2048", help="comma-separated token budgets")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # set in the child process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    budgets = [int(b) for b in args.budgets.split(",")]
    variants = ["full", *(f"chunked@{b}" for b in budgets), f"checkpoint@{budgets[0]}"]
    passed = sys.argv[1:]
    results = {}
    for variant in variants:
        child = subprocess.run([sys.executable, __file__, *passed, "--variant", variant], capture_output=True,
                               text=True, check=False)
        results[variant] = (json.loads(child.stdout.splitlines()[-1]) if child.returncode == 0
                            else {"error": child.stderr.strip().splitlines()[-1:]})
    tokens = args.batch * (args.length - 1)
    print(json.dumps({"device": args.device, "dtype": args.dtype, "batch": args.batch, "length": args.length,
                      "vocab": args.vocab, "hidden": args.hidden, "tokens": tokens,
                      "full_logits_fp32_mib": round(tokens * args.vocab * 4 / 2**20, 1),
                      "torch_threads": torch.get_num_threads(), "variants": results}, indent=1))


if __name__ == "__main__":
    main()
