"""Token log-probs and entropy from final hidden states, chunked so no [B, T, V] tensor is ever made.

A causal LM's logits are z = s · (h Wᵀ + b): final hidden states h [B, T, H], the output head's weight W [V, H]
(bias b [V] if any) and a logit scale s (1, or 1/temperature). With a 128k vocabulary, fp32 logits for
4 × 1024 tokens are 2 GB, and autograd keeps them (and their softmax) for the backward pass. Here the tokens are
processed `token_budget` at a time, in the forward and in the backward pass: the forward keeps only the
per-token logsumexp (and E_p[z] for the entropy), and the backward recomputes each chunk's logits from h and W.
Peak extra memory is a few [token_budget, V] float32 buffers, whatever B·T.

Alignment is that of `rlhf_ray.algos.logprobs`: `hidden[:, t]` predicts token t+1, the result is [B, T−1] with
column t holding the log-prob of `labels[:, t+1]`; mask with `mask[:, 1:]`.

Per token (row) with logits z ∈ R^V and target y:

    lse  = log Σ_v exp(z_v)                      (float32, max-subtracted)
    logp = z_y − lse
    H    = lse − Σ_v p_v z_v = lse − E_p[z],     p = softmax(z)

and the gradients the backward pass forms chunk by chunk (g_l, g_H: upstream gradients of logp and H):

    ∂logp/∂z_v = 1[v = y] − p_v
    ∂H/∂z_v    = −p_v (z_v − E_p[z])
    g_z        = g_l · 1[v = y] − p_v (g_l + g_H (z_v − E_p[z]))
    ∂/∂h = s · g_z W,    ∂/∂W = s · g_zᵀ h,    ∂/∂b = s · Σ_tokens g_z

Logits are normalised in float32 whatever the dtype of h and W (as `token_logprobs` does); the matrix products run
in the dtype the head's own forward would use: autocast's dtype inside an autocast region, else W's dtype. The
weight gradient is accumulated over chunks in float32 (one float32 [V, H] buffer), then cast to W's dtype; it is
not formed at all when W needs no gradient (a frozen head: the reference model, LoRA), nor are the entropy's
terms when the entropy is not differentiated.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _chunk_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    """z = s · (h Wᵀ + b) for one chunk, as float32 [n, V] (a fresh tensor, free to modify in place); the product
    runs in `weight`'s dtype (already the compute dtype, see `_ChunkedHeadLogprobs`)."""
    z = torch.nn.functional.linear(hidden.to(weight.dtype), weight, bias).float()
    return z.mul_(scale) if scale != 1.0 else z


