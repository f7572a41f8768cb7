import Lake
open Lake DSL

-- Lean core only: nothing to download.
package maxkcert

@[default_target]
lean_lib MaxKCert where
  globs := #[.andSubmodules `MaxKCert]
