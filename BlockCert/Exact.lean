/-
Exact numbers for the checker.

`Q` is a fraction `num / den` that is never normalised. Its `add`, `mul` and
comparison are plain `Int`/`Nat` arithmetic, which the kernel evaluates with
GMP, so `check run = true` can be proved by evaluation. Core `Rat` is not used
for evaluation: `Rat.add`/`Rat.mul` are `@[irreducible]` and normalise by gcd.
`Q.toRat` and the lemmas below carry the checker's result over to `Rat`.
-/
import Init.Data.Rat

namespace BlockCert

/-- `num / den`; meaningful when `den ≠ 0`, which `check` verifies. -/
structure Q where
  num : Int
  den : Nat
  deriving Repr

namespace Q

def valid (a : Q) : Bool := decide (a.den ≠ 0)

def nonneg (a : Q) : Bool := decide (0 ≤ a.num)

/-- No gcd: the kernel only multiplies. -/
def add (a b : Q) : Q := ⟨a.num * b.den + b.num * a.den, a.den * b.den⟩

def mul (a b : Q) : Q := ⟨a.num * b.num, a.den * b.den⟩

/-- `a ≤ b` by cross-multiplication (correct when both denominators are positive). -/
def leB (a b : Q) : Bool := decide (a.num * b.den ≤ b.num * a.den)

def toRat (a : Q) : Rat := mkRat a.num a.den

/-- `0 ≤ (n : Int)`. Stated for a plain `n` so that callers never ask `omega` about
`0 ≤ ↑(a * b)` (a cast of a product, which `omega` may or may not see through);
the alternatives cover the lemma's names across releases. -/
theorem den_nonneg (n : Nat) : 0 ≤ (n : Int) := by
  first
  | exact Int.ofNat_zero_le n
  | exact Int.natCast_nonneg n
  | exact Int.ofNat_nonneg n
  | omega

theorem toRat_add (a b : Q) (ha : a.den ≠ 0) (hb : b.den ≠ 0) :
    (Q.add a b).toRat = a.toRat + b.toRat :=
  (Rat.mkRat_add_mkRat a.num b.num ha hb).symm

theorem toRat_mul (a b : Q) : (Q.mul a b).toRat = a.toRat * b.toRat :=
  (Rat.mkRat_mul_mkRat a.num b.num a.den b.den).symm

theorem toRat_nonneg {q : Q} (h : 0 ≤ q.num) : 0 ≤ q.toRat := by
  show 0 ≤ mkRat q.num q.den
  rw [← Rat.divInt_ofNat]
  apply Rat.divInt_nonneg
  · exact h
  · first
    | exact den_nonneg _
    | omega

/-- Cross-multiplication decides `≤` of the fractions. Via `0 ≤ b - a`, written as
one `mkRat` whose numerator is `b.num * a.den - a.num * b.den`. -/
theorem toRat_le {a b : Q} (ha : a.den ≠ 0) (hb : b.den ≠ 0)
    (h : a.num * (b.den : Int) ≤ b.num * (a.den : Int)) : a.toRat ≤ b.toRat := by
  show mkRat a.num a.den ≤ mkRat b.num b.den
  rw [Rat.le_iff_sub_nonneg, Rat.sub_eq_add_neg, Rat.neg_mkRat,
    Rat.mkRat_add_mkRat _ _ hb ha, ← Rat.divInt_ofNat]
  apply Rat.divInt_nonneg
  · rw [Int.neg_mul]
    -- linear in the two products, which `omega` takes as atoms; the fallback avoids it
    first
    | omega
    | (have hs := Int.sub_nonneg_of_le h
       rw [Int.sub_eq_add_neg] at hs
       exact hs)
  · first
    | exact den_nonneg _
    | omega

theorem leB_toRat {a b : Q} (ha : a.den ≠ 0) (hb : b.den ≠ 0) (h : Q.leB a b = true) :
    a.toRat ≤ b.toRat :=
  toRat_le ha hb (of_decide_eq_true h)

end Q

/-- Splitting a checked conjunction. Proved by cases so that it does not depend
on the name or shape of core's `Bool.and_eq_true`. -/
theorem band {a b : Bool} (h : (a && b) = true) : a = true ∧ b = true := by
  cases a <;> cases b <;> first | exact ⟨rfl, rfl⟩ | exact absurd h (by decide)

end BlockCert
