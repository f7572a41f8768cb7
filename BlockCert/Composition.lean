/-
BlockCert: Theorem 1 (global composition), paper section 5 and Appendix A.

Everything here is stated over an abstract carrier `R` whose few order and ring
facts are explicit fields of `OrderedArith`. The proofs therefore use no library
lemma at all, only those fields, `rw` with them, and structural induction on
lists: the part of the development that depends on Lean's library (lemma names
about `Rat`) is confined to `BlockCert/RatInst.lean` and `BlockCert/Exact.lean`.
-/

namespace BlockCert

/-- The arithmetic the composition argument needs, as explicit data and facts.
Only `le_refl`, `le_trans`, `add_le_add`, `mul_le_mul_left` are used by the
inequality; the equations are used only to show that the recursive bound equals
the closed-form sum of products. -/
structure OrderedArith (R : Type) where
  zero : R
  one : R
  add : R → R → R
  mul : R → R → R
  le : R → R → Prop
  le_refl : ∀ a : R, le a a
  le_trans : ∀ a b c : R, le a b → le b c → le a c
  add_le_add : ∀ a b c d : R, le a b → le c d → le (add a c) (add b d)
  mul_le_mul_left : ∀ a b c : R, le zero c → le a b → le (mul c a) (mul c b)
  add_assoc : ∀ a b c : R, add (add a b) c = add a (add b c)
  mul_assoc : ∀ a b c : R, mul (mul a b) c = mul a (mul b c)
  mul_comm : ∀ a b : R, mul a b = mul b a
  add_mul : ∀ a b c : R, mul (add a b) c = add (mul a c) (mul b c)
  mul_one : ∀ a : R, mul a one = a
  add_zero : ∀ a : R, add a zero = a
  zero_mul : ∀ a : R, mul zero a = zero
  zero_add : ∀ a : R, add zero a = a

/-- A distance on `X` with values in `R`: `dist x x = 0` and the triangle
inequality are all the proof uses (no symmetry, no norm, no vector space). -/
structure DistSpace (X R : Type) (A : OrderedArith R) where
  dist : X → X → R
  dist_self : ∀ x : X, dist x x = A.zero
  dist_triangle : ∀ x y z : X, A.le (dist x z) (A.add (dist x y) (dist y z))

/-- One layer: the baseline block `B_i` (`base`), its surrogate `B̂_i` (`surr`),
the local error `ε_i` and the Lipschitz constant `L_i`. -/
structure Stage (X R : Type) where
  base : X → X
  surr : X → X
  eps : R
  lip : R

/-- `F = B_{n-1} ∘ … ∘ B_0`; the list is in layer order, head first. -/
def runBase {X R : Type} : List (Stage X R) → X → X
  | [], x => x
  | s :: ss, x => runBase ss (s.base x)

/-- `F̂ = B̂_{n-1} ∘ … ∘ B̂_0`. -/
def runSurr {X R : Type} : List (Stage X R) → X → X
  | [], x => x
  | s :: ss, x => runSurr ss (s.surr x)

/-- The recursive bound, started from `b`: `b ← L_i * b + ε_i`, layer by layer.
This is the form the checker computes. -/
def boundFrom {X R : Type} (A : OrderedArith R) : List (Stage X R) → R → R
  | [], b => b
  | s :: ss, b => boundFrom A ss (A.add (A.mul s.lip b) s.eps)

/-- `b_0 = 0`, `b_{i+1} = L_i b_i + ε_i`. -/
def bound {X R : Type} (A : OrderedArith R) (ss : List (Stage X R)) : R :=
  boundFrom A ss A.zero

/-- `Π_{j} L_j` over the given layers. -/
def lipProd {X R : Type} (A : OrderedArith R) : List (Stage X R) → R
  | [] => A.one
  | s :: ss => A.mul s.lip (lipProd A ss)

