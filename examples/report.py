"""One self-contained HTML page for one prediction: relevance per composite, the verdict at ε with margins,
the certified-robustness map with the PGD radius, and the explanation of a counterexample if one is found.

Run: python examples/report.py   (writes report.html; open it in any browser, no network needed)
"""

import opwise

model = opwise.models.builtin("cnn")  # a trained ReLU CNN on 8x8 digits; use your own nn.Module
images, _ = opwise.models.demo_inputs("cnn", n=1)

page = opwise.report(model, images[:1], "report.html", composites=["epsilon-plus-flat", "epsilon-gamma-box"],
                     eps=0.2, patch=2, eps_max=0.5)
print(f"report.html: {len(page) // 1024} KiB, {page.count('<img ')} pictures inlined")
