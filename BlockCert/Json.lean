/-
Reading `formal_run.json` (format "blockcert.formal/1") into a `Run`, exactly.

Lean's own parser keeps a JSON number as `JsonNumber` (`mantissa : Int`,
`exponent : Nat`, value `mantissa / 10^exponent`), so a decimal such as
0.000001234000000000000001 becomes the fraction it denotes, with no float in
between. Only `Json.parse`, `getObjVal?` and the `Json` constructors are used,
and `Lean` is never opened, to keep clear of its many short names.
-/
import Lean.Data.Json
import BlockCert.Checker

namespace BlockCert

/-- `mantissa / 10^exponent`, exactly. -/
def qOfJsonNumber (n : Lean.JsonNumber) : Q := ⟨n.mantissa, 10 ^ n.exponent⟩

/-- A missing key reads as `null`, as the format says. -/
def jfield (j : Lean.Json) (k : String) : Lean.Json :=
  match j.getObjVal? k with
  | .ok v => v
  | .error _ => Lean.Json.null

def jQ (ctx : String) (j : Lean.Json) : Except String Q :=
  match j with
  | .num n => .ok (qOfJsonNumber n)
  | _ => .error s!"{ctx}: expected a number"

def jOptQ (ctx : String) (j : Lean.Json) : Except String (Option Q) :=
  match j with
  | .null => .ok none
  | .num n => .ok (some (qOfJsonNumber n))
  | _ => .error s!"{ctx}: expected a number or null"

/-- A natural number; `90` and `90.0` are both accepted, `90.5` and `-1` are not. -/
def jNat (ctx : String) (j : Lean.Json) : Except String Nat :=
  match j with
  | .num n =>
    let d : Nat := 10 ^ n.exponent
    if n.mantissa < 0 then .error s!"{ctx}: expected a natural number"
    else if n.mantissa.toNat % d = 0 then .ok (n.mantissa.toNat / d)
    else .error s!"{ctx}: expected a whole number"
  | _ => .error s!"{ctx}: expected a natural number"

def jBool (ctx : String) (j : Lean.Json) : Except String Bool :=
  match j with
  | .bool b => .ok b
  | _ => .error s!"{ctx}: expected true or false"

def jArr (ctx : String) (j : Lean.Json) : Except String (Array Lean.Json) :=
  match j with
  | .arr a => .ok a
  | _ => .error s!"{ctx}: expected an array"

def jIsObj (ctx : String) (j : Lean.Json) : Except String Unit :=
  match j with
  | .obj _ => .ok ()
  | _ => .error s!"{ctx}: expected an object"

def formatTag : String := "blockcert.formal/1"

def jFormat (j : Lean.Json) : Except String Unit :=
  match jfield j "format" with
  | .str s =>
    if s == formatTag then .ok ()
    else .error s!"format: unsupported \"{s}\" (expected \"{formatTag}\")"
  | _ => .error s!"format: missing (expected \"{formatTag}\")"

def parseBlock (ctx : String) (j : Lean.Json) : Except String Block := do
  jIsObj ctx j
  let index ← jNat s!"{ctx}.index" (jfield j "index")
  let epsilon ← jQ s!"{ctx}.epsilon" (jfield j "epsilon")
  let lipschitz ← jOptQ s!"{ctx}.lipschitz" (jfield j "lipschitz")
  let actCovered ← jNat s!"{ctx}.act_covered" (jfield j "act_covered")
  let nTokens ← jNat s!"{ctx}.n_tokens" (jfield j "n_tokens")
  let lossCovered ← jQ s!"{ctx}.loss_covered" (jfield j "loss_covered")
  let lossTotal ← jQ s!"{ctx}.loss_total" (jfield j "loss_total")
  let certified ← jBool s!"{ctx}.certified" (jfield j "certified")
  return { index := index, epsilon := epsilon, lipschitz := lipschitz,
           actCovered := actCovered, nTokens := nTokens, lossCovered := lossCovered,
           lossTotal := lossTotal, certified := certified }

def parseBlocks : Nat → List Lean.Json → Except String (List Block)
  | _, [] => .ok []
  | i, j :: js => do
    let b ← parseBlock s!"blocks[{i}]" j
    let bs ← parseBlocks (i + 1) js
    return b :: bs

def parseRun (j : Lean.Json) : Except String Run := do
  jIsObj "top level" j
  jFormat j
  let pol := jfield j "policy"
  jIsObj "policy" pol
  let alphaAct ← jQ "policy.alpha_act" (jfield pol "alpha_act")
  let alphaLoss ← jQ "policy.alpha_loss" (jfield pol "alpha_loss")
  let blocksJ ← jArr "blocks" (jfield j "blocks")
  let blocks ← parseBlocks 0 blocksJ.toList
  let claimed ← jOptQ "claimed_bound" (jfield j "claimed_bound")
  let measured ← jOptQ "measured_deviation" (jfield j "measured_deviation")
  return { policy := ⟨alphaAct, alphaLoss⟩, blocks := blocks,
           claimedBound := claimed, measuredDeviation := measured }

/-- The run's display name (`"run"`), if any. -/
def runName (j : Lean.Json) : String :=
  match jfield j "run" with
  | .str s => s
  | _ => "(unnamed)"

end BlockCert
