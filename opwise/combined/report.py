"""`report`: one self-contained HTML page that puts a prediction's explanation and its verification side by side.

Sections: prediction, relevance per composite, the verdict at ε with per-class margin bounds, the
certified-radius map with the PGD radius, and the explanation of a counterexample where one was found.
Pictures are inlined as base64 PNG and the style sheet is inline, so the file opens offline.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from opwise.attribution import explain
from opwise.bounds import BoundedModel, verify
from opwise.bounds.methods import method_name
from opwise.combined.certified_map import CertifiedMap, certified_map
from opwise.combined.counterexample import explain_counterexample
from opwise.errors import InputError
from opwise.tracing.precision import as_float32

#: epsilon-plus first (it also explains the counterexample): the flat rule spreads a dense first layer's relevance
#: evenly over its inputs, so an MLP's map came out one flat colour
DEFAULT_COMPOSITES = ("epsilon-plus", "epsilon-gamma-box")
CHOSEN = ' class="chosen"'

STYLE = """
body { font-family: sans-serif; max-width: 1400px; margin: 1em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #f0f0f0; } tr.chosen td { font-weight: bold; background: #fff4d6; }
img { max-width: 100%; border: 1px solid #eee; } .verdict { font-size: 1.2em; font-weight: bold; }
.verified { color: #1a7f37; } .falsified { color: #cf222e; } .unknown { color: #9a6700; } .note { color: #555; }
"""


@dataclasses.dataclass
class ReportSettings:
    """What the report computes: composites to explain with, the ε to verify at, the certified map's
    patch size, method and largest ε, and the input domain (None: unbounded)."""

    composites: Sequence[str] = DEFAULT_COMPOSITES
    eps: float = 0.05
    patch: int = 1
    method: str = "crown"
    eps_max: float = 0.5
    domain: tuple[float, float] | None = (0.0, 1.0)
    title: str = "opwise report"


def report(model: torch.nn.Module, x: torch.Tensor, path: str | Path | None = None, **settings: Any) -> str:
    """The HTML report for one sample x [1, ...] (written to `path` when given; returned either way).
    Keyword settings are those of `ReportSettings`.

    >>> import torch, opwise
    >>> _ = torch.manual_seed(0); model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> page = opwise.report(model, torch.rand(1, 4), composites=["epsilon"], eps=0.01, eps_max=0.2)
    >>> all(f'id="{s}"' in page for s in ("prediction", "relevance", "verification", "certified-map", "counterexample"))
    True
    """
    options = ReportSettings(**settings)
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() == 0 or x.shape[0] != 1:
        raise InputError(f"report takes one sample with a batch dimension of 1, got shape {tuple(x.shape)}")
    if not options.composites:
        raise InputError("report needs at least one composite")
    if isinstance(model, torch.nn.Module):  # a Graph (a model file) is checked where it is bounded
        model = as_float32(model, "bounds")  # every part below runs the same float32 model
    bounded = BoundedModel(model, x)
    with torch.no_grad():
        logits = bounded(x).reshape(-1)
    target = int(logits.argmax())
    explanations = {name: explain(model, x, target=target, composite=name) for name in options.composites}
    result = verify(bounded, x, eps=options.eps, domain=options.domain)
    margins = bounded.compute_bounds(x, eps=options.eps, method=_margin_method(options.method), target=target,
                                     domain=options.domain, bound_upper=False).lower[0]
    robustness = certified_map(model, x, patch=options.patch, method=options.method, eps_max=options.eps_max,
                               domain=options.domain, target=target)
    sections = [
        _prediction_section(x, logits, target),
        _relevance_section(x, explanations),
        _verification_section(result, margins, target, options),
        _certified_section(robustness, explanations),
        _counterexample_section(model, x, result, robustness, options.composites[0]),
    ]
    return _page(options.title, sections, path)


def _margin_method(method: str) -> str:
    """The bound pass behind the margin table: the method itself, or CROWN, the pass branch-and-bound ("bab")
    splits boxes for (the certified map searches with bab itself; the verdict has its own complete search).

    >>> _margin_method("BAB"), _margin_method("CROWN-Optimized")
    ('crown', 'alpha-crown')
    """
    name = method_name(method, extra=("bab",))
    return "crown" if name == "bab" else name


def text_report(model: torch.nn.Module, ids: torch.Tensor, tokens: Sequence[str], path: str | Path | None = None, *,
                target: Callable[[torch.Tensor], torch.Tensor], label: str, composites: Sequence[str] = ("attn-lrp",),
                title: str = "opwise report") -> str:
    """The report for a token model: the prediction `label` and the relevance per token of `target` (a
    callable on the output, as `explain` takes) per composite. Token ids are discrete, so the bound
    sections say so instead of showing a verdict: bound a model that takes embeddings for those.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Flatten(), torch.nn.Linear(8, 2, bias=False))
    >>> page = text_report(model, torch.tensor([[1, 3]]), ["a", "b"], target=lambda y: y[:, 0], label="class 0", composites=["epsilon"])
    >>> 'id="relevance"' in page and "token ids are discrete" in page
    True
    """
    from opwise.attribution.pictures import token_heatmap

    parts = []
    for name in composites:
        explanation = explain(model, ids, target=target, composite=name)
        relevance = explanation.relevance if isinstance(explanation.relevance, torch.Tensor) else explanation.relevance[0]
        total, explained = explanation.conservation[0].tolist()
        parts.append(f"<h3>{html.escape(name)}</h3><p>input relevance sums to {total:.4f}; explained logit {explained:.4f}</p>"
                     + _image(token_heatmap(list(tokens), relevance[0].detach()), f"token relevance {name}"))
    note = ("<p class=\"note\">token ids are discrete: bounds need a continuous input. Bound a model that takes the "
            "embeddings [1, T, D] (opwise.report / opwise.certified_map on it; explain_counterexample(..., tokens=...)).</p>")
    sections = [
        f'<section id="prediction"><h2>Prediction</h2><p>{html.escape(label)} for {len(tokens)} tokens: '
        f"{html.escape(' '.join(tokens))}</p></section>",
        '<section id="relevance"><h2>Relevance (LRP) per token</h2>' + "".join(parts) + "</section>",
        *(f'<section id="{key}"><h2>{heading}</h2>{note}</section>' for key, heading in
          (("verification", "Verification"), ("certified-map", "Certified robustness"), ("counterexample", "Counterexample"))),
    ]
    return _page(title, sections, path)


def _page(title: str, sections: list[str], path: str | Path | None) -> str:
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(page, encoding="utf-8")
    return page


def _prediction_section(x: torch.Tensor, logits: torch.Tensor, target: int) -> str:
    from opwise.combined.pictures import input_figure

    probabilities = torch.softmax(logits, 0)
    rows = "".join(
        f"<tr{CHOSEN if index == target else ''}><td>{index}</td><td>{float(value):.4f}</td><td>{float(p):.2%}</td></tr>"
        for index, (value, p) in enumerate(zip(logits, probabilities))
    )
    return (f'<section id="prediction"><h2>Prediction</h2><p>predicted class <b>{target}</b> '
            f"(input shape {tuple(x.shape)})</p>{_image(input_figure(x[0]), 'input')}"
            f"<table><tr><th>class</th><th>logit</th><th>softmax</th></tr>{rows}</table></section>")


def _relevance_section(x: torch.Tensor, explanations: dict) -> str:
    from opwise.combined.pictures import relevance_figure

    parts = []
    for name, explanation in explanations.items():
        total, explained = explanation.conservation[0].tolist()
        parts.append(f"<h3>{html.escape(name)}</h3><p>input relevance sums to {total:.4f}; explained logit {explained:.4f}</p>"
                     + _image(relevance_figure(explanation.relevance[0], x[0], name), f"relevance {name}"))
    return '<section id="relevance"><h2>Relevance (LRP)</h2>' + "".join(parts) + "</section>"


def _verification_section(result, margins: torch.Tensor, target: int, options: ReportSettings) -> str:
    others = [j for j in range(margins.numel() + 1) if j != target]
    rows = "".join(f"<tr><td>{target} - {j}</td><td>{float(m):.4f}</td></tr>" for j, m in zip(others, margins))
    bound = "-" if result.margin_lower is None else f"{result.margin_lower:.4f}"
    return (f'<section id="verification"><h2>Verification at L&infin; &epsilon; = {options.eps:g}</h2>'
            f'<p class="verdict {result.status}">{result.status}</p>'
            f"<p>lower bound of the smallest margin (methods {', '.join(result.stats.get('methods', [])) or 'attack only'}): {bound}; "
            f"PGD margin {result.stats.get('attack_margin', math.nan):.4f}; domain {options.domain}</p>"
            f"<table><tr><th>margin y<sub>t</sub> - y<sub>j</sub></th><th>{html.escape(_margin_method(options.method))} lower bound"
            f"</th></tr>{rows}</table></section>")


def _certified_section(robustness: CertifiedMap, explanations: dict) -> str:
    from opwise.combined.pictures import certified_map_figure

    first = next(iter(explanations.values()))
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{robustness.relevance_correlation(e.relevance):.3f}</td></tr>"
                   for name, e in explanations.items())
    found = torch.isfinite(robustness.attack_radius)
    attack = f"{float(robustness.attack_radius[found].min()):.4f}" if found.any() else "none found"
    return (f'<section id="certified-map"><h2>Certified robustness per patch</h2>'
            f"<p>{robustness.masks.shape[0]} patches, method {robustness.method}, {robustness.passes} batched bound passes, "
            f"{robustness.seconds:.2f} s. Smallest certified radius {float(robustness.radius.min()):.4f}; "
            f"closest PGD counterexample {attack}; eps_max {robustness.eps_max:g}.</p>"
            + _image(certified_map_figure(robustness, first.relevance), "certified map")
            + f"<table><tr><th>composite</th><th>Spearman(|relevance|, radius)</th></tr>{rows}</table></section>")


def _counterexample_section(model, x, result, robustness: CertifiedMap, composite: str) -> str:
    from opwise.combined.pictures import counterexample_figure

    found = torch.isfinite(robustness.attack_radius)
    if result.counterexample is not None:
        x_prime, origin = result.counterexample, "the verifier's attack at the report's &epsilon;"
    elif found.any():
        index = int(torch.where(found, robustness.attack_radius, math.inf).argmin())
        x_prime = robustness.counterexamples[index : index + 1]
        origin = f"the attack on patch {index} (L&infin; distance {float(robustness.attack_radius[index]):.4f})"
    else:
        return '<section id="counterexample"><h2>Counterexample</h2><p class="note">no counterexample found.</p></section>'
    c = explain_counterexample(model, x, x_prime, true_class=robustness.target, composite=composite)
    return (f'<section id="counterexample"><h2>Counterexample</h2><p>from {origin}: class {c.true_class} &rarr; '
            f"{c.adversarial_class}; margin {c.margin_at_x:.4f} at x, {c.margin_at_x_prime:.4f} at x'; top-{c.top_changed.numel()} "
            f"overlap of relevance change and perturbation {c.overlap:.0%}.</p>" + _image(counterexample_figure(c), "counterexample")
            + "</section>")


def _image(figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'
