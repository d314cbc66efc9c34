"""Faithfulness of explanations on the built-in digits models: ABPC and the model-randomization check.

For the built-in digits CNN and digits transformer, on held-out digits the models were not trained on
(the test half of `opwise.models.digits.load_split`), every method explains the per-sample predicted
(or true) logit; `opwise.attribution.abpc` then replaces pixel patches in steps, most relevant first
(MoRF) and least relevant first (LeRF), with a mean and a blur baseline, and scores
ABPC = AUPC(LeRF) - AUPC(MoRF) (see opwise/attribution/faithfulness.py). Methods: every opwise composite
that applies to the model, Zennit with the same composite and canonizer (CNN only: Zennit has no rules
for the transformer's attention matmuls and softmax), gradient x input, and random relevance. The
randomization check (Adebayo et al. 2018) is the per-sample Spearman correlation between the relevance
of the trained model and of a weight-randomized copy: near zero means the explanation depends on the
weights. Curves are plotted with `opwise.attribution.plot_abpc`, one PNG per model and baseline.

    python -m benchmarks.faithfulness [--n 359] [--steps 16] [--patch 1] [--target predicted] [--out faithfulness]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

import opwise
from opwise.attribution import plot_abpc
from opwise.attribution.faithfulness import abpc, randomization_check
from opwise.models.digits import load_split

Explainer = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

CNN_COMPOSITES = ("epsilon", "epsilon-plus", "epsilon-plus-flat", "epsilon-gamma-box", "epsilon-alpha2-beta1")
TRANSFORMER_COMPOSITES = ("attn-lrp", "cp-lrp", "epsilon")
BASELINES = ("mean", "blur")
# Digits pixels lie in [0, 1]: the bounds the z-box rule (EpsilonGammaBox's first layer) needs.
PIXEL_LOW, PIXEL_HIGH = 0.0, 1.0
ZENNIT_NOTE = "Zennit: CNN only (it has no rules for the transformer's attention matmul and softmax)"


def held_out_digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` digits of the held-out split the built-in models were not trained on."""
    split = load_split()
    if not 1 <= n <= len(split.test_labels):
        raise SystemExit(f"--n must be in 1..{len(split.test_labels)} (the held-out split's size), got {n}")
    return split.test_images[:n], split.test_labels[:n]


def opwise_explainer(composite: str) -> Explainer:
    """opwise LRP under a named composite (z-box bounds set to the digits' pixel range)."""
    options = {"low": PIXEL_LOW, "high": PIXEL_HIGH} if composite == "epsilon-gamma-box" else {}

    def explain(model, x, target):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # biases absorb relevance: the conservation warning is expected
            return opwise.explain(model, x, target=target, composite=composite, **options).relevance

    return explain


def zennit_explainer(composite: str) -> Explainer:
    """Zennit's composite of the same name, with batch norm merged into the convolution as opwise does."""
    from tests.attribution.zennit_setup import import_zennit

    import_zennit()
    from zennit import composites, rules, types
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm

    def build():
        canonizers = [SequentialMergeBatchNorm()]
        if composite == "epsilon":
            layer_map = composites.layer_map_base() + [(types.Convolution, rules.Epsilon()), (torch.nn.Linear, rules.Epsilon())]
            return composites.LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
        if composite == "epsilon-gamma-box":
            return composites.EpsilonGammaBox(low=PIXEL_LOW, high=PIXEL_HIGH, canonizers=canonizers)
        named = {"epsilon-plus": composites.EpsilonPlus, "epsilon-plus-flat": composites.EpsilonPlusFlat,
                 "epsilon-alpha2-beta1": composites.EpsilonAlpha2Beta1}
        return named[composite](canonizers=canonizers)

    def explain(model, x, target):
        one_hot = torch.nn.functional.one_hot(target, 10).to(x.dtype)
        with Gradient(model=model, composite=build()) as attributor:
            _, relevance = attributor(x, lambda output: one_hot * output)
        return relevance.detach()

    return explain


