-- Hand-written example in exactly the shape of a generated run module
-- (see BlockCert/GENERATED.md). Two blocks, every Lipschitz constant present.
import BlockCert.Checker

namespace BlockCert.Runs.Example
open BlockCert

def run : Run :=
  { policy := ⟨⟨47, 50⟩, ⟨9, 10⟩⟩,
    blocks := [
      { index := 0, epsilon := ⟨123, 4096⟩, lipschitz := some ⟨3, 2⟩,
        actCovered := 90, nTokens := 90, lossCovered := ⟨19, 20⟩, lossTotal := ⟨1, 1⟩,
        certified := true },
      { index := 1, epsilon := ⟨1, 1000⟩, lipschitz := some ⟨1, 1⟩,
        actCovered := 85, nTokens := 90, lossCovered := ⟨9, 10⟩, lossTotal := ⟨1, 1⟩,
        certified := true }
    ],
    claimedBound := some ⟨1, 32⟩,
    measuredDeviation := some ⟨1, 100⟩ }

-- `decide +kernel`: the kernel alone evaluates `check run` (Nat/Int arithmetic on
-- literals is GMP-backed there); the elaborator does not evaluate it a second
-- time, so no elaborator recursion limit is involved, and unlike `native_decide`
-- no axiom beyond Lean's standard ones is added.
set_option maxRecDepth 100000 in
theorem run_check : check run = true := by decide +kernel

set_option maxRecDepth 100000 in
theorem run_lipschitz : (globalBound run.blocks).isSome = true := by decide +kernel

-- Computed bound 254192/8192000 ≈ 0.0310 ≤ claimed 1/32 = 0.03125.
theorem global_bound {X : Type} (D : DistSpace X Rat ratArith) (B Bh : Nat → X → X) (x : X)
    (h : TrajHyp ratArith D (stagesOf B Bh run.blocks) x x) :
    D.dist (runSurr (stagesOf B Bh run.blocks) x) (runBase (stagesOf B Bh run.blocks) x)
      ≤ Q.toRat ⟨1, 32⟩ :=
  check_sound (c := ⟨1, 32⟩) run run_check run_lipschitz rfl D B Bh x h

end BlockCert.Runs.Example
