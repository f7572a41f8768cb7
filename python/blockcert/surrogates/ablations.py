"""The ablations of paper Table 3, each an explicit surrogate IR that a verifier replays as measured.

- `no-rope`: the attention runs without rotary embeddings (`AttentionSpec.rope = False`, no tables stored);
- `inverted-mask`: the mask pattern `inverted` (query t sees keys at positions ≥ t) instead of causal; on a
  sliding-window layer (Gemma 3's local layers) that is every later key, since the window only bounds how
  far back a key may be (the derivation says so);
- `zero-wv`: W_V (and its bias) stored as zeros;
- `noise-wq`: W_Q + σ·rms(W_Q)·Z with Z standard normal from a CPU generator seeded with `seed`, so σ is
  relative to the scale of the block's own W_Q and the same (σ, seed) gives the same tensor anywhere.
Each is derived from the block's dense surrogate (densify first: an ablation changes the mechanism, not
its storage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from blockcert.core.ir import BlockIR, Derivation
from blockcert.surrogates.dense import densify


@dataclass(frozen=True)
class Ablation:
    name: str
    help: str
    apply: Callable[[BlockIR, float, int], BlockIR]  # (dense IR, sigma, seed) -> ablated IR


def _named(ir: BlockIR, name: str, args: str, method: str, spec_update: dict, ts: dict) -> BlockIR:
    d = Derivation(kind=f"ablation:{name}", args=args, method=method, base=ir.spec.derivation)
    return BlockIR(ir.spec.model_copy(update={**spec_update, "surrogate": f"ablation:{name}", "derivation": d}), ts)


def no_rope(ir: BlockIR, _sigma: float, _seed: int) -> BlockIR:
    ts = {k: v for k, v in ir.tensors.items() if not k.startswith("rope.")}
    att = ir.spec.attention.model_copy(update={"rope": False})
    return _named(ir, "no-rope", "", "rotary embedding removed (attention.rope = false)", {"attention": att}, ts)


def inverted_mask(ir: BlockIR, _sigma: float, _seed: int) -> BlockIR:
    att = ir.spec.attention.model_copy(update={"pattern": "inverted"})
    method = "mask pattern inverted: query t sees keys at positions ≥ t"
    if att.window is not None:  # the window bounds t − j from above, which no key j ≥ t exceeds
        method += (f"; the layer's sliding window of {att.window} (keys j > t − {att.window}) is kept in the "
                   "declaration but no longer excludes any key")
    return _named(ir, "inverted-mask", "", method, {"attention": att}, dict(ir.tensors))


def zero_wv(ir: BlockIR, _sigma: float, _seed: int) -> BlockIR:
    ts = {k: torch.zeros_like(v) if k in ("attn.v.weight", "attn.v.bias") else v for k, v in ir.tensors.items()}
    return _named(ir, "zero-wv", "", "W_V (and its bias) set to zero", {}, ts)


def noise_wq(ir: BlockIR, sigma: float, seed: int) -> BlockIR:
    w = ir.tensors["attn.q.weight"]
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(w.shape, generator=g, dtype=torch.float64)
    rms = float(w.to(torch.float64).square().mean().sqrt())
    ts = dict(ir.tensors)
    ts["attn.q.weight"] = (w.to(torch.float64) + sigma * rms * z).to(w.dtype)
    return _named(ir, "noise-wq", f"sigma={sigma:g},seed={seed}",
                  f"W_Q + σ·rms(W_Q)·Z, σ = {sigma:g}, rms = {rms:.6g}, Z ~ N(0, 1) from torch CPU seed {seed}",
                  {}, ts)


ABLATIONS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation("no-rope", "drop RoPE", no_rope),
        Ablation("inverted-mask", "invert the causal mask", inverted_mask),
        Ablation("zero-wv", "zero W_V", zero_wv),
        Ablation("noise-wq", "Gaussian noise on W_Q", noise_wq),
    )
}


def ablate(ir: BlockIR, name: str, sigma: float = 0.1, seed: int = 0) -> BlockIR:
    return ABLATIONS[name].apply(densify(ir), sigma, seed)
