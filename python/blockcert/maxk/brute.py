"""Exact accuracy over all d_vocab^K inputs, counted in integers, with rigorous float64 enclosures.

Tie convention (the conservative one): a sequence counts as correct iff the logit of its max token is
strictly larger than every other logit. A tie counts as wrong.

Structure exploited. Only the last position is read. With w_j = exp(s_j − shift) > 0 the logits equal
N / Σ_j w_j where N = Σ_j w_j (DIRECT[t_q] + EVOU[t_j] + PVOU[j]) is a sum of one table row per position,
and argmax is invariant under the positive factor Σ_j w_j. So per query token we tabulate
T_j[t] = w_j(t)·(DIRECT[t_q] + EVOU[t] + PVOU[j]) (as intervals), sum rows over the cartesian product of
the non-query positions in a front/back split, and compare logits: d_vocab adds and one max per sequence.

Rigour. Each N is known to within `tol` (the summed radii of its rows, plus γ_{K+3} times the summed
row magnitudes for the float64 additions, inflated). A sequence is *certainly correct* when
N_m − max_{c≠m} N_c > tol, *certainly wrong* when it is < −tol, and *ambiguous* otherwise. The exact
accuracy lies in [correct, correct + ambiguous] / d_vocab^K; the reported accuracy is the lower end.
"""

from __future__ import annotations

import itertools

import torch

from blockcert.maxk.circuits import Circuits, eqke, flatten_groups
from blockcert.maxk.rigor import INFLATE, IV, U

CHUNK = 1 << 18


def _rows(c: Circuits, a: IV, tq: int) -> tuple[list[IV], IV]:
    """Per-position tables T_j (d_vocab, d_vocab) for non-query j, and the query row T_q."""
    k = c.k
    scores = [a[tq] + IV(c.eqkp.mid[tq, j].expand(c.d_vocab), c.eqkp.rad[tq, j].expand(c.d_vocab))
              for j in range(k - 1)]
    sq = a[tq, tq : tq + 1] + c.eqkp[tq, k - 1 : k]
    shift = max([float(s.upper().max()) for s in scores] + [float(sq.upper().max())])
    sh = IV.exact(torch.tensor(shift))
    direct = c.direct[tq].unsqueeze(0)
    tabs = []
    for j in range(k - 1):
        w = IV.from_bounds(*(scores[j] - sh).exp_bounds()).unsqueeze(1)
        tabs.append(w.mul(direct + c.evou + c.pvou[j].unsqueeze(0)))
    wq = IV.from_bounds(*(sq - sh).exp_bounds())
    tq_row = wq.unsqueeze(1).mul(direct + c.evou[tq : tq + 1] + c.pvou[k - 1].unsqueeze(0))
    return tabs, tq_row[0]


def _combine(tabs: list[torch.Tensor], v: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of rows over the cartesian product of positions, and the max token of each combination."""
    out = torch.zeros(1, tabs[0].shape[1] if tabs else 1, dtype=torch.float64)
    mx = torch.zeros(1, dtype=torch.int64)
    tok = torch.arange(v)
    for t in tabs:
        out = (out[:, None, :] + t[None, :, :]).reshape(-1, out.shape[-1])
        mx = torch.maximum(mx[:, None], tok[None, :]).reshape(-1)
    return out, mx


def brute_force(c: Circuits) -> dict:
    """Per (t_q, m) group: certainly-correct counts; plus the ambiguous total. Exact Python ints."""
    v, k = c.d_vocab, c.k
    a = eqke(c)
    correct = torch.zeros(v, v, dtype=torch.int64)
    ambiguous = torch.zeros(v, v, dtype=torch.int64)
    n_front = (k - 1 + 1) // 2
    for tq in range(v):
        tabs, qrow = _rows(c, a, tq)
        g = (k + 3) * U / (1 - (k + 3) * U) * 2
        rowtol = [t.rad.max(dim=1).values + g * t.mid.abs().max(dim=1).values for t in tabs]
        qtol = float(qrow.rad.max()) + g * float(qrow.mid.abs().max())
        front, mf = _combine([t.mid for t in tabs[:n_front]], v)
        back, mb = _combine([t.mid for t in tabs[n_front:]], v)
        back = back + qrow.mid[None, :]
        tf, _ = _combine([t[:, None] for t in rowtol[:n_front]], v)
        tb, _ = _combine([t[:, None] for t in rowtol[n_front:]], v)
        tf, tb = tf[:, 0], tb[:, 0] + qtol
        rows_per = max(1, CHUNK // back.shape[0])
        for r0 in range(0, front.shape[0], rows_per):
            n = front[r0 : r0 + rows_per, None, :] + back[None, :, :]
            m = torch.maximum(mf[r0 : r0 + rows_per, None], mb[None, :]).clamp(min=tq)
            nm = n.gather(-1, m[..., None])
            n.scatter_(-1, m[..., None], float("-inf"))
            margin = nm[..., 0] - n.max(dim=-1).values
            tol = 2 * INFLATE * INFLATE * (tf[r0 : r0 + rows_per, None] + tb[None, :])
            ok = margin > tol
            amb = ~ok & ~(margin < -tol)
            correct[tq] += torch.bincount(m[ok], minlength=v)
            ambiguous[tq] += torch.bincount(m[amb], minlength=v)
    return {"correct": flatten_groups(correct), "ambiguous": flatten_groups(ambiguous)}


def brute_force_reference(model, v: int, k: int) -> int:
    """Plain float64 forward over every input (tiny configurations only): the count of strict wins."""
    model = model.double()
    seqs = torch.tensor(list(itertools.product(range(v), repeat=k)))
    with torch.no_grad():
        logits = model(seqs)
    lab = seqs.max(dim=1).values
    top = logits.gather(-1, lab[:, None])[:, 0]
    logits[torch.arange(len(seqs)), lab] = float("-inf")
    return int((top > logits.max(dim=-1).values).sum())
