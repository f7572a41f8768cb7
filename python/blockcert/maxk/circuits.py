"""The model's circuits as rigorous float64 interval tables, and the case/group structure of inputs.

With x_i = E[t_i] + P[i] and the query at position q = K−1 (token t_q), the score of key j is exactly

    s_j = EQKE[t_q, t_j] + EQKP[t_q, j],   EQKE = (E + P_q) W_Q W_Kᵀ Eᵀ / √d_head,
                                           EQKP = (E + P_q) W_Q W_Kᵀ Pᵀ / √d_head,

and the logits are exactly  DIRECT[t_q] + Σ_j a_j (EVOU[t_j] + PVOU[j])  with
DIRECT = (E + P_q) W_U, EVOU = E W_V W_O W_U, PVOU = P W_V W_O W_U.

Inputs are grouped by (query token t_q, max token m), t_q ≤ m; `group_totals` counts each group's
sequences exactly: (m+1)^(K−1) − m^(K−1) when t_q < m, (m+1)^(K−1) when t_q = m.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blockcert.maxk.rigor import IV, inv_sqrt


@dataclass(frozen=True)
class Circuits:
    d_vocab: int
    k: int
    d_model: int
    d_head: int
    q: IV        # (d_vocab, d_head)  (E + P_q) W_Q
    key_e: IV    # (d_vocab, d_head)  E W_K
    key_p: IV    # (K, d_head)        P W_K
    eqkp: IV     # (d_vocab, K)
    evou: IV     # (d_vocab, d_vocab)
    pvou: IV     # (K, d_vocab)
    direct: IV   # (d_vocab, d_vocab)
    scale: IV    # 1/sqrt(d_head)


def circuits(state: dict[str, torch.Tensor]) -> Circuits:
    """Everything except EQKE (which the cubic proof computes in full and the subcubic one avoids)."""
    E, P = IV.exact(state["W_E"]), IV.exact(state["W_pos"])
    WQ, WK, WV, WO, WU = (IV.exact(state[n]) for n in ("W_Q", "W_K", "W_V", "W_O", "W_U"))
    v, d = state["W_E"].shape
    k, h = state["W_pos"].shape[0], state["W_Q"].shape[1]
    xq = E + P[k - 1 : k]
    q = xq @ WQ
    key_e, key_p = E @ WK, P @ WK
    scale = inv_sqrt(h)
    eqkp = (q @ key_p.T).mul(scale)
    ov = (WV @ WO) @ WU
    return Circuits(v, k, d, h, q, key_e, key_p, eqkp, E @ ov, P @ ov, xq @ WU, scale)


def eqke(c: Circuits) -> IV:
    """The full d_vocab × d_vocab query-token × key-token score table."""
    return (c.q @ c.key_e.T).mul(c.scale)


def groups(d_vocab: int) -> list[tuple[int, int]]:
    """Canonical order of the (t_q, m) groups: m ascending, then t_q ascending."""
    return [(tq, m) for m in range(d_vocab) for tq in range(m + 1)]


def group_index(d_vocab: int) -> dict[tuple[int, int], int]:
    return {g: i for i, g in enumerate(groups(d_vocab))}


def group_totals(d_vocab: int, k: int) -> list[int]:
    out = []
    for tq, m in groups(d_vocab):
        out.append((m + 1) ** (k - 1) - (m ** (k - 1) if tq < m else 0))
    return out


def flatten_groups(table: torch.Tensor) -> list[int]:
    """A (t_q, m) integer table → the group list in canonical order."""
    v = table.shape[0]
    return [int(table[tq, m]) for tq, m in groups(v)]
