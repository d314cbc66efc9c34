"""Verification: bound propagation (IBP, CROWN, α-CROWN), specifications, attacks, branch-and-bound."""
