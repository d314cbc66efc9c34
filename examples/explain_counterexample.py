"""Find a counterexample with `verify`, then explain it: relevance at x and at the counterexample x', their
difference, and whether the pixels the attack moved are the ones whose relevance changed.

Run: python examples/explain_counterexample.py   (writes counterexample.png)
"""

import os

import opwise
from opwise.combined.pictures import counterexample_figure

FAST = os.environ.get("FAST") == "1"

model = opwise.models.builtin("cnn")  # a trained ReLU CNN on 8x8 digits; use your own nn.Module
images, labels = opwise.models.demo_inputs("cnn", n=1)
x, label = images[:1], int(labels[0])

result = opwise.verify(model, x, eps=0.2, target=label, domain=(0, 1), timeout=10 if FAST else 60)
print(f"eps 0.2: digit {label} {result.status}")
if result.counterexample is not None:  # checked by a forward pass before verify reports it
    c = opwise.explain_counterexample(model, x, result.counterexample, k=5)
    print(f"class {c.true_class} -> {c.adversarial_class}; margin {c.margin_at_x:.3f} at x, {c.margin_at_x_prime:.3f} at x'")
    print(f"pixels whose relevance changed most: {c.top_changed.tolist()}; moved most: {c.top_perturbed.tolist()}; "
          f"overlap {c.overlap:.0%}")
    print(f"conservation (relevance sum, logit) per map: {c.conservation.tolist()}")
    counterexample_figure(c, path="counterexample.png")
