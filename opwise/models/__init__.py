"""Built-in demo models trained on scikit-learn's digits: a ReLU CNN, a sigmoid/tanh MLP, a tiny transformer.

`builtin(name)` gives a trained model in eval mode, `demo_inputs(name, n)` bundled held-out digits.
The weights come from `scripts/train_demo_models.py`.
"""

from opwise.models.registry import NAMES, architecture, builtin, demo_inputs, metadata

__all__ = ["NAMES", "architecture", "builtin", "demo_inputs", "metadata"]
