/-
What `lake exe blockcert_check` prints, and its exit codes.

The verdict and the exit code come from `check` itself (the function the
generated modules prove `= true` about); the per-item messages below only
explain a failure and are not part of anything proved.
-/
import BlockCert.Json

namespace BlockCert

def zeros : Nat → String
  | 0 => ""
  | n + 1 => "0" ++ zeros n

def numDigits (n : Nat) : Nat := (toString n).length

/-- `⌊n / d * 10^k⌋` for an integer `k`. -/
def scaleFloor (n d : Nat) (k : Int) : Nat :=
  if 0 ≤ k then n * 10 ^ k.toNat / d else n / (d * 10 ^ (-k).toNat)

/-- Six significant digits in scientific notation, truncated toward zero; integer
arithmetic only, so huge or tiny exact values print fine. -/
def Q.toSci (q : Q) : String :=
  let sig : Nat := 6
  let n := q.num.natAbs
  let d := q.den
  if d = 0 then "undefined"
  else if n = 0 then "0"
  else
    let sign := if q.num < 0 then "-" else ""
    -- the decimal exponent of n/d is (digits n - digits d) or one less
    let e0 : Int := (numDigits n : Int) - (numDigits d : Int)
    let e : Int := if scaleFloor n d ((sig : Int) - 1 - e0) < 10 ^ (sig - 1) then e0 - 1 else e0
    let m := scaleFloor n d ((sig : Int) - 1 - e)
    let rest := toString (m % 10 ^ (sig - 1))
    sign ++ toString (m / 10 ^ (sig - 1)) ++ "." ++ zeros (sig - 1 - rest.length) ++ rest ++
      "e" ++ toString e

/-- The fraction in lowest terms. -/
def Q.toFrac (q : Q) : String :=
  let g := Nat.gcd q.num.natAbs q.den
  if g = 0 then toString q.num ++ "/" ++ toString q.den
  else
    let sign := if q.num < 0 then "-" else ""
    sign ++ toString (q.num.natAbs / g) ++ "/" ++ toString (q.den / g)

def Q.pretty (q : Q) : String := q.toFrac ++ " (≈ " ++ q.toSci ++ ")"

def optShow : Option Q → String
  | none => "none"
  | some q => q.pretty

def blockLine (p : Policy) (b : Block) : String :=
  let status := if blockOk p b then "ok  " else "FAIL"
  s!"  [{status}] block {b.index}: eps = {b.epsilon.pretty}, L = {optShow b.lipschitz}, " ++
    s!"act = {b.actCovered}/{b.nTokens}, loss = {b.lossCovered.toSci}/{b.lossTotal.toSci}, " ++
    s!"coverage meets policy = {coverageOk p b}, certified = {b.certified}"

def blockProblems (p : Policy) (b : Block) : List String :=
  let pre := s!"block {b.index}: "
  (if b.epsilon.valid then [] else [pre ++ "epsilon has a zero denominator"]) ++
  (if b.epsilon.nonneg then [] else [pre ++ "epsilon is negative"]) ++
  (if lipOk b.lipschitz then [] else
    [pre ++ "the Lipschitz constant is negative or has a zero denominator"]) ++
  (if b.lossCovered.valid && b.lossTotal.valid then [] else
    [pre ++ "a loss value has a zero denominator"]) ++
  (if decide (b.certified = coverageOk p b) then [] else
    [pre ++ s!"certified = {b.certified}, but the coverages against the policy give {coverageOk p b}"])

def claimProblems (r : Run) : List String :=
  if boundOk (globalBound r.blocks) r.claimedBound then [] else
    match r.claimedBound with
    | none => ["claimed_bound is missing although every block has a Lipschitz constant"]
    | some _ => ["claimed_bound is below the computed global bound"]

def measuredProblems (r : Run) : List String :=
  if measuredOk r.measuredDeviation r.claimedBound then [] else
    match r.claimedBound with
    | none => ["measured_deviation is given but claimed_bound is missing"]
    | some _ => ["measured_deviation exceeds claimed_bound"]

def runProblems (r : Run) : List String :=
  (if policyOk r.policy then [] else ["policy: an alpha has a zero denominator"]) ++
  r.blocks.foldr (fun b acc => blockProblems r.policy b ++ acc) [] ++
  (if optValid r.claimedBound then [] else ["claimed_bound has a zero denominator"]) ++
  (if optValid r.measuredDeviation then [] else ["measured_deviation has a zero denominator"]) ++
  claimProblems r ++ measuredProblems r

