"""Python → Lean: write a certified run's numbers as a Lean module that `lake build` checks (BlockCert/GENERATED.md).

`instantiate(cert_dir)` builds the run's formal numbers (formal_build.py), renders them in the exact
template of GENERATED.md, and writes the module to `<lean_root>/BlockCert/Runs/<Name>.lean` (picked up
by the library glob in lakefile.lean, nothing to register), a copy beside the run, and the run's
`formal_run.json`. The module proves `check run = true` by kernel evaluation and, when every block
carries a Lipschitz constant and a bound is claimed, states the instantiated global bound; when the run
carries a per-prompt part it also proves `checkPrompts run perPrompt = true` and states `per_prompt_bound`
(every prompt's own ε_i, L_i composed, against the claimed max over prompts).
"""

from __future__ import annotations

import re
from fractions import Fraction

from blockcert.core.exact import int_text
from blockcert.formal.mirror import FormalBlock, FormalPrompt, FormalRun, PerPrompt, has_bound_theorem

RESERVED = frozenset({"Example"})  # hand-written modules already in BlockCert/Runs


MAX_NAME_CHARS = 80  # of the readable part; the run id follows


def module_name(run_name: str, run_id: str = "") -> str:
    """`smollm2-135m/run1` + run id `3fa2…` → `Smollm2_135m_run1_3fa29c1e`: ASCII `[A-Z][A-Za-z0-9_]*`.

    The run id (the manifest's `run_id()`: model, prompts, policy and every block certificate) makes the name
    unique per run: two runs that share a directory name no longer map to one module file."""
    name = "_".join(re.findall(r"[A-Za-z0-9]+", run_name))[:MAX_NAME_CHARS] or "Run"
    if not name[0].isalpha():
        name = "Run_" + name  # a leading digit is no identifier
    name = name[0].upper() + name[1:]
    if run_id:
        name += "_" + "".join(ch for ch in run_id if ch in "0123456789abcdef")[:8]
    return name + "_run" if name in RESERVED else name


def lean_q(q: Fraction) -> str:
    """`⟨n, d⟩` in lowest terms (any representative would do; this one is shortest)."""
    return f"⟨{int_text(q.numerator)}, {int_text(q.denominator)}⟩"


def lean_opt_q(q: Fraction | None) -> str:
    return "none" if q is None else f"some {lean_q(q)}"


def _block_lines(b: FormalBlock) -> list[str]:
    return [
        f"      {{ index := {b.index}, epsilon := {lean_q(b.epsilon)}, lipschitz := {lean_opt_q(b.lipschitz)},",
        f"        actCovered := {b.act_covered}, nTokens := {b.n_tokens}, lossCovered := {lean_q(b.loss_covered)}, "
        f"lossTotal := {lean_q(b.loss_total)},",
        f"        certified := {'true' if b.certified else 'false'} }}",
    ]


def _blocks_lines(blocks: tuple[FormalBlock, ...]) -> list[str]:
    if not blocks:
        return ["    blocks := [],"]
    entries = [_block_lines(b) for b in blocks]
    for entry in entries[:-1]:
        entry[-1] += ","  # separators between entries; none after the last
    return ["    blocks := ["] + [line for entry in entries for line in entry] + ["    ],"]


def _bound_part(c: Fraction) -> list[str]:
    cq = lean_q(c)
    return [
        "",
        "set_option maxRecDepth 100000 in",
        "theorem run_lipschitz : (globalBound run.blocks).isSome = true := by decide +kernel",
        "",
        "theorem global_bound {X : Type} (D : DistSpace X Rat ratArith) (B Bh : Nat → X → X) (x : X)",
        "    (h : TrajHyp ratArith D (stagesOf B Bh run.blocks) x x) :",
        "    D.dist (runSurr (stagesOf B Bh run.blocks) x) (runBase (stagesOf B Bh run.blocks) x)",
        f"      ≤ Q.toRat {cq} :=",
        f"  check_sound (c := {cq}) run run_check run_lipschitz rfl D B Bh x h",
        "",
    ]


def _prompt_lines(p: FormalPrompt) -> list[str]:
    vals = [f"⟨{lean_q(q.epsilon)}, {lean_q(q.lipschitz)}⟩" for q in p.blocks]
    blocks = ("        blocks := [" + ", ".join(vals) + "],") if vals else "        blocks := [],"
    return ["      {", blocks, f"        measuredDeviation := {lean_opt_q(p.measured_deviation)} }}"]


def _per_prompt_part(pp: PerPrompt) -> list[str]:
    """GENERATED.md's <<PER-PROMPT PART>>: the data, its kernel check and the bound theorem for every prompt."""
    cq = lean_q(pp.claimed_bound)
    if pp.prompts:
        entries = [_prompt_lines(p) for p in pp.prompts]
        for entry in entries[:-1]:
            entry[-1] += ","
        prompts = ["    prompts := ["] + [line for e in entries for line in e] + ["    ] }"]
    else:
        prompts = ["    prompts := [] }"]
    return [  # follows an empty line (the end of the bound part, or the line that stands for it)
        "def perPrompt : PerPrompt :=",
        f"  {{ claimedBound := {cq},",
        *prompts,
        "",
        "set_option maxRecDepth 100000 in",
        "theorem prompts_check : checkPrompts run perPrompt = true := by decide +kernel",
        "",
        "theorem per_prompt_bound {X : Type} (D : DistSpace X Rat ratArith) (B Bh : Nat → X → X)",
        "    (p : PromptData) (hp : Among p perPrompt.prompts) (x : X)",
        "    (h : TrajHyp ratArith D (stagesOf B Bh (promptBlocks run.blocks p.blocks)) x x) :",
        "    D.dist (runSurr (stagesOf B Bh (promptBlocks run.blocks p.blocks)) x)",
        "        (runBase (stagesOf B Bh (promptBlocks run.blocks p.blocks)) x)",
        f"      ≤ Q.toRat {cq} :=",
        f"  checkPrompts_sound (c := {cq}) run perPrompt prompts_check rfl p hp D B Bh x h",
        "",
    ]


def comment_text(s: str) -> str:
    """One line, printable: the run name goes into a `--` comment."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in s).split()) or "(unnamed)"


def render_module(run: FormalRun, name: str) -> str:
    """The module text, exactly the template of BlockCert/GENERATED.md."""
    p = run.policy
    lines = [
        f"-- Generated by blockcert.bridge from {comment_text(run.name)}; do not edit.",
        "import BlockCert.Checker",
        "",
        f"namespace BlockCert.Runs.{name}",
        "open BlockCert",
        "",
        "def run : Run :=",
        f"  {{ policy := ⟨{lean_q(p.alpha_act)}, {lean_q(p.alpha_loss)}⟩,",
        *_blocks_lines(run.blocks),
        f"    claimedBound := {lean_opt_q(run.claimed_bound)},",
        f"    measuredDeviation := {lean_opt_q(run.measured_deviation)} }}",
        "",
        "set_option maxRecDepth 100000 in",
        "theorem run_check : check run = true := by decide +kernel",
        # The bound theorem only once the run carries every L and a claim; otherwise one empty line.
        *(_bound_part(run.claimed_bound) if has_bound_theorem(run) else [""]),
        # The per-prompt part only when the run carries one; otherwise nothing (the line above ends the run).
        *(_per_prompt_part(run.per_prompt) if run.per_prompt is not None else []),
        f"end BlockCert.Runs.{name}",
    ]
    return "\n".join(lines) + "\n"
