"""Compare LRP composites by ABPC (pixel flipping: most vs least relevant first) and plot the curves.

Higher ABPC is more faithful: removing the most relevant pixels first should drop the logit fastest.
Run: python examples/compare_composites.py
"""

import os

import torch

import opwise
from opwise.attribution import abpc, plot_abpc

FAST = os.environ.get("FAST") == "1"

model = opwise.models.builtin("cnn")
images, labels = opwise.models.demo_inputs("cnn", n=4 if FAST else 16)
composites = ["epsilon", "epsilon-plus", "epsilon-plus-flat", "epsilon-gamma-box"]
baseline = "mean"

curves = {}
for composite in composites:
    relevance = opwise.explain(model, images, target=labels, composite=composite).relevance
    scores, curves[composite] = abpc(model, images, relevance, labels, steps=4 if FAST else 16, baseline=baseline)
    print(f"{composite:>20}: ABPC {float(scores.mean()):.3f} (higher is more faithful)")

random_relevance = torch.rand(images.shape, generator=torch.Generator().manual_seed(0))
scores, curves["random"] = abpc(model, images, random_relevance, labels, steps=4 if FAST else 16, baseline=baseline)
print(f"{'random':>20}: ABPC {float(scores.mean()):.3f} (the floor)")
plot_abpc(curves, "abpc.png", model="builtin:cnn", baseline=baseline)
print("curves written to abpc.png")
