/-
BlockCert, Lean side: Theorem 1 (global composition) over an abstract ordered
structure, its `Rat` instance, the exact number type `Q`, the certificate
checker with its soundness theorem, and the JSON reader used by
`lake exe blockcert_check`. Generated per-run modules live in `BlockCert/Runs/`
and are built by `lake build` through the library's glob (see lakefile.lean).
-/
import BlockCert.Composition
import BlockCert.RatInst
import BlockCert.Exact
import BlockCert.Checker
import BlockCert.Json
import BlockCert.Report
