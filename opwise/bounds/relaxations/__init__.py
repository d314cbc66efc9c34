"""Linear relaxations of nonlinear operators, one family per file (see base.py for the contract)."""
