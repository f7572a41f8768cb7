"""The paper's per-block metrics (§3.2, eqs. 3–10), as pure functions of per-token tensors."""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from blockcert.core.exact import meets


class Thresholds(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    tau_act: float = Field(1e-2, gt=0)
    tau_loss: float = Field(1e-3, gt=0)


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    alpha_act: float = Field(0.94, ge=0, le=1)
    alpha_loss: float = Field(0.9, ge=0, le=1)


class BlockMetrics(BaseModel):
    """Counts are kept beside each ratio so exact checkers can use the fraction k/n itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    n_tokens: int
    nonfinite_tokens: int
    epsilon: float | None  # eq. 4; None when any token's error is not finite
    mae: float | None  # eq. 5
    max_relative_error: float | None  # max over tokens of e(p,t) / ||x_t||
    max_output_norm: float | None
    act_covered: int
    cov_act: float  # eq. 6 = act_covered / n_tokens
    path_matched: int
    cov_path: float
    n_loss_tokens: int
    loss_covered_weight: float
    loss_total_weight: float
    cov_loss: float  # eq. 8 = loss_covered_weight / loss_total_weight


class PromptMetrics(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    prompt: int
    n_tokens: int
    epsilon: float | None
    mae: float | None
    cov_act: float
    cov_path: float
    cov_loss: float


def exact_sum(values: torch.Tensor) -> float:
    """The correctly rounded sum (math.fsum): independent of order, thread count and the CPU's vector width.

    Certificates record sums (MAE, loss-coverage weights); a tensor reduction would round differently on
    another machine or for another order of the same prompts, and a full coverage would then read
    0.9999999999999999 instead of 1.
    """
    return math.fsum(values.detach().to(device="cpu", dtype=torch.float64).reshape(-1).tolist())


def row_norms(v: torch.Tensor) -> torch.Tensor:
    """‖v_r‖₂ of every row over the last dimension: an exact sum of the (correctly rounded) squares, then
    math.sqrt, which is correctly rounded; torch's vectorised float64 sqrt is not (it can differ by an ulp)."""
    sq = v.detach().to(device="cpu", dtype=torch.float64).square().reshape(-1, v.shape[-1]).numpy()
    norms = [math.sqrt(math.fsum(row)) for row in sq]
    return torch.tensor(norms, dtype=torch.float64).reshape(v.shape[:-1])


def token_errors(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """e(p, t) = ||x̂_t − x_t||₂ (eq. 3), in float64 and exactly summed, so the metric adds no rounding of its
    own and none that depends on the machine."""
    return row_norms(x_hat.to(torch.float64) - x.to(torch.float64))


def path_matches(mask: torch.Tensor, argmax: torch.Tensor, native_mask: torch.Tensor, native_argmax: torch.Tensor):
    """[P, T] booleans: the token's mask row and every head's argmax attended position agree."""
    rows = (mask.cpu() == native_mask.cpu()).all(dim=-1)
    heads = (argmax.cpu() == native_argmax.cpu()).all(dim=1)
    return rows & heads


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _loss_cov(base: torch.Tensor, stitched: torch.Tensor, ok: torch.Tensor, tau: float) -> tuple[float, float]:
    """Numerator and denominator of eq. 8 over the tokens where the loss is defined and finite."""
    ok = ok & torch.isfinite(base)
    delta = (stitched - base).abs()
    covered = ok & (delta <= tau)  # NaN deltas compare False: never covered
    w = torch.where(ok, base, torch.zeros_like(base))
    # Both from exact sums: a fully covered set gives numerator == denominator, so cov_loss is exactly 1.
    return exact_sum(w[covered]), exact_sum(w)


def block_metrics(
    errors: torch.Tensor,
    out_norms: torch.Tensor,
    valid: torch.Tensor,
    path_ok: torch.Tensor,
    base_nll: torch.Tensor,
    stitched_nll: torch.Tensor,
    loss_ok: torch.Tensor,
    thresholds: Thresholds,
) -> BlockMetrics:
    e = errors[valid]
    n = int(e.numel())
    finite = torch.isfinite(e) & torch.isfinite(out_norms[valid])
    nonfinite = n - int(finite.sum()) + int((loss_ok & ~torch.isfinite(base_nll)).sum())
    covered = int((e <= thresholds.tau_act).sum())
    lc, lt = _loss_cov(base_nll, stitched_nll, loss_ok, thresholds.tau_loss)
    # ε and MAE speak of activations only: a NaN loss downstream must not hide a finite ε.
    all_finite = bool(finite.all()) and n > 0
    rel = (e / out_norms[valid].clamp_min(torch.finfo(torch.float64).tiny)) if all_finite else None
    return BlockMetrics(
        n_tokens=n,
        nonfinite_tokens=nonfinite,
        epsilon=float(e.max()) if all_finite else None,
        mae=exact_sum(e) / n if all_finite else None,
        max_relative_error=float(rel.max()) if all_finite else None,
        max_output_norm=_finite_or_none(float(out_norms[valid].max())) if n else None,
        act_covered=covered,
        cov_act=covered / n if n else 0.0,
        path_matched=int(path_ok[valid].sum()),
        cov_path=int(path_ok[valid].sum()) / n if n else 0.0,
        n_loss_tokens=int(loss_ok.sum()),
        loss_covered_weight=lc,
        loss_total_weight=lt,
        cov_loss=lc / lt if lt > 0 else (1.0 if nonfinite == 0 else 0.0),
    )


def per_prompt_metrics(errors, out_norms, valid, path_ok, base_nll, stitched_nll, loss_ok, thresholds):
    out = []
    for p in range(errors.shape[0]):
        m = block_metrics(
            errors[p : p + 1], out_norms[p : p + 1], valid[p : p + 1], path_ok[p : p + 1],
            base_nll[p : p + 1], stitched_nll[p : p + 1], loss_ok[p : p + 1], thresholds,
        )
        out.append(
            PromptMetrics(prompt=p, n_tokens=m.n_tokens, epsilon=m.epsilon, mae=m.mae,
                          cov_act=m.cov_act, cov_path=m.cov_path, cov_loss=m.cov_loss)
        )
    return out


def verdict(m: BlockMetrics, policy: Policy) -> tuple[bool, list[str]]:
    """Certified iff cov_act ≥ α_act and cov_loss ≥ α_loss (eqs. 9–10), and every number is finite."""
    reasons = []
    if m.nonfinite_tokens:
        reasons.append(f"{m.nonfinite_tokens} tokens with NaN/Inf activations or losses")
    if m.n_tokens == 0:
        reasons.append("no tokens traced")
    if not meets(m.act_covered, m.n_tokens, policy.alpha_act):
        reasons.append(f"cov_act {m.cov_act:.6g} < alpha_act {policy.alpha_act:g}")
    if not meets(m.loss_covered_weight, m.loss_total_weight, policy.alpha_loss):
        reasons.append(f"cov_loss {m.cov_loss:.6g} < alpha_loss {policy.alpha_loss:g}")
    return not reasons, reasons
