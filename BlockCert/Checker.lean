/-
The certificate checker and its soundness theorem.

`check` is a `Bool` function over `Q` built from `&&`, `decide` on `Nat`/`Int`
comparisons and structural recursion on lists only, so a generated module can
prove `check run = true` by kernel evaluation. `check_sound` turns that fact,
plus the per-block hypotheses for the run's numbers, into the global bound
`d(F̂ x, F x) ≤ claimed` over `Rat`.

The per-prompt bound (`PerPrompt`, `checkPrompts`, `checkPrompts_sound`): each prompt
has its own `ε_i` and `L_i`; `promptRun` makes it a `Run` of its own (the run's
block indices, no coverage: that is checked once, on the run), so `check` and
`check_sound` apply to it unchanged, and one claim (the max over prompts) bounds
every prompt.
-/
import BlockCert.Exact
import BlockCert.RatInst

namespace BlockCert

structure Policy where
  alphaAct : Q
  alphaLoss : Q
  deriving Repr

structure Block where
  index : Nat
  epsilon : Q
  lipschitz : Option Q
  actCovered : Nat
  nTokens : Nat
  lossCovered : Q
  lossTotal : Q
  certified : Bool
  deriving Repr

structure Run where
  policy : Policy
  blocks : List Block
  claimedBound : Option Q
  measuredDeviation : Option Q
  deriving Repr

/-- `actCovered / nTokens ≥ αact` as `num(αact) * nTokens ≤ actCovered * den(αact)`,
with `nTokens > 0`. -/
def actCoverageOk (p : Policy) (b : Block) : Bool :=
  decide (0 < b.nTokens) &&
    decide (p.alphaAct.num * (b.nTokens : Int) ≤ (b.actCovered : Int) * (p.alphaAct.den : Int))

/-- `lossCovered ≥ αloss * lossTotal`. -/
def lossCoverageOk (p : Policy) (b : Block) : Bool :=
  Q.leB (Q.mul p.alphaLoss b.lossTotal) b.lossCovered

/-- What the `certified` flag must say, given the coverages and the policy. -/
def coverageOk (p : Policy) (b : Block) : Bool :=
  actCoverageOk p b && lossCoverageOk p b

def lipOk : Option Q → Bool
  | none => true
  | some l => l.valid && l.nonneg

-- Right-nested `&&` throughout, so that `band` peels the facts off in order.
def blockOk (p : Policy) (b : Block) : Bool :=
  b.epsilon.valid && (b.epsilon.nonneg && (lipOk b.lipschitz &&
    (b.lossCovered.valid && (b.lossTotal.valid && decide (b.certified = coverageOk p b)))))

def allBlocksOk (p : Policy) : List Block → Bool
  | [] => true
  | b :: bs => blockOk p b && allBlocksOk p bs

def policyOk (p : Policy) : Bool :=
  p.alphaAct.valid && p.alphaLoss.valid

def optValid : Option Q → Bool
  | none => true
  | some q => q.valid

/-- `b ← L_i * b + ε_i` over the blocks in layer order; `none` as soon as a block
has no Lipschitz constant. -/
def globalBoundFrom : Q → List Block → Option Q
  | b, [] => some b
  | b, blk :: bs =>
    match blk.lipschitz with
    | none => none
    | some l => globalBoundFrom (Q.add (Q.mul l b) blk.epsilon) bs

/-- `Σ_i ε_i Π_{j>i} L_j`, computed by the recursion from `b_0 = 0`. -/
def globalBound (bs : List Block) : Option Q :=
  globalBoundFrom ⟨0, 1⟩ bs

/-- If the bound is computable, a claim must be present and at least as large. -/
def boundOk : Option Q → Option Q → Bool
  | none, _ => true
  | some _, none => false
  | some g, some c => Q.leB g c

/-- If a deviation was measured, a claim must be present and at least as large. -/
def measuredOk : Option Q → Option Q → Bool
  | none, _ => true
  | some _, none => false
  | some m, some c => Q.leB m c

def check (r : Run) : Bool :=
  allBlocksOk r.policy r.blocks && (policyOk r.policy && (optValid r.claimedBound &&
    (optValid r.measuredDeviation && (boundOk (globalBound r.blocks) r.claimedBound &&
      measuredOk r.measuredDeviation r.claimedBound))))

/-! ## From the run's numbers to `Rat` stages -/

def optRat : Option Q → Rat
  | none => 0
  | some l => l.toRat

