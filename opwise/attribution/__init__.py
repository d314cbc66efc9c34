"""Attribution: the relevance pass over the Graph (Promise-based), `explain()`, and a Captum-shaped `LRP`."""

from opwise.attribution.explain import Explanation, explain
from opwise.attribution.lrp import LRP

__all__ = ["LRP", "Explanation", "explain", "heatmap"]


def __getattr__(name: str):
    """`heatmap` and `faithfulness` live in their own modules, imported only when asked for."""
    if name in ("heatmap", "faithfulness"):
        import importlib

        module = importlib.import_module(f"opwise.attribution.{name}")
        return getattr(module, name, module)
    raise AttributeError(name)