/-- `Σ_i ε_i Π_{j>i} L_j`, the right-hand side of (14). -/
def closedForm {X R : Type} (A : OrderedArith R) : List (Stage X R) → R
  | [] => A.zero
  | s :: ss => A.add (A.mul s.eps (lipProd A ss)) (closedForm A ss)

/-- All `L_i ≥ 0`. -/
def LipNonneg {X R : Type} (A : OrderedArith R) : List (Stage X R) → Prop
  | [] => True
  | s :: ss => A.le A.zero s.lip ∧ LipNonneg A ss

/-- The hypotheses along one traced trajectory, which is what empirical
certificates support: at layer `i` the baseline state is `x` (`= x_i`) and the
stitched state is `xh` (`= x̂_i`); we need the local error at `x_i` and the
Lipschitz inequality of `B̂_i` between `x̂_i` and `x_i` only. -/
def TrajHyp {X R : Type} (A : OrderedArith R) (D : DistSpace X R A) :
    List (Stage X R) → X → X → Prop
  | [], _, _ => True
  | s :: ss, xh, x =>
      A.le (D.dist (s.surr x) (s.base x)) s.eps ∧
      A.le (D.dist (s.surr xh) (s.surr x)) (A.mul s.lip (D.dist xh x)) ∧
      TrajHyp A D ss (s.surr xh) (s.base x)

/-- The uniform hypotheses of Theorem 1: local soundness at every point and
`B̂_i` being `L_i`-Lipschitz. (The paper also asks `B_i` to be Lipschitz; the
argument of Appendix A never uses that, so it is not required here.) -/
def UniformHyp {X R : Type} (A : OrderedArith R) (D : DistSpace X R A) :
    List (Stage X R) → Prop
  | [] => True
  | s :: ss =>
      (∀ y : X, A.le (D.dist (s.surr y) (s.base y)) s.eps) ∧
      (∀ y z : X, A.le (D.dist (s.surr y) (s.surr z)) (A.mul s.lip (D.dist y z))) ∧
      UniformHyp A D ss

/-- The recursion unrolled: `boundFrom ss b = b * Π L + Σ ε_i Π_{j>i} L_j`. -/
theorem boundFrom_eq {X R : Type} (A : OrderedArith R) :
    ∀ (ss : List (Stage X R)) (b : R),
      boundFrom A ss b = A.add (A.mul b (lipProd A ss)) (closedForm A ss) := by
  intro ss
  induction ss with
  | nil =>
    intro b
    show b = A.add (A.mul b A.one) A.zero
    rw [A.mul_one, A.add_zero]
  | cons s ss ih =>
    intro b
    show boundFrom A ss (A.add (A.mul s.lip b) s.eps)
      = A.add (A.mul b (A.mul s.lip (lipProd A ss)))
          (A.add (A.mul s.eps (lipProd A ss)) (closedForm A ss))
    rw [ih (A.add (A.mul s.lip b) s.eps), A.add_mul, A.add_assoc, A.mul_comm s.lip b,
      A.mul_assoc]

/-- The recursive bound `b_0 = 0, b_{i+1} = L_i b_i + ε_i` equals the closed form
`Σ_i ε_i Π_{j>i} L_j`. -/
theorem bound_eq_closedForm {X R : Type} (A : OrderedArith R) (ss : List (Stage X R)) :
    bound A ss = closedForm A ss := by
  show boundFrom A ss A.zero = closedForm A ss
  rw [boundFrom_eq A ss A.zero, A.zero_mul, A.zero_add]

