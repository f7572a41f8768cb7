"""`lowrank:R` and `lowrank:R,mlp`: truncated SVD of the attention projections (and the MLP matrices).

Each selected map W [out, in] with R < rank(W) is stored as two factors, `u` = U_R·diag(s_R) [out, R] and
`v` = V_R^T [R, in], which the interpreter applies as two products. The SVD is taken in float64 and each
singular pair's sign is fixed (the largest-magnitude entry of each column of U is positive), so the
factors do not depend on which LAPACK computed them beyond float64 rounding. A map whose rank bound
min(out, in) is below R is already its own rank-R truncation: it is kept dense and the derivation says
so. R is refused when it is
≤ 0 or above the rank bound of every selected map.
"""

from __future__ import annotations

import torch

from blockcert.core.ir import BlockIR, Derivation, LinearForm
from blockcert.errors import BlockCertError
from blockcert.surrogates.linear import ATTENTION, MLP, linear_names, without
from blockcert.surrogates.registry import SurrogateKind, register

FORMS = "lowrank:R or lowrank:R,mlp with R a whole number ≥ 1"


def parse(text: str) -> tuple[int, bool]:
    head, sep, tail = text.partition(",")
    if sep and tail != "mlp":
        raise BlockCertError(f"--surrogate 'lowrank:{text}': unknown option {tail!r}; use {FORMS}")
    try:
        r = int(head)
    except ValueError:
        raise BlockCertError(f"--surrogate 'lowrank:{text}': R={head!r} is not a whole number; use {FORMS}") from None
    if r <= 0:
        raise BlockCertError(f"--surrogate 'lowrank:{text}': R={r} must be ≥ 1; use {FORMS}")
    return r, bool(sep)


def selected(ir: BlockIR, with_mlp: bool) -> list[str]:
    return linear_names(ir, ATTENTION + (MLP if with_mlp else ()))


def max_rank(ir: BlockIR, with_mlp: bool) -> int:
    """The largest R that truncates anything: the biggest full rank bound min(out, in) of the selected maps."""
    return max(min(ir.tensors[f"{n}.weight"].shape) for n in selected(ir, with_mlp))


def check(ir: BlockIR, text: str) -> None:
    r, with_mlp = parse(text)
    names = selected(ir, with_mlp)
    missing = [n for n in names if f"{n}.weight" not in ir.tensors]
    if missing:
        raise BlockCertError(f"--surrogate 'lowrank:{text}': {', '.join(missing)} is not stored dense; "
                             "low rank is derived from a dense (exact, bf16, fp16) IR")
    top = max_rank(ir, with_mlp)
    if r > top:
        raise BlockCertError(f"--surrogate 'lowrank:{text}': R={r} is above the rank of every matrix it "
                             f"applies to (at most {top} here); use 1 ≤ R ≤ {top}")


# The last few SVDs, keyed by the tensor object itself: a compression search asks for many ranks of the
# same matrices, and the decomposition does not depend on the rank.
_SVD: list[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = []
_SVD_KEEP = 8


def _svd(w: torch.Tensor):
    for t, usv in _SVD:
        if t is w:
            return usv
    usv = torch.linalg.svd(w.to(torch.float64), full_matrices=False)
    _SVD.append((w, usv))
    del _SVD[:-_SVD_KEEP]
    return usv


def factors(w: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-r factors (u, v) of w with u @ v the truncated SVD, sign-normalised, in w's dtype."""
    u, s, vh = _svd(w)
    u, s, vh = u[:, :r], s[:r], vh[:r]
    pivot = u.abs().argmax(dim=0)
    sign = torch.sign(u[pivot, torch.arange(r)])
    sign[sign == 0] = 1.0
    u, vh = u * sign, vh * sign[:, None]
    return (u * s).to(w.dtype).contiguous(), vh.to(w.dtype).contiguous()


def derive(ir: BlockIR, text: str) -> BlockIR:
    check(ir, text)
    r, with_mlp = parse(text)
    ts = dict(ir.tensors)
    forms = dict(ir.spec.linears)
    done = []
    for name in selected(ir, with_mlp):
        w = ts[f"{name}.weight"]
        if r > min(w.shape):
            done.append(f"{name} kept dense (its rank bound {min(w.shape)} < R)")
            continue
        u, v = factors(w, r)
        ts = without(ts, name)
        ts[f"{name}.u"], ts[f"{name}.v"] = u, v
        forms[name] = LinearForm(form="lowrank", rank=r)
        done.append(f"{name} rank {r}")
    method = ("truncated SVD in float64 (u = U_R diag(s_R), v = V_R^T, sign of each pair fixed by the "
              "largest entry of U's column): " + "; ".join(done))
    spec = ir.spec.model_copy(
        update={"derivation": Derivation(kind="lowrank", args=text, method=method), "linears": forms})
    return BlockIR(spec, ts)


register(SurrogateKind("lowrank", FORMS + ": rank-R SVD factors of W_Q, W_K, W_V, W_O (and the MLP)", derive,
                       takes_args=True, check=check))
