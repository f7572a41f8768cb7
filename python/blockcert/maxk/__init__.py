"""The Max-of-K study (Gross et al. 2024, "Compact Proofs of Model Performance via Mechanistic
Interpretability"): a one-layer attention-only transformer trained to output the max of K tokens, and
accuracy lower bounds for it proven by brute force, by a cubic case analysis and by a subcubic one
with a low-rank EQKE, each recorded as a sealed certificate with its cost and a generated Lean module.

Pure math: model, train, rigor, circuits, brute, cubic, subcubic, cost, lean. I/O: store. Glue: prove.
Checks: verify. Command line: cli (`blockcert maxk ...`).
"""
