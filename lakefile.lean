import Lake
open Lake DSL

-- Lean core only: no `require`, so Lake never has anything to download.
package blockcert

-- `BlockCert` and every module under `BlockCert/`, the generated runs in
-- `BlockCert/Runs/` included: a new run module is checked by a plain `lake build`
-- without being listed anywhere.
@[default_target]
lean_lib BlockCert where
  globs := #[.andSubmodules `BlockCert]

@[default_target]
lean_exe blockcert_check where
  root := `BlockCert.CheckMain