def promptLine (r : Run) (c : Q) (k : Nat) (p : PromptData) : String :=
  let status := if promptOk r c p then "ok  " else "FAIL"
  let g := match globalBound (promptBlocks r.blocks p.blocks) with
    | some g => g.pretty
    | none => "not computed"
  s!"  [{status}] prompt {k}: bound = {g}, measured = {optShow p.measuredDeviation}"

def promptLines (r : Run) (c : Q) : Nat → List PromptData → List String
  | _, [] => []
  | k, p :: ps => promptLine r c k p :: promptLines r c (k + 1) ps

def promptProblems (r : Run) (c : Q) (k : Nat) (p : PromptData) : List String :=
  let pre := s!"prompt {k}: "
  (if sameLength r.blocks p.blocks then [] else
    [pre ++ s!"{p.blocks.length} block values for the run's {r.blocks.length} blocks"]) ++
  (runProblems (promptRun r c p)).map (fun m => pre ++ m)

def promptProblemsFrom (r : Run) (c : Q) : Nat → List PromptData → List String
  | _, [] => []
  | k, p :: ps => promptProblems r c k p ++ promptProblemsFrom r c (k + 1) ps

def perPromptProblems (r : Run) (pp : PerPrompt) : List String :=
  (if pp.claimedBound.valid then [] else ["per_prompt.claimed_bound has a zero denominator"]) ++
  promptProblemsFrom r pp.claimedBound 0 pp.prompts

def formalProblems (r : Run) : Option PerPrompt → List String
  | none => runProblems r
  | some pp => runProblems r ++ perPromptProblems r pp

def report (name : String) (r : Run) (pp : Option PerPrompt) : IO Unit := do
  IO.println s!"run: {name}"
  IO.println s!"policy: alpha_act = {r.policy.alphaAct.pretty}, alpha_loss = {r.policy.alphaLoss.pretty}"
  for b in r.blocks do
    IO.println (blockLine r.policy b)
  match globalBound r.blocks with
  | some g => IO.println s!"global bound sum_i eps_i * prod_(j>i) L_j = {g.pretty}"
  | none => IO.println "global bound: not computed (a block has no Lipschitz constant)"
  IO.println s!"claimed bound: {optShow r.claimedBound}"
  IO.println s!"measured deviation: {optShow r.measuredDeviation}"
  match pp with
  | none => pure ()
  | some part =>
    IO.println s!"per-prompt claimed bound: {part.claimedBound.pretty}"
    for line in promptLines r part.claimedBound 0 part.prompts do
      IO.println line
  if checkFormal r pp then
    IO.println "verdict: PASS"
  else
    IO.println "verdict: FAIL"
    for msg in formalProblems r pp do
      IO.println s!"  - {msg}"

/-- `PATH` is a run directory (then `PATH/formal_run.json` is read) or a JSON file. -/
def readInput (path : String) : IO (Except String String) := do
  let p : System.FilePath := ⟨path⟩
  let file : System.FilePath :=
    if (← p.isDir) then System.FilePath.join p ⟨"formal_run.json"⟩ else p
  try
    let text ← IO.FS.readFile file
    return .ok text
  catch e =>
    return .error s!"cannot read {file}: {e}"

/-- Exit code 0 iff `check` passes, 1 if it fails, 2 on unreadable or ill-formed
input (with a one-line message on stderr). -/
def cliMain (args : List String) : IO UInt32 := do
  match args with
  | [path] =>
    match (← readInput path) with
    | .error msg =>
      IO.eprintln s!"blockcert_check: {msg}"
      return 2
    | .ok text =>
      match Lean.Json.parse text with
      | .error msg =>
        IO.eprintln s!"blockcert_check: {path}: not valid JSON: {msg}"
        return 2
      | .ok j =>
        match parseFormal j with
        | .error msg =>
          IO.eprintln s!"blockcert_check: {path}: ill-formed formal run: {msg}"
          return 2
        | .ok (r, pp) =>
          report (runName j) r pp
          return (if checkFormal r pp then 0 else 1)
  | _ =>
    IO.eprintln "usage: blockcert_check RUN_DIR | FORMAL_RUN_JSON"
    return 2

end BlockCert
