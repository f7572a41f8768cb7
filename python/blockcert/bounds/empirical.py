"""Empirical local Lipschitz estimates: the Jacobian's operator norm at the traced points, from below.

In the max-token distance the operator norm of J (at one prompt) is max_t sup{‖Σ_s J_ts v_s‖ : ‖v_s‖ ≤ 1}.
For one output token t this is a bilinear maximisation max_{‖w‖≤1, ‖v_s‖≤1} wᵀ Σ_s J_ts v_s, and
alternating the two maximisations is the power iteration for this mixed norm:

    v_s ← J_tsᵀ w / ‖J_tsᵀ w‖   (one vector-Jacobian product gives every s at once)
    w   ← (J v)_t / ‖(J v)_t‖    (one Jacobian-vector product)

Each step can only increase wᵀ(Jv)_t, and every value it reaches is attained by a feasible v, so it is a
LOWER estimate of the operator norm — never an upper bound, never used where one is required.
Prompts are independent, so one product serves a candidate token in every prompt at once.
"""

from __future__ import annotations

import torch
from torch.func import jvp, vjp, vmap

from blockcert.core.interpreter import run_block
from blockcert.core.ir import BlockIR


def jacobian_norm_lower(
    ir: BlockIR,
    x: torch.Tensor,  # [P, T, d]
    valid: torch.Tensor,  # [P, T]
    positions: torch.Tensor,  # [P, T]
    candidates: torch.Tensor,  # [P, k] output-token indices to try (valid ones)
    iters: int = 8,
    seed: int = 0,
) -> torch.Tensor:
    """Per prompt, the best value of the alternating ascent over the candidate output tokens ([P] float64)."""
    if iters < 1 or candidates.numel() == 0:
        return torch.zeros(x.shape[0], dtype=torch.float64)
    x = x.detach()
    p_idx = torch.arange(x.shape[0])
    keep = valid.to(x.dtype)[..., None]

    def f(inp: torch.Tensor) -> torch.Tensor:
        return run_block(ir, inp, valid, positions)

    _, back = vjp(f, x)
    gen = torch.Generator().manual_seed(seed)
    k = candidates.shape[1]
    w = torch.randn(k, x.shape[0], x.shape[2], generator=gen, dtype=x.dtype)
    w = w / w.norm(dim=-1, keepdim=True)
    best = torch.zeros(x.shape[0], dtype=torch.float64)
    for _ in range(iters):
        cot = torch.zeros((k, *x.shape), dtype=x.dtype)
        for j in range(k):
            cot[j, p_idx, candidates[:, j]] = w[j]
        g = vmap(back)(cot)[0] * keep  # [k, P, T, d]: J_tsᵀ w for every s (0 at padding)
        v = g / g.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        jv = vmap(lambda d: jvp(f, (x,), (d,))[1])(v)  # [k, P, T, d]
        out = torch.stack([jv[j, p_idx, candidates[:, j]] for j in range(k)])  # [k, P, d]
        val = out.norm(dim=-1)
        best = torch.maximum(best, val.to(torch.float64).amax(0))
        w = out / val[..., None].clamp_min(torch.finfo(x.dtype).tiny)
    return best
