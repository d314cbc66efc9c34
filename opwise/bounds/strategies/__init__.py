"""Strategies that use the bound engine through its interface: α-CROWN (alpha.py, alpha_chain.py), β split
constraints (beta.py), input splitting (input_split.py, low_dimensional.py, the affine–ReLU chain fast path
relu_chain.py) and branch-and-bound on general nonlinearities (genbab/)."""
