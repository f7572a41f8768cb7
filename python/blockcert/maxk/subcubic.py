"""The subcubic proof: EQKE replaced by a rank-r approximation plus a rigorously bounded error.

Softmax ignores a per-query constant, so the proof works with the row-shifted table
EQKE' = Q (K − 1·k̄ᵀ)ᵀ/√d_head (Q = (E+P_q)W_Q, K = E W_K, k̄ any fixed vector: the keys' float mean).
With E_r (d_head × r) the top-r right singular vectors of the centred keys Kc (never made exactly
orthonormal), Q⊥ = Q − (Q E_r)E_rᵀ and Kc⊥ = Kc − (Kc E_r)E_rᵀ, expanding gives the exact identity

    Q Kcᵀ = (Q E_r)(2I − E_rᵀE_r)(Kc E_r)ᵀ + Q⊥ Kc⊥ᵀ,

and Cauchy–Schwarz bounds the residual entrywise by ‖Q⊥[t_q]‖·‖Kc⊥[t]‖. Computing the factors costs
Θ(d_vocab·d_model·d_head), the rank-r table Θ(d_vocab²·r), the error Θ(d_vocab²): the full
d_vocab²·d_head table is never formed. The query's own score (the diagonal) is computed exactly.

The case analysis then avoids the d_vocab³ loops of the cubic proof: the direct path is bounded by
DIRECT[t_q,m] − max_{c≠m} DIRECT[t_q,c] + min_c PP(m,c) (Θ(d_vocab²) with top-two rows), the value
coupling table only for t' within `window` of m, and for each (t_q, m, n) a binary search finds the
largest T whose group "all non-max non-query tokens ≤ T" is proven; that group holds exactly
C(K−1, n)·(T+1)^r sequences. Every accepted T was itself evaluated, so no monotonicity is assumed.
Cost Θ(d_vocab²·(d_model + r + K·log d_vocab + window·|grid|)).
"""

from __future__ import annotations

from math import comb

import torch

from blockcert.maxk.circuits import Circuits, flatten_groups
from blockcert.maxk.cubic import CaseTables, attention_tables, coupled_table, evaluate, h_table, pp_table, top_excluding
from blockcert.maxk.rigor import IV, down, up


def _row_norm_upper(x: IV) -> torch.Tensor:
    mag = up(x.mid.abs() + x.rad)
    return up(torch.sqrt(up((mag * mag).sum(dim=1) * (1 + 2.0**-40))))


def low_rank_scores(c: Circuits, rank: int) -> dict:
    """Lower/upper bounds of EQKE' (row-shifted) from the rank-r factorisation, and the exact diagonal."""
    kbar = IV.exact(c.key_e.mid.mean(dim=0, keepdim=True))
    kc = c.key_e - kbar
    _, _, vh = torch.linalg.svd(kc.mid, full_matrices=False)
    er = IV.exact(vh[:rank].T.contiguous())                          # (d_head, r)
    qe, ke = c.q @ er, kc @ er                                        # (d_vocab, r)
    eye = IV.exact(2.0 * torch.eye(rank, dtype=torch.float64))
    core = eye - er.T @ er
    approx = ((qe @ core) @ ke.T).mul(c.scale)
    q_perp, k_perp = c.q - qe @ er.T, kc - ke @ er.T
    rho, kappa = _row_norm_upper(q_perp), _row_norm_upper(k_perp)
    err = up(up(rho[:, None] * kappa[None, :]) * c.scale.upper())
    diag = (c.q.mul(kc) @ IV.exact(torch.ones(c.d_head, 1, dtype=torch.float64)))[:, 0]
    diag = IV(diag.mid, diag.rad).mul(c.scale)
    return {"lo": down(approx.lower() - err), "hi": up(approx.upper() + err), "diag": diag,
            "max_err": float(err.max()), "sigma": [float(s) for s in torch.linalg.svdvals(kc.mid)[: rank + 1]]}


def dp_split(c: Circuits) -> torch.Tensor:
    d_part = down(c.direct.lower() - top_excluding(c.direct.upper()))
    pp = pp_table(c).min(dim=1).values
    return down(d_part + pp[None, :])


def subcubic_proof(c: Circuits, rank: int = 1, window: int = 8) -> dict:
    v, k = c.d_vocab, c.k
    if not 1 <= rank <= c.d_head:
        raise ValueError(f"rank must be in 1..{c.d_head}, got {rank}")
    sc = low_rank_scores(c, rank)
    att = attention_tables(sc["lo"], sc["hi"], sc["diag"], c)
    h = h_table(c)
    tables = CaseTables(att["xmin"], att["ymax"], att["wq_lo"], att["wq_hi"], h, h.T.cummin(dim=1).values,
                        dp_split(c), coupled_table(c, window=window))
    proven = torch.zeros(v, v, dtype=torch.int64)
    evaluations = 0
    rows = [(tq, m, n) for m in range(v) for n in range(k) for tq in (range(m + 1) if n > 0 else [m])]
    tri = torch.tensor(rows, dtype=torch.int64)
    tq, m, n = tri[:, 0], tri[:, 1], tri[:, 2]
    r = k - 1 - n
    full = r == 0
    if full.any():
        ok = evaluate(tables, tq[full], m[full], torch.full_like(tq[full], -1), n[full], k)
        evaluations += int(full.sum())
        for a, b in zip(tq[full][ok].tolist(), m[full][ok].tolist(), strict=True):
            proven[a, b] += 1
    sel = ~full
    tq, m, n, r = tq[sel], m[sel], n[sel], r[sel]
    lo = torch.full_like(tq, -1)           # largest T evaluated and proven (−1: none)
    hi = m.clone()                          # smallest T known not to be tried (exclusive bound)
    while bool((hi - lo > 1).any()):
        act = hi - lo > 1
        mid = (lo + hi) // 2
        ok = torch.zeros_like(act)
        ok[act] = evaluate(tables, tq[act], m[act], mid[act], n[act], k)
        evaluations += int(act.sum())
        lo = torch.where(act & ok, mid, lo)
        hi = torch.where(act & ~ok, mid, hi)
    for a, b, nn, rr, t in zip(tq.tolist(), m.tolist(), n.tolist(), r.tolist(), lo.tolist(), strict=True):
        if t >= 0:
            proven[a, b] += comb(k - 1, nn) * (t + 1) ** rr
    return {"proven": flatten_groups(proven), "evaluations": evaluations, "rank": rank, "window": window,
            "max_residual_bound": sc["max_err"], "key_singular_values": sc["sigma"]}
