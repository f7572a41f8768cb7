/-
The abstract composition theorem instantiated for Lean core's `Rat`.

This is the only file (with `Exact.lean`) that names library lemmas. Each name
used below was looked up in `src/Init/Data/Rat/Lemmas.lean` of leanprover/lean4;
`@`-applications are used so that the proofs do not depend on whether the
`Rat` order lemmas take their arguments implicitly or explicitly.
-/
import Init.Data.Rat
import BlockCert.Composition

namespace BlockCert

/- `Rat.add_le_add_right` / `Rat.add_le_add_left` have been an iff
(`a + c ≤ b + c ↔ a ≤ b`) and may be an implication in another release, with the
added term explicit or implicit; nobody here can compile against v4.35, so each
step tries every plausible form, and the last resort avoids both lemmas: it goes
through `0 ≤ (b + c) - (a + c)`, using only lemmas `rat_mul_le_mul_left` below
relies on as well. -/
theorem rat_add_le_add_right {a b c : Rat} (h : a ≤ b) : a + c ≤ b + c := by
  first
  | exact (@Rat.add_le_add_right a b c).mpr h
  | exact (Rat.add_le_add_right (a := a) (b := b) (c := c)).mpr h
  | exact Rat.add_le_add_right h c
  | exact Rat.add_le_add_right h
  | exact Rat.add_le_add_right (c := c) h
  | (apply (Rat.le_iff_sub_nonneg (a + c) (b + c)).mpr
     have e : b + c - (a + c) = b - a := by
       rw [Rat.sub_eq_add_neg, Rat.sub_eq_add_neg, Rat.neg_add, Rat.add_assoc, Rat.add_comm c,
         Rat.add_assoc, Rat.neg_add_cancel, Rat.add_zero]
     rw [e]
     exact (Rat.le_iff_sub_nonneg a b).mp h)

theorem rat_add_le_add_left {a b c : Rat} (h : a ≤ b) : c + a ≤ c + b := by
  first
  | exact (@Rat.add_le_add_left a b c).mpr h
  | exact (Rat.add_le_add_left (a := a) (b := b) (c := c)).mpr h
  | exact Rat.add_le_add_left h c
  | exact Rat.add_le_add_left h
  | exact Rat.add_le_add_left (c := c) h
  | (rw [Rat.add_comm c a, Rat.add_comm c b]
     exact rat_add_le_add_right h)

theorem rat_add_le_add {a b c d : Rat} (h1 : a ≤ b) (h2 : c ≤ d) : a + c ≤ b + d :=
  @Rat.le_trans (a + c) (b + c) (b + d) (rat_add_le_add_right h1) (rat_add_le_add_left h2)

-- Core has no `mul_le_mul_of_nonneg_left` for `Rat`; go through `0 ≤ c * (b - a)`.
theorem rat_mul_le_mul_left {a b c : Rat} (hc : 0 ≤ c) (h : a ≤ b) : c * a ≤ c * b := by
  have hs : 0 ≤ b - a := (Rat.le_iff_sub_nonneg a b).mp h
  have e : c * b - c * a = c * (b - a) := by
    rw [Rat.sub_eq_add_neg, Rat.sub_eq_add_neg, Rat.mul_add, Rat.mul_neg]
  apply (Rat.le_iff_sub_nonneg (c * a) (c * b)).mpr
  rw [e]
  exact @Rat.mul_nonneg c (b - a) hc hs

/-- `Rat` with its usual `0, 1, +, *, ≤`. Operations are the core ones, so
`ratArith.add a b` unfolds to `a + b` and statements transfer by `rfl`. -/
def ratArith : OrderedArith Rat where
  zero := 0
  one := 1
  add := fun a b => a + b
  mul := fun a b => a * b
  le := fun a b => a ≤ b
  le_refl := fun a => @Rat.le_refl a
  le_trans := fun a b c h1 h2 => @Rat.le_trans a b c h1 h2
  add_le_add := fun _ _ _ _ h1 h2 => rat_add_le_add h1 h2
  mul_le_mul_left := fun _ _ _ hc h => rat_mul_le_mul_left hc h
  add_assoc := Rat.add_assoc
  mul_assoc := Rat.mul_assoc
  mul_comm := Rat.mul_comm
  add_mul := Rat.add_mul
  mul_one := Rat.mul_one
  add_zero := Rat.add_zero
  zero_mul := Rat.zero_mul
  zero_add := Rat.zero_add

/-- Theorem 1, trajectory form, over `Rat`. -/
theorem rat_traj_bound {X : Type} (D : DistSpace X Rat ratArith) (ss : List (Stage X Rat))
    (x : X) (hL : LipNonneg ratArith ss) (hT : TrajHyp ratArith D ss x x) :
    D.dist (runSurr ss x) (runBase ss x) ≤ closedForm ratArith ss :=
  traj_bound ratArith D ss x hL hT

/-- Theorem 1, uniform form, over `Rat`. -/
theorem rat_composition {X : Type} (D : DistSpace X Rat ratArith) (ss : List (Stage X Rat))
    (hL : LipNonneg ratArith ss) (hU : UniformHyp ratArith D ss) (x : X) :
    D.dist (runSurr ss x) (runBase ss x) ≤ closedForm ratArith ss :=
  composition ratArith D ss hL hU x

/-- Over `Rat`, the recursive bound equals `Σ_i ε_i Π_{j>i} L_j`. -/
theorem rat_bound_eq_closedForm {X : Type} (ss : List (Stage X Rat)) :
    boundFrom ratArith ss 0 = closedForm ratArith ss :=
  bound_eq_closedForm ratArith ss

end BlockCert
