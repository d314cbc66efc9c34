"""Verify a classifier's robustness with bounds and branch-and-bound; show a checked counterexample.

Run: python examples/verify_bab.py
"""

import os

import torch

import opwise

FAST = os.environ.get("FAST") == "1"

model = opwise.models.builtin("cnn")  # a trained ReLU CNN on 8x8 digits; use your own nn.Module
images, labels = opwise.models.demo_inputs("cnn", n=1 if FAST else 8)

for eps in (0.01, 0.3) if FAST else (0.02, 0.3):
    for image, label in zip(images, labels):
        x = image[None]
        result = opwise.verify(model, x, eps=eps, target=int(label), bab=True, timeout=10 if FAST else 60)
        line = f"eps {eps}: digit {int(label)} {result.status}"
        if result.status == "verified":
            line += f" (margin lower bound {result.margin_lower:.3f} > 0 on every input of the ball)"
        if result.status == "falsified":
            found = result.counterexample
            predicted = int(model(found).argmax())
            distance = float((found - x).abs().max())
            assert predicted != int(label) and distance <= eps + 1e-6  # checked by a forward pass
            line += f": an input {distance:.3f} away is classified {predicted}"
        print(line)
