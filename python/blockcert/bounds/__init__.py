"""Lipschitz bounds for BlockCert blocks (issue 5): see docs/bounds.md for every derivation."""
