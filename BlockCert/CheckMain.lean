/-
Root of `lake exe blockcert_check PATH`: PATH is a run directory (its
`formal_run.json` is read) or a `formal_run.json` file. Exit code 0 iff the
checker passes, 1 if it fails, 2 on unreadable or ill-formed input.
-/
import BlockCert.Report

def main (args : List String) : IO UInt32 :=
  BlockCert.cliMain args
