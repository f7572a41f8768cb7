"""The cubic mechanistic proof: case analysis over (query t_q, max m, largest other token t', copies n).

A case fixes the query token t_q (last position), the max token m ≥ t_q, the number n of non-query
positions holding m, and — when r = K−1−n > 0 non-query positions hold smaller tokens — the largest of
those, t' < m. Each sequence is in exactly one case, and case (t_q, m, t', n) holds exactly
C(K−1, n)·((t'+1)^r − t'^r) sequences (for r = 0: C(K−1, K−1) = 1). For every case we bound, from the
weights alone, the worst-case logit gap logit[m] − max_{c≠m} logit[c] from below; the case is proven
when that bound is > 0. The accuracy bound is (Σ counts of proven cases) / d_vocab^K.

The argument (a_j = attention weights, Σ a_j = 1, V_j[t] = EVOU[t] + PVOU[j]):

    gap_c = DIRECT[t_q,m] − DIRECT[t_q,c] + Σ_j a_j (V_j[t_j,m] − V_j[t_j,c])
          ≥ DP(t_q,m) + α·U(m) + (1−α)·W,                 where
    DP(t_q,m) = min_{c≠m} [DIRECT[t_q,m] − DIRECT[t_q,c] + min_j (PVOU[j,m] − PVOU[j,c])]   (d_vocab³)
    H(t,m)    = min_{c≠m} (EVOU[t,m] − EVOU[t,c]),   U(m) = H(m,m)
    W         = min( min_{t≤t'} H(t,m)  [if r > 0],  H(t_q,m) [if t_q < m] )
    α         = attention on the positions holding m  ≥  α_min.

The bound is linear in α, so over α ∈ [α_min, 1] its minimum is U (if U < W) or W + α_min (U − W).
α_min: the copies of m score at least EQKE[t_q,m] + EQKP[t_q,j], every other non-query key at most
max_{t≤t'} EQKE[t_q,t] + EQKP[t_q,j], the query exactly EQKE[t_q,t_q] + EQKP[t_q,K−1]. With X the sum of
the n smallest copy weights and Y the sum of the r largest other weights, α ≥ X / (X + Y) (query
weight added to X when t_q = m, to Y otherwise), because X/(X+Y) increases in X and decreases in Y.

Every table is an interval enclosure (rigor.py); every scalar step takes the lower/upper bound and
rounds outward with `down`/`up`, so a case marked proven is proven for the exact real-valued model.
Cost: the case loop is Θ(d_vocab³·K), DP is Θ(d_vocab³), the tables Θ(d_vocab²·d_model).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import torch

from blockcert.maxk.circuits import Circuits, eqke, flatten_groups
from blockcert.maxk.rigor import IV, cumsum_lower, cumsum_upper, down, up

INF = float("inf")


@dataclass(frozen=True)
class CaseTables:
    """Everything the per-case evaluation reads; attention rows may be shifted by a per-query constant."""

    xmin: torch.Tensor     # (tq, m, n): lower bound on the n smallest copy weights' sum
    ymax: torch.Tensor     # (tq, t', r): upper bound on the r largest other weights' sum
    wq_lo: torch.Tensor    # (tq,)
    wq_hi: torch.Tensor    # (tq,)
    h: torch.Tensor        # (t, m) lower bound of H
    hpref: torch.Tensor    # (m, t') lower bound of min_{t≤t'} H(t, m)
    dp: torch.Tensor       # (tq, m) lower bound of DP
    fgrid: torch.Tensor | None = None  # (m, t', g): lower bound of min_c [α_g U_c + (1−α_g) W_c(t')]; −inf = absent


def top_excluding(hi: torch.Tensor) -> torch.Tensor:
    """out[i, m] = max_{c≠m} hi[i, c], from the top two of each row (Θ(d²))."""
    top2 = hi.topk(2, dim=-1)
    cols = torch.arange(hi.shape[1])
    first, second = top2.values[:, 0:1], top2.values[:, 1:2]
    return torch.where(cols[None, :] == top2.indices[:, 0:1], second, first)


def h_table(c: Circuits) -> torch.Tensor:
    """H(t, m) lower bound: EVOU_lo[t, m] − max_{c≠m} EVOU_hi[t, c]."""
    return down(c.evou.lower() - top_excluding(c.evou.upper()))


def pp_table(c: Circuits) -> torch.Tensor:
    """PP(m, c) lower bound: min_j (PVOU[j, m] − PVOU[j, c]) over every position j; +inf on c = m."""
    diff = c.pvou.unsqueeze(2) - c.pvou.unsqueeze(1)          # (j, m, c)
    pp = diff.lower().min(dim=0).values
    return pp.fill_diagonal_(INF)


def dp_joint(c: Circuits) -> torch.Tensor:
    """DP(t_q, m) lower bound with the min over c taken jointly (Θ(d_vocab³))."""
    dd = c.direct.unsqueeze(2) - c.direct.unsqueeze(1)        # (tq, m, c)
    tot = down(dd.lower() + pp_table(c).unsqueeze(0))
    return tot.min(dim=2).values


def attention_tables(a_lo: torch.Tensor, a_hi: torch.Tensor, diag: IV, c: Circuits) -> dict:
    """xmin / ymax / query weights from score bounds a_lo/a_hi (d×d, rows may be shifted) and the exact
    diagonal `diag` (the query's own token, same shift)."""
    v, k = c.d_vocab, c.k
    b = c.eqkp
    b_lo, b_hi = b.lower(), b.upper()
    sq = diag + b[:, k - 1]
    shift = torch.maximum(up(a_hi.max(dim=1).values + b_hi[:, : k - 1].max(dim=1).values), sq.upper())
    shift = shift.floor()                                       # an integer: x − shift is one rounding
    # copies of m at non-query position j: weight ≥ exp(a_lo[tq, m] + b_lo[tq, j] − shift)
    xs = down(down(a_lo.unsqueeze(2) + b_lo[:, None, : k - 1]) - shift[:, None, None])
    x = torch.exp(xs) * (1 - 2.0**-40)
    x = x.sort(dim=2).values
    xmin = torch.cat([torch.zeros(v, v, 1, dtype=x.dtype), cumsum_lower(x, 2)], dim=2)
    # other tokens ≤ t' at position j: weight ≤ exp(max_{t≤t'} a_hi[tq, t] + b_hi[tq, j] − shift)
    amax = a_hi.cummax(dim=1).values
    ys = up(up(amax.unsqueeze(2) + b_hi[:, None, : k - 1]) - shift[:, None, None])
    y = (torch.exp(ys) * (1 + 2.0**-40)).sort(dim=2, descending=True).values
    ymax = torch.cat([torch.zeros(v, v, 1, dtype=y.dtype), cumsum_upper(y, 2)], dim=2)
    sh = IV.exact(shift)
    wq_lo, wq_hi = (sq - sh).exp_bounds()
    return {"xmin": xmin, "ymax": ymax, "wq_lo": wq_lo, "wq_hi": wq_hi}


GRID = torch.tensor([1.0 - 2.0**-g for g in range(24)], dtype=torch.float64)   # exact floats, 0 … 1−2⁻²³


def coupled_table(c: Circuits, window: int | None = None) -> torch.Tensor:
    """f(m, t', g) = min_{c≠m} [α_g·U_c(m) + (1−α_g)·min_{t≤t'} ΔE(t; m, c)], ΔE(t; m, c) = EVOU[t,m] − EVOU[t,c].

    Θ(d_vocab³·|grid|) in full; with `window` only t' ∈ [m−window, m−1] is filled (Θ(d_vocab²·window·|grid|)),
    the rest is −inf (no information). Each step rounds down, so every entry is a lower bound.
    """
    v = c.d_vocab
    lo, hi = c.evou.lower(), c.evou.upper()
    f = torch.full((v, v, len(GRID)), -INF, dtype=torch.float64)
    idx = torch.arange(v)
    for m in range(v):
        tps = range(m) if window is None else range(max(0, m - window), m)
        if not tps:
            continue
        t0 = tps[0]
        de = down(lo[: m, m : m + 1] - hi[: m, :])                 # (t, c) for t < m
        wc = de.cummin(dim=0).values[t0:m]                          # (t', c) prefix over t ≤ t'
        uc = down(lo[m, m] - hi[m, :])                              # (c,)
        keep = idx != m
        for g, alpha in enumerate(GRID.tolist()):
            val = down(down(alpha * uc[None, :]) + down((1.0 - alpha) * wc))
            f[m, t0:m, g] = val[:, keep].min(dim=1).values
    return f


def evaluate(t: CaseTables, tq: torch.Tensor, m: torch.Tensor, tp: torch.Tensor, n: torch.Tensor,
             k: int) -> torch.Tensor:
    """Proven? for each case; tp = −1 where r = K−1−n = 0. All steps round outward.

    With a_q the query's attention and α' the copies' share among the non-query keys,
        Σ_j a_j ΔE_j(c) = a_q ΔE(t_q; m, c) + (1 − a_q)[α' ΔE(m; m, c) + (1 − α') ΔE_others(c)]   (t_q < m)
    and for t_q = m the query is one more copy. F(α) = min over α' ∈ [α, 1] of the bracket's min over c
    is bounded by max(decoupled: U or W + α(U − W);  coupled: min(f(g*), U) with α_{g*} ≤ α).
    """
    r = k - 1 - n
    eq = tq == m
    zero = torch.zeros((), dtype=torch.float64)
    tpi = tp.clamp(min=0)
    x = down(t.xmin[tq, m, n] + torch.where(eq, t.wq_lo[tq], zero))
    y = torch.where(r > 0, t.ymax[tq, tpi, r], zero)
    alpha = down(x / up(x + y))
    u = t.h[m, m]
    w = t.hpref[m, tpi]
    dec = torch.where(u < w, u, down(w + down(alpha * down(u - w).clamp(min=0))))
    big_f = dec
    if t.fgrid is not None:
        gidx = ((GRID[None, :] <= alpha[:, None]).sum(dim=1) - 1).clamp(min=0)
        big_f = torch.maximum(dec, torch.minimum(t.fgrid[m, tpi, gidx], u))
    big_f = torch.where(r > 0, big_f, u)
    # the query, when it is not a copy: weight a_q ≤ wq_hi / (wq_hi + x), value ≥ H(t_q, m)
    aq = up(t.wq_hi[tq] / down(t.wq_hi[tq] + x))
    hq = t.h[tq, m]
    with_q = torch.where(hq >= big_f, big_f, down(big_f + down(aq.clamp(max=1.0) * down(hq - big_f))))
    inner = torch.where(eq, big_f, with_q)
    g = down(t.dp[tq, m] + inner)
    return g > 0


def case_tables(c: Circuits, a: IV, dp: torch.Tensor, fgrid: torch.Tensor | None) -> CaseTables:
    v = c.d_vocab
    idx = torch.arange(v)
    diag = a[idx, idx]
    att = attention_tables(a.lower(), a.upper(), diag, c)
    h = h_table(c)
    hpref = h.T.cummin(dim=1).values                           # (m, t')
    return CaseTables(att["xmin"], att["ymax"], att["wq_lo"], att["wq_hi"], h, hpref, dp, fgrid)


def enumerate_cases(v: int, k: int):
    """All cases, vectorised: tq, m, tp (−1 when r = 0), n, and exact counts (int64)."""
    rows = []
    for m in range(v):
        for n in range(k):
            r = k - 1 - n
            tqs = range(m + 1) if n > 0 else [m]
            tps = range(m) if r > 0 else [-1]
            for tq in tqs:
                for tp in tps:
                    cnt = comb(k - 1, n) * (((tp + 1) ** r - tp**r) if r > 0 else 1)
                    if cnt:
                        rows.append((tq, m, tp, n, cnt))
    t = torch.tensor(rows, dtype=torch.int64)
    return t[:, 0], t[:, 1], t[:, 2], t[:, 3], t[:, 4]


def cubic_proof(c: Circuits) -> dict:
    a = eqke(c)
    tables = case_tables(c, a, dp_joint(c), coupled_table(c))
    tq, m, tp, n, cnt = enumerate_cases(c.d_vocab, c.k)
    ok = evaluate(tables, tq, m, tp, n, c.k)
    proven = torch.zeros(c.d_vocab, c.d_vocab, dtype=torch.int64)
    proven.index_put_((tq[ok], m[ok]), cnt[ok], accumulate=True)
    return {"proven": flatten_groups(proven), "cases": int(len(cnt)), "cases_proven": int(ok.sum())}
