"""FLOP counts read off each method's loop structure (point arithmetic; see the note below).

Counted: every scalar +, −, ×, /, max/min and exp of the real-arithmetic algorithm, a matrix product
(a×b)@(b×c) as 2abc. Not counted: the interval radii that make the float64 computation rigorous (they
roughly quadruple matrix products and double elementwise work, the same factor for every method),
sorting of K-element lists, and index bookkeeping. Per evaluated case the scalar combination is
EVAL_FLOPS operations (counted in cubic.evaluate).
"""

from __future__ import annotations

EVAL_FLOPS = 30
GRID = 24


def _mm(a: int, b: int, c: int) -> int:
    return 2 * a * b * c


def circuit_flops(v: int, k: int, dm: int, dh: int, with_eqke: bool) -> int:
    f = v * dm                                   # E + P_q
    f += _mm(v, dm, dh) + _mm(v, dm, dh) + _mm(k, dm, dh) + _mm(v, dh, k)   # Q, K_E, K_P, EQKP
    f += _mm(dm, dh, dm) + _mm(dm, dm, v)        # W_V W_O W_U
    f += _mm(v, dm, v) + _mm(k, dm, v) + _mm(v, dm, v)                      # EVOU, PVOU, DIRECT
    if with_eqke:
        f += _mm(v, dh, v)
    return f


def attention_table_flops(v: int, k: int) -> int:
    return 2 * (3 * v * v * (k - 1) + v * v * (k - 1)) + 4 * v     # scores, exp, prefix sums; query


def coupled_flops(v: int, window: int | None) -> int:
    total = 0
    for m in range(v):
        rows = m if window is None else min(m, window)
        total += 2 * m * v + rows * v * (1 + GRID * 4)
    return total


def brute_flops(v: int, k: int, dm: int, dh: int) -> int:
    f = circuit_flops(v, k, dm, dh, with_eqke=True)
    f += v * (k * v * v * 4 + k * v)              # per query token: T_j tables and exps
    nf = (k - 1 + 1) // 2
    f += v * (v**nf * v + v ** (k - 1 - nf) * v)  # front/back row sums
    f += v**k * (2 * v + 2)                       # per sequence: d adds, d-way max, the margin test
    return f


def cubic_flops(v: int, k: int, dm: int, dh: int, n_cases: int) -> int:
    f = circuit_flops(v, k, dm, dh, with_eqke=True)
    f += 3 * v * v + 2 * k * v * v                # H (top-two rows), PP
    f += 3 * v**3                                 # DP with the joint min over c
    f += attention_table_flops(v, k) + coupled_flops(v, None)
    f += n_cases * EVAL_FLOPS
    return f


def subcubic_flops(v: int, k: int, dm: int, dh: int, rank: int, window: int, evaluations: int) -> int:
    f = circuit_flops(v, k, dm, dh, with_eqke=False)
    f += 2 * v * dh + 4 * v * dh * dh             # centre keys, SVD of the d_vocab × d_head keys
    f += 2 * _mm(v, dh, rank) + 2 * _mm(v, rank, dh) + _mm(rank, dh, rank)  # factors, perps, core
    f += _mm(v, rank, rank) + _mm(v, rank, v) + 4 * v * dh + 3 * v * v     # rank-r table, norms, errors
    f += 3 * v * dh                               # exact diagonal
    f += 3 * v * v + 2 * k * v * v + 4 * v * v    # H, PP, split DP (top-two rows)
    f += attention_table_flops(v, k) + coupled_flops(v, window)
    f += evaluations * EVAL_FLOPS
    return f