/-- The run's blocks as stages of Theorem 1: block `b` uses `B b.index`,
`Bh b.index`, `ε = b.epsilon` and `L = b.lipschitz` (as `Rat`). -/
def stagesOf {X : Type} (B Bh : Nat → X → X) : List Block → List (Stage X Rat)
  | [] => []
  | b :: bs =>
    ({ base := B b.index, surr := Bh b.index, eps := b.epsilon.toRat,
       lip := optRat b.lipschitz } : Stage X Rat) :: stagesOf B Bh bs

theorem blockOk_eps {p : Policy} {b : Block} (h : blockOk p b = true) :
    b.epsilon.den ≠ 0 :=
  of_decide_eq_true (band h).1

theorem blockOk_lip {p : Policy} {b : Block} (h : blockOk p b = true) :
    lipOk b.lipschitz = true :=
  (band (band (band h).2).2).1

theorem lipOk_some {l : Q} (h : lipOk (some l) = true) : l.den ≠ 0 ∧ 0 ≤ l.num := by
  have h' : (l.valid && l.nonneg) = true := h
  exact ⟨of_decide_eq_true (band h').1, of_decide_eq_true (band h').2⟩

theorem optRat_nonneg : ∀ o : Option Q, lipOk o = true → 0 ≤ optRat o
  | none, _ => @Rat.le_refl 0
  | some l, h => Q.toRat_nonneg (q := l) (lipOk_some h).2

theorem lipNonneg_of_ok {X : Type} (B Bh : Nat → X → X) (p : Policy) :
    ∀ bs : List Block, allBlocksOk p bs = true → LipNonneg ratArith (stagesOf B Bh bs)
  | [], _ => True.intro
  | b :: bs, h =>
    ⟨optRat_nonneg b.lipschitz (blockOk_lip (band h).1),
      lipNonneg_of_ok B Bh p bs (band h).2⟩

