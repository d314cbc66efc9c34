"""Attribution: the relevance pass over the Graph (Promise-based), `explain()`, and a Captum-shaped `LRP`."""

from opwise.attribution.explain import Explanation, explain
from opwise.attribution.lrp import LRP

# Pictures and faithfulness metrics import matplotlib and scipy, so they load only when first asked for.
# (The pictures live in `pictures.py`, not `heatmap.py`: a submodule named like the function would replace
# the function on this package as soon as it is imported.)
_LAZY = {
    "heatmap": "pictures",
    "token_heatmap": "pictures",
    "feature_bars": "pictures",
    "plot_abpc": "pictures",
    "pixel_flipping": "faithfulness",
    "abpc": "faithfulness",
    "randomization_check": "faithfulness",
    "faithfulness": "faithfulness",
    "pictures": "pictures",
}

__all__ = ["LRP", "Explanation", "explain", *(name for name in _LAZY if name not in ("faithfulness", "pictures"))]


def __getattr__(name: str):
    """`opwise.attribution.plot_abpc` etc. from their own modules, imported on first use.

    >>> import opwise.attribution
    >>> opwise.attribution.plot_abpc.__module__
    'opwise.attribution.pictures'
    >>> from opwise.attribution import heatmap; import opwise.attribution.pictures
    >>> from opwise.attribution import heatmap as again; callable(heatmap) and heatmap is again
    True
    """
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"opwise.attribution.{_LAZY[name]}")
        return getattr(module, name, module)
    raise AttributeError(name)
