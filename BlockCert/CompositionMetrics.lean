/-
BlockCert: Theorem 1 with one distance per layer (issue 18, the `metric` kind).

The composition argument never needs the same distance on every layer: if layer `i`
maps inputs measured in `d_i` to outputs measured in `d_{i+1}`, with
`d_{i+1}(B̂_i x̂, B̂_i x) ≤ L_i · d_i(x̂, x)` and `d_{i+1}(B̂_i x, B_i x) ≤ ε_i`
(`ε_i` measured in `d_{i+1}`), then the final distance of the two trajectories is at
most the same recursion `b ← L_i * b + ε_i` from `b = 0`. Only the last distance has
to be the one the user reads.

Here each stage carries its output distance `dOut`; the input distance of the first
stage is an explicit argument. Like `BlockCert/Composition.lean`, everything uses
only the fields of `OrderedArith` and `DistSpace` and structural induction on
lists: no library lemma. The Python mirror is `blockcert.core.exact.prefix_bounds`
applied per prompt to bound.json's `epsilon_metric_per_prompt` and the metric
constants' `per_prompt` values (`records/bound_claims.py`, `prompt_prefixes`).
This file has not been compiled here (no Lean toolchain on these machines).
-/
import BlockCert.Composition

namespace BlockCert

/-- One layer with its own output distance `dOut` (`= d_{i+1}`). -/
structure MStage (X R : Type) (A : OrderedArith R) where
  base : X → X
  surr : X → X
  eps : R
  lip : R
  dOut : DistSpace X R A

/-- `F = B_{n-1} ∘ … ∘ B_0`. -/
def mrunBase {X R : Type} {A : OrderedArith R} : List (MStage X R A) → X → X
  | [], x => x
  | s :: ss, x => mrunBase ss (s.base x)

/-- `F̂ = B̂_{n-1} ∘ … ∘ B̂_0`. -/
def mrunSurr {X R : Type} {A : OrderedArith R} : List (MStage X R A) → X → X
  | [], x => x
  | s :: ss, x => mrunSurr ss (s.surr x)

/-- The recursion `b ← L_i * b + ε_i`: the same numbers as `boundFrom`. -/
def mboundFrom {X R : Type} (A : OrderedArith R) : List (MStage X R A) → R → R
  | [], b => b
  | s :: ss, b => mboundFrom A ss (A.add (A.mul s.lip b) s.eps)

/-- The distance the final states are measured in: the last stage's `dOut`
(the input distance `d0` when there is no stage). -/
def lastDist {X R : Type} {A : OrderedArith R} : DistSpace X R A → List (MStage X R A) → DistSpace X R A
  | d0, [] => d0
  | _, s :: ss => lastDist s.dOut ss

/-- All `L_i ≥ 0`. -/
def MLipNonneg {X R : Type} (A : OrderedArith R) : List (MStage X R A) → Prop
  | [] => True
  | s :: ss => A.le A.zero s.lip ∧ MLipNonneg A ss

/-- The hypotheses along one trajectory, with the input distance `dIn` of the
current layer: local error in the layer's output distance, and the step from the
input distance to the output distance. -/
def MTrajHyp {X R : Type} (A : OrderedArith R) :
    DistSpace X R A → List (MStage X R A) → X → X → Prop
  | _, [], _, _ => True
  | dIn, s :: ss, xh, x =>
      A.le (s.dOut.dist (s.surr x) (s.base x)) s.eps ∧
      A.le (s.dOut.dist (s.surr xh) (s.surr x)) (A.mul s.lip (dIn.dist xh x)) ∧
      MTrajHyp A s.dOut ss (s.surr xh) (s.base x)

/-- One induction, as `traj_bound_from`: if the trajectories start within `b` in
`dIn`, they end within `mboundFrom ss b` in the last distance. -/
theorem mtraj_bound_from {X R : Type} (A : OrderedArith R) :
    ∀ (ss : List (MStage X R A)) (dIn : DistSpace X R A) (xh x : X) (b : R),
      MLipNonneg A ss → MTrajHyp A dIn ss xh x → A.le (dIn.dist xh x) b →
      A.le ((lastDist dIn ss).dist (mrunSurr ss xh) (mrunBase ss x)) (mboundFrom A ss b) := by
  intro ss
  induction ss with
  | nil =>
    intro dIn xh x b _ _ hb
    exact hb
  | cons s ss ih =>
    intro dIn xh x b hL hT hb
    have hL' : A.le A.zero s.lip ∧ MLipNonneg A ss := hL
    have hT' : A.le (s.dOut.dist (s.surr x) (s.base x)) s.eps ∧
        A.le (s.dOut.dist (s.surr xh) (s.surr x)) (A.mul s.lip (dIn.dist xh x)) ∧
        MTrajHyp A s.dOut ss (s.surr xh) (s.base x) := hT
    -- d'(B̂ x̂, B x) ≤ d'(B̂ x̂, B̂ x) + d'(B̂ x, B x) ≤ L * d(x̂, x) + ε ≤ L * b + ε
    have step : A.le (s.dOut.dist (s.surr xh) (s.base x)) (A.add (A.mul s.lip b) s.eps) :=
      A.le_trans _ _ _
        (s.dOut.dist_triangle (s.surr xh) (s.surr x) (s.base x))
        (A.add_le_add _ _ _ _
          (A.le_trans _ _ _ hT'.2.1 (A.mul_le_mul_left _ _ _ hL'.1 hb))
          hT'.1)
    exact ih s.dOut (s.surr xh) (s.base x) (A.add (A.mul s.lip b) s.eps) hL'.2 hT'.2.2 step

/-- Theorem 1 with per-layer distances, for one input `x` (both trajectories start
at `x`): `d_L(F̂ x, F x) ≤ mboundFrom ss 0`. -/
theorem mtraj_bound {X R : Type} (A : OrderedArith R) (d0 : DistSpace X R A)
    (ss : List (MStage X R A)) (x : X) (hL : MLipNonneg A ss) (hT : MTrajHyp A d0 ss x x) :
    A.le ((lastDist d0 ss).dist (mrunSurr ss x) (mrunBase ss x)) (mboundFrom A ss A.zero) := by
  have h0 : A.le (d0.dist x x) A.zero := by
    rw [d0.dist_self x]
    exact A.le_refl A.zero
  exact mtraj_bound_from A ss d0 x x A.zero hL hT h0

/-- With every distance the same, the stages are the one-distance stages of
`Composition.lean`, and the recursion is the same: `mboundFrom` forgets nothing. -/
def MStage.toStage {X R : Type} {A : OrderedArith R} (s : MStage X R A) : Stage X R :=
  { base := s.base, surr := s.surr, eps := s.eps, lip := s.lip }

theorem mboundFrom_eq_boundFrom {X R : Type} (A : OrderedArith R) :
    ∀ (ss : List (MStage X R A)) (b : R),
      mboundFrom A ss b = boundFrom A (ss.map MStage.toStage) b := by
  intro ss
  induction ss with
  | nil =>
    intro b
    rfl
  | cons s ss ih =>
    intro b
    exact ih (A.add (A.mul s.lip b) s.eps)

end BlockCert