/-- The `Q` recursion computes, in `Rat`, exactly the abstract `boundFrom`. -/
theorem globalBoundFrom_toRat {X : Type} (B Bh : Nat → X → X) (p : Policy) :
    ∀ (bs : List Block) (q g : Q), allBlocksOk p bs = true → q.den ≠ 0 →
      globalBoundFrom q bs = some g →
      boundFrom ratArith (stagesOf B Bh bs) q.toRat = g.toRat ∧ g.den ≠ 0 := by
  intro bs
  induction bs with
  | nil =>
    intro q g _ hq hg
    have e : some q = some g := hg
    cases e
    exact ⟨rfl, hq⟩
  | cons b bs ih =>
    intro q g hok hq hg
    have hsplit := band hok
    have hb : blockOk p b = true := hsplit.1
    have hrest : allBlocksOk p bs = true := hsplit.2
    have he : b.epsilon.den ≠ 0 := blockOk_eps hb
    have hlo : lipOk b.lipschitz = true := blockOk_lip hb
    cases b with
    | mk index epsilon lipschitz actCovered nTokens lossCovered lossTotal certified =>
      cases lipschitz with
      | none =>
        have e : (none : Option Q) = some g := hg
        cases e
      | some l =>
        have hl : l.den ≠ 0 := (lipOk_some hlo).1
        have he' : epsilon.den ≠ 0 := he
        have hg' : globalBoundFrom (Q.add (Q.mul l q) epsilon) bs = some g := hg
        have hmul : (Q.mul l q).den ≠ 0 := Nat.mul_ne_zero hl hq
        have hq' : (Q.add (Q.mul l q) epsilon).den ≠ 0 := Nat.mul_ne_zero hmul he'
        have hval : (Q.add (Q.mul l q) epsilon).toRat = l.toRat * q.toRat + epsilon.toRat := by
          rw [Q.toRat_add (Q.mul l q) epsilon hmul he', Q.toRat_mul]
        have ih' := ih (Q.add (Q.mul l q) epsilon) g hrest hq' hg'
        rw [hval] at ih'
        exact ih'

/-- The bound `check` compares with the claim is `Σ_i ε_i Π_{j>i} L_j` over `Rat`. -/
theorem globalBound_closedForm {X : Type} (B Bh : Nat → X → X) (p : Policy)
    (bs : List Block) (g : Q) (hok : allBlocksOk p bs = true) (hg : globalBound bs = some g) :
    g.toRat = closedForm ratArith (stagesOf B Bh bs) := by
  have hA := globalBoundFrom_toRat B Bh p bs ⟨0, 1⟩ g hok (by decide) hg
  have h0 : Q.toRat ⟨0, 1⟩ = ratArith.zero := @Rat.zero_mkRat 1
  rw [h0] at hA
  rw [← hA.1]
  exact bound_eq_closedForm ratArith (stagesOf B Bh bs)

/-- Soundness of the checker. If `check r = true`, every block has a Lipschitz
constant and the run claims the bound `c`, then for any space `X` with a
`Rat`-valued distance, any baseline/surrogate blocks `B i`, `Bh i` and any input
`x` whose traced trajectory satisfies the per-block hypotheses with the run's
`ε_i` and `L_i`, the stitched model is within `c` of the baseline at `x`. -/
theorem check_sound (r : Run) (hc : check r = true)
    (hL : (globalBound r.blocks).isSome = true) {c : Q} (hcl : r.claimedBound = some c)
    {X : Type} (D : DistSpace X Rat ratArith) (B Bh : Nat → X → X) (x : X)
    (hT : TrajHyp ratArith D (stagesOf B Bh r.blocks) x x) :
    D.dist (runSurr (stagesOf B Bh r.blocks) x) (runBase (stagesOf B Bh r.blocks) x)
      ≤ c.toRat := by
  have h1 := band hc
  have hblocks : allBlocksOk r.policy r.blocks = true := h1.1
  have h2 := band h1.2
  have h3 := band h2.2
  have hcv : optValid r.claimedBound = true := h3.1
  have h4 := band h3.2
  have h5 := band h4.2
  have hbound : boundOk (globalBound r.blocks) r.claimedBound = true := h5.1
  have hcd : c.den ≠ 0 := by
    rw [hcl] at hcv
    exact of_decide_eq_true hcv
  cases hgb : globalBound r.blocks with
  | none =>
    rw [hgb] at hL
    exact absurd hL (by decide)
  | some g =>
    rw [hgb, hcl] at hbound
    have hgc : Q.leB g c = true := hbound
    have hA := globalBoundFrom_toRat B Bh r.policy r.blocks ⟨0, 1⟩ g hblocks (by decide) hgb
    have h0 : ratArith.le (D.dist x x) (Q.toRat ⟨0, 1⟩) := by
      show D.dist x x ≤ Q.toRat ⟨0, 1⟩
      rw [D.dist_self x]
      exact Q.toRat_nonneg (q := ⟨0, 1⟩) (by decide)
    have hb := traj_bound_from ratArith D (stagesOf B Bh r.blocks) x x (Q.toRat ⟨0, 1⟩)
      (lipNonneg_of_ok B Bh r.policy r.blocks hblocks) hT h0
    rw [hA.1] at hb
    have hb' : D.dist (runSurr (stagesOf B Bh r.blocks) x) (runBase (stagesOf B Bh r.blocks) x)
        ≤ g.toRat := hb
    exact @Rat.le_trans _ _ _ hb' (Q.leB_toRat (a := g) (b := c) hA.2 hcd hgc)

/-- The same bound for every input, from the uniform hypotheses of Theorem 1. -/
theorem check_sound_uniform (r : Run) (hc : check r = true)
    (hL : (globalBound r.blocks).isSome = true) {c : Q} (hcl : r.claimedBound = some c)
    {X : Type} (D : DistSpace X Rat ratArith) (B Bh : Nat → X → X)
    (hU : UniformHyp ratArith D (stagesOf B Bh r.blocks)) (x : X) :
    D.dist (runSurr (stagesOf B Bh r.blocks) x) (runBase (stagesOf B Bh r.blocks) x)
      ≤ c.toRat :=
  check_sound r hc hL hcl D B Bh x (uniform_traj ratArith D _ x x hU)

/-- A passing run's measured deviation (if any) is at most its claim. -/
theorem check_measured (r : Run) (hc : check r = true) {m c : Q}
    (hm : r.measuredDeviation = some m) (hcl : r.claimedBound = some c) :
    m.toRat ≤ c.toRat := by
  have h1 := band hc
  have h2 := band h1.2
  have h3 := band h2.2
  have hcv : optValid r.claimedBound = true := h3.1
  have h4 := band h3.2
  have hmv : optValid r.measuredDeviation = true := h4.1
  have h5 := band h4.2
  have hmo : measuredOk r.measuredDeviation r.claimedBound = true := h5.2
  rw [hcl] at hcv
  rw [hm] at hmv
  rw [hm, hcl] at hmo
  exact Q.leB_toRat (a := m) (b := c) (of_decide_eq_true hmv) (of_decide_eq_true hcv) hmo

/-! ## The per-prompt bound -/

/-- One prompt's `ε_i` and `L_i` for the run's block at the same position. -/
structure PromptBlock where
  epsilon : Q
  lipschitz : Q
  deriving Repr

/-- One prompt: its constants for every block of the run, in order. -/
structure PromptData where
  blocks : List PromptBlock
  measuredDeviation : Option Q
  deriving Repr

/-- One claim that every prompt's bound must meet (the max over prompts). -/
structure PerPrompt where
  claimedBound : Q
  prompts : List PromptData
  deriving Repr

/-- The run's blocks with one prompt's constants; no coverage (0 tokens, not
certified), which is what `blockOk` demands of a block without coverage. -/
def promptBlocks : List Block → List PromptBlock → List Block
  | b :: bs, q :: qs =>
    { index := b.index, epsilon := q.epsilon, lipschitz := some q.lipschitz,
      actCovered := 0, nTokens := 0, lossCovered := ⟨0, 1⟩, lossTotal := ⟨0, 1⟩,
      certified := false } :: promptBlocks bs qs
  | _, _ => []

def sameLength : List Block → List PromptBlock → Bool
  | [], [] => true
  | _ :: bs, _ :: qs => sameLength bs qs
  | _, _ => false

/-- One prompt as a run of its own, claiming `c`. -/
def promptRun (r : Run) (c : Q) (p : PromptData) : Run :=
  { policy := r.policy, blocks := promptBlocks r.blocks p.blocks, claimedBound := some c,
    measuredDeviation := p.measuredDeviation }

def promptOk (r : Run) (c : Q) (p : PromptData) : Bool :=
  sameLength r.blocks p.blocks && (check (promptRun r c p) &&
    (globalBound (promptBlocks r.blocks p.blocks)).isSome)

def allPromptsOk (r : Run) (c : Q) : List PromptData → Bool
  | [] => true
  | p :: ps => promptOk r c p && allPromptsOk r c ps

def checkPrompts (r : Run) (pp : PerPrompt) : Bool :=
  pp.claimedBound.valid && allPromptsOk r pp.claimedBound pp.prompts

/-- What `lake exe blockcert_check` decides: the run, and its per-prompt part if any. -/
def checkFormal (r : Run) : Option PerPrompt → Bool
  | none => check r
  | some pp => check r && checkPrompts r pp

/-- `p` is one of `ps`. A plain recursive predicate, so that the proofs below need
no lemma about `List.Mem` (whose shape has changed between releases). -/
def Among (p : PromptData) : List PromptData → Prop
  | [] => False
  | q :: qs => p = q ∨ Among p qs

theorem allPromptsOk_among (r : Run) (c : Q) :
    ∀ (ps : List PromptData) (p : PromptData), allPromptsOk r c ps = true → Among p ps →
      promptOk r c p = true := by
  intro ps
  induction ps with
  | nil =>
    intro p _ hp
    have hf : False := hp
    exact hf.elim
  | cons q qs ih =>
    intro p h hp
    have h1 := band h
    have hp' : p = q ∨ Among p qs := hp
    cases hp' with
    | inl e =>
      rw [e]
      exact h1.1
    | inr hr => exact ih p h1.2 hr

/-- Soundness of the per-prompt check: for every prompt `p` of the run and any input
`x` whose traced trajectory satisfies that prompt's hypotheses (its own `ε_i`, `L_i`),
the stitched model is within the one claim `c` of the baseline at `x`. -/
theorem checkPrompts_sound (r : Run) (pp : PerPrompt) (hc : checkPrompts r pp = true)
    {c : Q} (hcl : pp.claimedBound = c) (p : PromptData) (hp : Among p pp.prompts)
    {X : Type} (D : DistSpace X Rat ratArith) (B Bh : Nat → X → X) (x : X)
    (hT : TrajHyp ratArith D (stagesOf B Bh (promptBlocks r.blocks p.blocks)) x x) :
    D.dist (runSurr (stagesOf B Bh (promptBlocks r.blocks p.blocks)) x)
        (runBase (stagesOf B Bh (promptBlocks r.blocks p.blocks)) x) ≤ c.toRat := by
  subst hcl
  have h1 := band hc
  have hp1 := allPromptsOk_among r pp.claimedBound pp.prompts p h1.2 hp
  have h2 := band hp1
  have h3 := band h2.2
  exact check_sound (promptRun r pp.claimedBound p) h3.1 h3.2 (c := pp.claimedBound) rfl D B Bh x hT

end BlockCert
