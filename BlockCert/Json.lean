/-
Reading `formal_run.json` (format "blockcert.formal/2", or "/1" without the
per-prompt part) into a `Run` and its optional `PerPrompt`, exactly.

Lean's own parser keeps a JSON number as `JsonNumber` (`mantissa : Int`,
`exponent : Nat`, value `mantissa / 10^exponent`), so a decimal such as
0.000001234000000000000001 becomes the fraction it denotes, with no float in
between. Only `Json.parse`, `getObjVal?` and the `Json` constructors are used,
and `Lean` is never opened, to keep clear of its many short names.

Bounded work, as the Python reader (`store/formal_json.py`): a number whose
mantissa has more than `maxDigits` decimal digits, or more than `maxDigits` digits
after the point, is refused (`1e100000` would make every later product a
100,000-digit integer); an array of blocks or prompts holds at most `maxItems`.
-/
import Lean.Data.Json
import BlockCert.Checker

namespace BlockCert

/-- `mantissa / 10^exponent`, exactly. -/
def qOfJsonNumber (n : Lean.JsonNumber) : Q := ⟨n.mantissa, 10 ^ n.exponent⟩

def maxDigits : Nat := 1100
def maxItems : Nat := 4096

/-- `|mantissa| < 10^maxDigits` is "at most `maxDigits` digits" (the Python reader counts
the digits of the same integer); `exponent` is the number of digits after the point. -/
def jNum (ctx : String) (n : Lean.JsonNumber) : Except String Lean.JsonNumber :=
  if n.mantissa.natAbs < 10 ^ maxDigits ∧ n.exponent ≤ maxDigits then .ok n
  else .error s!"{ctx}: number too large (limit {maxDigits} digits)"

/-- A missing key reads as `null`, as the format says. -/
def jfield (j : Lean.Json) (k : String) : Lean.Json :=
  match j.getObjVal? k with
  | .ok v => v
  | .error _ => Lean.Json.null

def jQ (ctx : String) (j : Lean.Json) : Except String Q :=
  match j with
  | .num n => do
    let m ← jNum ctx n
    return qOfJsonNumber m
  | _ => .error s!"{ctx}: expected a number"

def jOptQ (ctx : String) (j : Lean.Json) : Except String (Option Q) :=
  match j with
  | .null => .ok none
  | .num n => do
    let m ← jNum ctx n
    return some (qOfJsonNumber m)
  | _ => .error s!"{ctx}: expected a number or null"

/-- A natural number; `90` and `90.0` are both accepted, `90.5` and `-1` are not. -/
def jNat (ctx : String) (j : Lean.Json) : Except String Nat :=
  match j with
  | .num n =>
    let d : Nat := 10 ^ n.exponent
    if n.mantissa < 0 then .error s!"{ctx}: expected a natural number"
    else if ¬(n.mantissa.natAbs < 10 ^ maxDigits ∧ n.exponent ≤ maxDigits) then
      .error s!"{ctx}: number too large (limit {maxDigits} digits)"
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

/-- An array of at most `maxItems` entries (`what`: "blocks" or "prompts"). -/
def jItems (ctx what : String) (j : Lean.Json) : Except String (List Lean.Json) := do
  let a ← jArr ctx j
  if a.size > maxItems then throw s!"{ctx}: more than {maxItems} {what}"
  return a.toList

def jIsObj (ctx : String) (j : Lean.Json) : Except String Unit :=
  match j with
  | .obj _ => .ok ()
  | _ => .error s!"{ctx}: expected an object"

def formatTag : String := "blockcert.formal/2"
def formatTagV1 : String := "blockcert.formal/1"

/-- `true` for format /2 (which may carry `per_prompt`), `false` for /1. -/
def jFormat (j : Lean.Json) : Except String Bool :=
  match jfield j "format" with
  | .str s =>
    if s == formatTag then .ok true
    else if s == formatTagV1 then .ok false
    else .error s!"format: unsupported \"{s}\" (expected \"{formatTag}\" or \"{formatTagV1}\")"
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

def parsePromptBlock (ctx : String) (j : Lean.Json) : Except String PromptBlock := do
  jIsObj ctx j
  let epsilon ← jQ s!"{ctx}.epsilon" (jfield j "epsilon")
  let lipschitz ← jQ s!"{ctx}.lipschitz" (jfield j "lipschitz")
  return { epsilon := epsilon, lipschitz := lipschitz }

def parsePromptBlocks (ctx : String) : Nat → List Lean.Json → Except String (List PromptBlock)
  | _, [] => .ok []
  | i, j :: js => do
    let b ← parsePromptBlock s!"{ctx}[{i}]" j
    let bs ← parsePromptBlocks ctx (i + 1) js
    return b :: bs

def parsePrompt (ctx : String) (j : Lean.Json) : Except String PromptData := do
  jIsObj ctx j
  let blocksJ ← jItems s!"{ctx}.blocks" "blocks" (jfield j "blocks")
  let blocks ← parsePromptBlocks s!"{ctx}.blocks" 0 blocksJ
  let measured ← jOptQ s!"{ctx}.measured_deviation" (jfield j "measured_deviation")
  return { blocks := blocks, measuredDeviation := measured }

def parsePrompts : Nat → List Lean.Json → Except String (List PromptData)
  | _, [] => .ok []
  | i, j :: js => do
    let p ← parsePrompt s!"per_prompt.prompts[{i}]" j
    let ps ← parsePrompts (i + 1) js
    return p :: ps

/-- `per_prompt`: `null` (or missing) is none. -/
def parsePerPrompt (j : Lean.Json) : Except String (Option PerPrompt) :=
  match jfield j "per_prompt" with
  | .null => .ok none
  | pj => do
    jIsObj "per_prompt" pj
    let claimed ← jQ "per_prompt.claimed_bound" (jfield pj "claimed_bound")
    let promptsJ ← jItems "per_prompt.prompts" "prompts" (jfield pj "prompts")
    let prompts ← parsePrompts 0 promptsJ
    return some { claimedBound := claimed, prompts := prompts }

/-- The run and its per-prompt part (always none for format /1, whose `per_prompt`
key, if any, is ignored like every key outside the contract). -/
def parseFormal (j : Lean.Json) : Except String (Run × Option PerPrompt) := do
  jIsObj "top level" j
  let v2 ← jFormat j
  let pol := jfield j "policy"
  jIsObj "policy" pol
  let alphaAct ← jQ "policy.alpha_act" (jfield pol "alpha_act")
  let alphaLoss ← jQ "policy.alpha_loss" (jfield pol "alpha_loss")
  let blocksJ ← jItems "blocks" "blocks" (jfield j "blocks")
  let blocks ← parseBlocks 0 blocksJ
  let claimed ← jOptQ "claimed_bound" (jfield j "claimed_bound")
  let measured ← jOptQ "measured_deviation" (jfield j "measured_deviation")
  let pp ← if v2 then parsePerPrompt j else pure none
  return ({ policy := ⟨alphaAct, alphaLoss⟩, blocks := blocks,
            claimedBound := claimed, measuredDeviation := measured }, pp)

def parseRun (j : Lean.Json) : Except String Run := do
  let rp ← parseFormal j
  return rp.1

/-- The run's display name (`"run"`), if any. -/
def runName (j : Lean.Json) : String :=
  match jfield j "run" with
  | .str s => s
  | _ => "(unnamed)"

end BlockCert
