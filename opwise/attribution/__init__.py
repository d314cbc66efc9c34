"""Attribution: the relevance pass over the Graph (Promise-based), `explain()`, and a Captum-shaped `LRP`."""

from opwise.attribution.explain import Explanation, explain
from opwise.attribution.lrp import LRP

# Pictures and faithfulness metrics import matplotlib and scipy, so they load only when first asked for.
_LAZY = {
    "heatmap": "heatmap",
    "token_heatmap": "heatmap",
    "plot_abpc": "heatmap",
    "pixel_flipping": "faithfulness",
    "abpc": "faithfulness",
    "randomization_check": "faithfulness",
    "faithfulness": "faithfulness",
}

__all__ = ["LRP", "Explanation", "explain", *(name for name in _LAZY if name != "faithfulness")]


def __getattr__(name: str):
    """`opwise.attribution.plot_abpc` etc. from their own modules, imported on first use.

    >>> import opwise.attribution
    >>> opwise.attribution.plot_abpc.__module__
    'opwise.attribution.heatmap'
    """
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"opwise.attribution.{_LAZY[name]}")
        return getattr(module, name, module)
    raise AttributeError(name)