class _ChunkedHeadLogprobs(torch.autograd.Function):
    """logp, H per token of h [N, H_dim] under the head (W, b, s), `budget` tokens at a time both ways.

    The products run in `compute`, the dtype autocast would have given the head's forward (or W's own dtype), in
    the forward pass and in the backward's recomputation alike, with autocast off inside: the backward runs
    outside any autocast region, and the logits it recomputes must be those the forward normalised."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, budget: int,
                scale: float, with_entropy: bool, compute: torch.dtype) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)  # an unused entropy gets None in backward, and its terms are skipped
        with torch.autocast(hidden.device.type, enabled=False):
            return _ChunkedHeadLogprobs._forward(ctx, hidden, weight, bias, labels, budget, scale, with_entropy,
                                                 compute)

    @staticmethod
    def _forward(ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, budget: int,
                 scale: float, with_entropy: bool, compute: torch.dtype) -> tuple[Tensor, Tensor]:
        tokens = hidden.shape[0]
        head_weight, head_bias = weight.to(compute), None if bias is None else bias.to(compute)
        logp = torch.empty(tokens, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(logp)
        mean_z = torch.empty_like(logp) if with_entropy else logp.new_empty(0)
        for start in range(0, tokens, budget):
            rows = slice(start, start + budget)
            z = _chunk_logits(hidden[rows], head_weight, head_bias, scale)
            lse[rows] = torch.logsumexp(z, dim=-1)
            logp[rows] = z.gather(-1, labels[rows].unsqueeze(-1)).squeeze(-1) - lse[rows]
            if with_entropy:
                p = z.sub(lse[rows].unsqueeze(-1)).exp_()
                mean_z[rows] = torch.linalg.vecdot(p, z)
        ctx.save_for_backward(hidden, weight, bias, labels, lse, mean_z)
        ctx.budget, ctx.scale, ctx.with_entropy, ctx.compute = budget, scale, with_entropy, compute
        entropy = lse - mean_z if with_entropy else logp.new_empty(0)
        return logp, entropy

    @staticmethod
    def backward(ctx: Any, grad_logp: Tensor | None, grad_entropy: Tensor | None
                 ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None, None, None, None]:
        hidden, weight, bias, labels, lse, mean_z = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if grad_logp is None and grad_entropy is None:
            return None, None, None, None, None, None, None, None
        if grad_logp is None:
            grad_logp = torch.zeros_like(lse)
        use_entropy = ctx.with_entropy and grad_entropy is not None
        compute = ctx.compute
        head_weight, head_bias = weight.to(compute), None if bias is None else bias.to(compute)
        grad_h = torch.empty_like(hidden) if need_h else None
        accumulate = torch.promote_types(compute, torch.float32)
        grad_w = torch.zeros(weight.shape, dtype=accumulate, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=accumulate, device=bias.device) if need_b else None
        for start in range(0, hidden.shape[0], ctx.budget):
            rows = slice(start, start + ctx.budget)
            g_l = grad_logp[rows].unsqueeze(-1)
            z = _chunk_logits(hidden[rows], head_weight, head_bias, ctx.scale)
            p = z.sub(lse[rows].unsqueeze(-1)).exp_()
            if use_entropy:  # z becomes g_l + g_H (z − E_p[z]), in place
                z.sub_(mean_z[rows].unsqueeze(-1)).mul_(grad_entropy[rows].unsqueeze(-1)).add_(g_l)
                grad_z = p.mul_(z).neg_()
            else:
                del z
                grad_z = p.mul_(g_l).neg_()
            grad_z.scatter_add_(-1, labels[rows].unsqueeze(-1), g_l)
            if ctx.scale != 1.0:
                grad_z.mul_(ctx.scale)
            grad_z = grad_z.to(compute)
            if grad_h is not None:
                grad_h[rows] = grad_z @ head_weight
            if grad_w is not None:
                grad_w.add_(grad_z.t() @ hidden[rows].to(compute))
            if grad_b is not None:
                grad_b.add_(grad_z.sum(dim=0))
        return (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                None if grad_b is None else grad_b.to(bias.dtype), None, None, None, None, None)


def chunked_token_logprobs(hidden: Tensor, weight: Tensor, labels: Tensor, token_budget: int, *,
                           bias: Tensor | None = None, logit_scale: float = 1.0,
                           with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
    """Next-token log-probs (and entropies) of `labels` under logits z = s · (hidden Wᵀ + b), never forming more
    than `token_budget` tokens' logits at once (forward and backward; see the module docstring for the maths):

        logp[b, t] = log softmax(z[b, t])[labels[b, t+1]],    H[b, t] = −Σ_v p_v log p_v,    t = 0 … T−2

    Equal, within floating-point rounding, to `token_logprobs(z, labels)` and `token_entropy(z[:, :-1])`, and so
    are the gradients w.r.t. `hidden`, `weight` and `bias`. Padding needs no special care: every position is
    computed independently, so mask the result with `mask[:, 1:]` as usual.

    Args:
        hidden: [B, T, H] final hidden states (after the last norm), any float dtype.
        weight: [V, H] output-head weight.
        labels: [B, T] integer token ids, valid indices into V everywhere.
        token_budget: most tokens whose logits exist at once (≥ 1); memory ≈ a few × token_budget × V × 4 bytes.
        bias: [V] output-head bias, if the head has one.
        logit_scale: s, multiplying the logits (e.g. 1/temperature).
        with_entropy: also return the per-token entropy.

    Returns:
        ([B, T−1] float32 log-probs, [B, T−1] float32 entropies or None).
    """
    if hidden.ndim != 3:
        raise ValueError(f"hidden must be [B, T, H]; got shape {tuple(hidden.shape)}")
    if weight.ndim != 2 or weight.shape[1] != hidden.shape[2]:
        raise ValueError(f"weight must be [V, H] with H = {hidden.shape[2]}; got shape {tuple(weight.shape)}")
    if labels.shape != hidden.shape[:2]:
        raise ValueError(f"labels must be [B, T] = {tuple(hidden.shape[:2])}; got shape {tuple(labels.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be [V] = ({weight.shape[0]},); got shape {tuple(bias.shape)}")
    if isinstance(token_budget, bool) or not isinstance(token_budget, int) or token_budget < 1:
        raise ValueError(f"token_budget must be an integer >= 1; got {token_budget!r}")
    batch, length, width = hidden.shape
    flat_hidden = hidden[:, :-1].reshape(-1, width)
    flat_labels = labels[:, 1:].reshape(-1).long()
    device_type = hidden.device.type
    compute = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
    logp, entropy = _ChunkedHeadLogprobs.apply(flat_hidden, weight, bias, flat_labels, token_budget,
                                               float(logit_scale), with_entropy, compute)
    shape = (batch, max(length - 1, 0))
    return logp.view(shape), entropy.view(shape) if with_entropy else None