def gradient_x_input(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The gradient of the target logit times the input.

    >>> model = torch.nn.Linear(3, 2, bias=False)
    >>> with torch.no_grad(): _ = model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    >>> gradient_x_input(model, torch.ones(1, 3), torch.tensor([0]))
    tensor([[1., 2., 3.]])
    """
    source = x.detach().clone().requires_grad_()
    selected = model(source).gather(1, target[:, None]).sum()
    return (torch.autograd.grad(selected, source)[0] * source).detach()


def random_relevance(seed: int = 0) -> Explainer:
    """Relevance drawn from a seeded normal, ignoring the model: the floor a method must beat."""

    def explain(model, x, target):
        return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))

    return explain


def methods_for(model_name: str, with_zennit: bool = True) -> dict[str, Explainer]:
    """Every method the benchmark scores on a built-in model, by display name."""
    composites = CNN_COMPOSITES if model_name == "cnn" else TRANSFORMER_COMPOSITES
    methods = {f"opwise {name}": opwise_explainer(name) for name in composites}
    if with_zennit and model_name == "cnn":
        methods.update({f"zennit {name}": zennit_explainer(name) for name in CNN_COMPOSITES})
    methods["gradient x input"] = gradient_x_input
    methods["random"] = random_relevance()
    return methods


def mean_and_error(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean over samples.

    >>> mean_and_error(torch.tensor([1.0, 2.0, 3.0]))
    (2.0, 0.5773502691896258)
    """
    values = values.double()
    spread = values.std(unbiased=True).item() if values.numel() > 1 else math.nan
    return values.mean().item(), spread / math.sqrt(values.numel())


def score(model, x, target, methods: dict[str, Explainer], *, steps: int, patch: int, blur_sigma: float,
          randomize: bool = True) -> dict[str, dict]:
    """Per method: ABPC (mean, standard error) and curves per baseline, randomization Spearman, seconds."""
    results = {}
    for name, explain in methods.items():
        explain(model, x, target)  # warm-up: tracing and planning are not part of the explain time
        start = time.perf_counter()
        relevance = explain(model, x, target)
        seconds = time.perf_counter() - start
        entry = {"seconds": seconds, "abpc": {}, "values": {}, "curves": {}}
        for baseline in BASELINES:
            values, curves = abpc(model, x, relevance, target, patch_size=patch, steps=steps, baseline=baseline,
                                  blur_sigma=blur_sigma)
            entry["abpc"][baseline] = mean_and_error(values)
            entry["values"][baseline] = values
            entry["curves"][baseline] = curves
        model_blind = name == "random"
        entry["randomization"] = None if model_blind or not randomize else randomization_check(explain, model, x, target)
        results[name] = entry
    return results


def targets_for(model, x: torch.Tensor, labels: torch.Tensor, which: str) -> torch.Tensor:
    """The explained class per sample: the model's prediction or the true label."""
    if which == "true":
        return labels
    with torch.no_grad():
        return model(x).argmax(1)


def table(model_name: str, results: dict[str, dict]) -> list[str]:
    """Printable rows: method, ABPC per baseline (mean ± s.e.), randomization Spearman, explain seconds."""
    rows = [f"| {model_name} method | ABPC mean baseline | ABPC blur baseline | randomization Spearman | explain s (warm) |",
            "|---|---|---|---|---|"]
    for name, entry in results.items():
        cells = [f"{m:.3f} ± {e:.3f}" for m, e in (entry["abpc"][b] for b in BASELINES)]
        check = "n/a (model-blind)" if entry["randomization"] is None else f"{entry['randomization']:.3f}"
        rows.append(f"| {name} | {cells[0]} | {cells[1]} | {check} | {entry['seconds']:.3f} |")
    return rows


def against_zennit(results: dict[str, dict]) -> list[str]:
    """Printable rows: per composite and baseline, the paired per-sample ABPC difference opwise - Zennit."""
    rows = []
    for name in results:
        composite = name.removeprefix("opwise ")
        theirs = results.get(f"zennit {composite}")
        if not name.startswith("opwise ") or theirs is None:
            continue
        cells = []
        for baseline in BASELINES:
            mean, error = mean_and_error(results[name]["values"][baseline] - theirs["values"][baseline])
            cells.append(f"{baseline} {mean:+.2e} ± {error:.1e}")
        rows.append(f"opwise - zennit ABPC, {composite}: " + ", ".join(cells))
    return rows


def plot(model_name: str, results: dict[str, dict], out: Path) -> list[Path]:
    """One pixel-flipping plot per baseline with every method's MoRF/LeRF curves."""
    paths = []
    for baseline in BASELINES:
        path = out / f"abpc_{model_name}_{baseline}.png"
        plot_abpc({name: entry["curves"][baseline] for name, entry in results.items()}, path,
                  model=model_name, baseline=baseline)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=359, help="held-out digits to score (default: all 359)")
    parser.add_argument("--steps", type=int, default=16, help="perturbation steps K")
    parser.add_argument("--patch", type=int, default=1, help="patch side in pixels")
    parser.add_argument("--blur-sigma", type=float, default=1.0, help="Gaussian blur baseline sigma (8x8 images)")
    parser.add_argument("--target", choices=("predicted", "true"), default="predicted")
    parser.add_argument("--models", default="cnn,transformer")
    parser.add_argument("--no-zennit", action="store_true", help="leave Zennit out")
    parser.add_argument("--out", default="faithfulness", help="folder for the curve PNGs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x, labels = held_out_digits(args.n)
    out = Path(args.out)
    print(f"held-out digits n={args.n}, steps {args.steps}, patch {args.patch}, target {args.target}, "
          f"blur sigma {args.blur_sigma}; ABPC = AUPC(LeRF) - AUPC(MoRF), mean ± standard error")
    for model_name in args.models.split(","):
        model = opwise.models.builtin(model_name)
        target = targets_for(model, x, labels, args.target)
        results = score(model, x, target, methods_for(model_name, not args.no_zennit),
                        steps=args.steps, patch=args.patch, blur_sigma=args.blur_sigma)
        print("\n".join(table(model_name, results) + against_zennit(results)))
        if model_name == "transformer" and not args.no_zennit:
            print(ZENNIT_NOTE)
        for path in plot(model_name, results, out):
            print(f"curves written to {path}")


if __name__ == "__main__":
    main()
