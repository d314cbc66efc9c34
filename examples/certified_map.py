"""Certified-robustness map: per 2x2 patch, the largest L∞ change of that patch alone that provably keeps the
prediction, beside the closest counterexample PGD found and the relevance map.

Run: python examples/certified_map.py   (writes certified_map.png)
"""

import os

import opwise
from opwise.combined.pictures import certified_map_figure

FAST = os.environ.get("FAST") == "1"

model = opwise.models.builtin("cnn")  # a trained ReLU CNN on 8x8 digits; use your own nn.Module
images, _ = opwise.models.demo_inputs("cnn", n=1)
x = images[:1]

m = opwise.certified_map(model, x, patch=2, method="crown", eps_max=1.0, steps=5 if FAST else 8)
print(f"{m.masks.shape[0]} patches, {m.passes} batched bound passes, {m.seconds:.1f} s bounds, {m.attack_seconds:.1f} s PGD")
print(f"certified radius: min {float(m.radius.min()):.3f}, median {float(m.radius.median()):.3f}; "
      f"PGD broke {int(m.attack_radius.isfinite().sum())} patches alone")
relevance = opwise.explain(model, x, target=m.target, composite="epsilon-plus").relevance
print(f"Spearman(|relevance|, certified radius): {m.relevance_correlation(relevance):+.3f}")
certified_map_figure(m, relevance, path="certified_map.png")

if not FAST:  # branch-and-bound goes on where CROWN stopped: radii only grow, and stay below PGD's
    bab = opwise.certified_map(model, x, patch=2, method="bab", eps_max=1.0, steps=6)
    print(f"bab: {int((bab.radius > m.radius).sum())} patches certified further, median {float(bab.radius.median()):.3f}")