/-- Appendix A, one induction: if the two trajectories start within `b`, they end
within `boundFrom ss b`. Each step is the triangle inequality through `B̂_i x_i`. -/
theorem traj_bound_from {X R : Type} (A : OrderedArith R) (D : DistSpace X R A) :
    ∀ (ss : List (Stage X R)) (xh x : X) (b : R),
      LipNonneg A ss → TrajHyp A D ss xh x → A.le (D.dist xh x) b →
      A.le (D.dist (runSurr ss xh) (runBase ss x)) (boundFrom A ss b) := by
  intro ss
  induction ss with
  | nil =>
    intro xh x b _ _ hb
    exact hb
  | cons s ss ih =>
    intro xh x b hL hT hb
    have hL' : A.le A.zero s.lip ∧ LipNonneg A ss := hL
    have hT' : A.le (D.dist (s.surr x) (s.base x)) s.eps ∧
        A.le (D.dist (s.surr xh) (s.surr x)) (A.mul s.lip (D.dist xh x)) ∧
        TrajHyp A D ss (s.surr xh) (s.base x) := hT
    -- d(B̂ x̂, B x) ≤ d(B̂ x̂, B̂ x) + d(B̂ x, B x) ≤ L * d(x̂, x) + ε ≤ L * b + ε
    have step : A.le (D.dist (s.surr xh) (s.base x)) (A.add (A.mul s.lip b) s.eps) :=
      A.le_trans _ _ _
        (D.dist_triangle (s.surr xh) (s.surr x) (s.base x))
        (A.add_le_add _ _ _ _
          (A.le_trans _ _ _ hT'.2.1 (A.mul_le_mul_left _ _ _ hL'.1 hb))
          hT'.1)
    exact ih (s.surr xh) (s.base x) (A.add (A.mul s.lip b) s.eps) hL'.2 hT'.2.2 step

/-- Pointwise (trajectory) form of Theorem 1: for one input `x`, the hypotheses
along its traced trajectory give `d(F̂ x, F x) ≤ Σ_i ε_i Π_{j>i} L_j`. -/
theorem traj_bound {X R : Type} (A : OrderedArith R) (D : DistSpace X R A)
    (ss : List (Stage X R)) (x : X) (hL : LipNonneg A ss) (hT : TrajHyp A D ss x x) :
    A.le (D.dist (runSurr ss x) (runBase ss x)) (closedForm A ss) := by
  have h0 : A.le (D.dist x x) A.zero := by
    rw [D.dist_self x]
    exact A.le_refl A.zero
  have h := traj_bound_from A D ss x x A.zero hL hT h0
  rw [boundFrom_eq A ss A.zero, A.zero_mul, A.zero_add] at h
  exact h

/-- The uniform hypotheses imply the trajectory hypotheses for every pair of
starting points. -/
theorem uniform_traj {X R : Type} (A : OrderedArith R) (D : DistSpace X R A) :
    ∀ (ss : List (Stage X R)) (xh x : X), UniformHyp A D ss → TrajHyp A D ss xh x := by
  intro ss
  induction ss with
  | nil =>
    intro _ _ _
    exact True.intro
  | cons s ss ih =>
    intro xh x hU
    have hU' : (∀ y : X, A.le (D.dist (s.surr y) (s.base y)) s.eps) ∧
        (∀ y z : X, A.le (D.dist (s.surr y) (s.surr z)) (A.mul s.lip (D.dist y z))) ∧
        UniformHyp A D ss := hU
    exact ⟨hU'.1 x, hU'.2.1 xh x, ih (s.surr xh) (s.base x) hU'.2.2⟩

/-- Theorem 1 (Global Composition): local soundness `ε_i` everywhere and
`L_i`-Lipschitz surrogates with `L_i ≥ 0` give, for every `x`,
`d(F̂ x, F x) ≤ Σ_i ε_i Π_{j>i} L_j`. -/
theorem composition {X R : Type} (A : OrderedArith R) (D : DistSpace X R A)
    (ss : List (Stage X R)) (hL : LipNonneg A ss) (hU : UniformHyp A D ss) (x : X) :
    A.le (D.dist (runSurr ss x) (runBase ss x)) (closedForm A ss) :=
  traj_bound A D ss x hL (uniform_traj A D ss x x hU)

end BlockCert
