"""GPT-2- and ViT-sized transformers: opwise AttnLRP vs LXT's AttnLRP vs one plain gradient pass, CPU.

Models are built from transformers' configs with random weights (GPT2Config: 12 layers, width 768,
vocabulary 50257; ViTConfig: ViT-Base/16 at 224x224), eager attention. Each (model, method) runs in
its own subprocess, so LXT's monkey patches of transformers' classes stay there and peak memory is that
method's own. Per method: best-of-`repeats` seconds after a warm-up, the first call (opwise traces and
plans once per input shape), and peak resident memory above the loaded model, for the first call and
for the warm calls alone (the kernel's high-water mark is reset in between). The parent then correlates
the relevance maps of opwise and LXT per sample (Pearson; token relevance for GPT-2, pixels for ViT).

LXT 2.1 needs three adaptations to import and run with transformers 5.x (printed with the results):
`lxt.efficient` imports `transformers.pytorch_utils.find_pruneable_heads_and_indices` (removed in
transformers 5) and torchvision (for its own ViT map); its `patch_attention` replaces transformers'
`ALL_ATTENTION_FUNCTIONS` interface object by a plain dict, which attention layers then call
`.get_interface` on; and it ships no map for transformers' ViT, so the ViT run uses a `patch_map` of
LXT's own patches (layer norm, GELU identity, dropout, attention), the extension LXT's API asks for.

    python -m benchmarks.transformers_lxt [--batch 1] [--tokens 128] [--repeats 2] [--models gpt2,vit]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import torch

METHODS = ("gradient", "opwise", "lxt")
LXT_ADAPTATIONS = []


def build(model_name: str, batch: int, tokens: int, small: bool = False):
    """(model, input, target per sample): random weights, seeded; `small` shrinks it for tests."""
    from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    if model_name == "gpt2":
        sizes = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=101) if small else {}
        config = GPT2Config(**sizes, attn_implementation="eager")
        model = GPT2LMHeadModel(config).eval()
        x = torch.randint(0, config.vocab_size, (batch, tokens), generator=generator)
        with torch.no_grad():
            target = model(x).logits[:, -1].argmax(-1)
        return model, x, target
    sizes = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, image_size=32,
                 patch_size=8) if small else {}
    config = ViTConfig(**sizes, num_labels=1000, attn_implementation="eager")
    model = ViTForImageClassification(config).eval()
    x = torch.randn(batch, 3, config.image_size, config.image_size, generator=generator)
    with torch.no_grad():
        target = model(x).logits.argmax(-1)
    return model, x, target


def _embedded(model, x):
    """GPT-2 is differentiated at its token embeddings (ids are integers); ViT at its pixels."""
    if x.is_floating_point():
        return x.detach().clone().requires_grad_(), {"pixel_values": None}
    return model.get_input_embeddings()(x).detach().requires_grad_(), {"inputs_embeds": None}


def _selected(model, source, keyword, target):
    logits = model(**{keyword: source}).logits
    logits = logits[:, -1] if logits.dim() == 3 else logits
    return logits.gather(1, target[:, None])[:, 0]


def gradient_pass(model, x, target):
    """One forward and one backward pass to the input (embeddings for token ids): the cost floor."""
    source, keywords = _embedded(model, x)
    selected = _selected(model, source, next(iter(keywords)), target)
    return torch.autograd.grad(selected.sum(), source)[0]


def opwise_relevance(model, x, target, composite="attn-lrp"):
    """opwise's relevance per token (GPT-2) or pixel (ViT) of the target logit."""
    import opwise

    if x.is_floating_point():
        select = target
    else:
        def select(logits):
            return logits[:, -1].gather(1, target[:, None])[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return opwise.explain(model, x, target=select, composite=composite).relevance


def patch_lxt(model_name: str) -> None:
    """Apply LXT's AttnLRP patches to transformers' GPT-2 or ViT module (see the module docstring)."""
    import transformers.pytorch_utils

    if not hasattr(transformers.pytorch_utils, "find_pruneable_heads_and_indices"):
        def removed(*args, **kwargs):
            raise NotImplementedError("removed in transformers 5; only imported by lxt.efficient.models.bert")

        transformers.pytorch_utils.find_pruneable_heads_and_indices = removed
        LXT_ADAPTATIONS.append("stubbed transformers.pytorch_utils.find_pruneable_heads_and_indices for lxt's import")
    if "torchvision" not in sys.modules:
        vision = types.ModuleType("torchvision.models.vision_transformer")
        vision.nn = torch.nn
        models = types.ModuleType("torchvision.models")
        models.vision_transformer = vision
        root = types.ModuleType("torchvision")
        root.models = models
        sys.modules.update({"torchvision": root, "torchvision.models": models,
                            "torchvision.models.vision_transformer": vision})
        LXT_ADAPTATIONS.append("stand-in torchvision module for lxt's import (its torchvision ViT map is not used)")
    from functools import partial

    from lxt.efficient import monkey_patch
    from lxt.efficient.patches import dropout_forward, layer_norm_forward, non_linear_forward, patch_attention, patch_method

    if model_name == "gpt2":
        from transformers.models.gpt2 import modeling_gpt2 as module

        patch_map = None
    else:
        from transformers.activations import GELUActivation
        from transformers.models.vit import modeling_vit as module

        patch_map = {
            torch.nn.LayerNorm: partial(patch_method, layer_norm_forward),
            GELUActivation: partial(patch_method, non_linear_forward, keep_original=True),
            torch.nn.Dropout: partial(patch_method, dropout_forward),
            module: patch_attention,
        }
        LXT_ADAPTATIONS.append("ViT: patch_map of LXT's own patches (lxt ships none for transformers' ViT)")
    interface = module.ALL_ATTENTION_FUNCTIONS
    monkey_patch(module, patch_map)
    if not hasattr(module.ALL_ATTENTION_FUNCTIONS, "get_interface"):
        module.ALL_ATTENTION_FUNCTIONS = interface
        LXT_ADAPTATIONS.append("restored transformers' AttentionInterface that lxt's patch_attention replaced by a dict "
                               "(eager attention runs lxt's patched eager_attention_forward)")


def lxt_relevance(model, x, target):
    """LXT's efficient AttnLRP: input times the gradient of the patched model, summed per token for GPT-2."""
    source, keywords = _embedded(model, x)
    selected = _selected(model, source, next(iter(keywords)), target)
    gradient = torch.autograd.grad(selected.sum(), source)[0]
    relevance = source * gradient
    return (relevance.sum(-1) if not x.is_floating_point() else relevance).detach()


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    """Reset the kernel's resident-memory high-water mark (VmHWM) to the current resident size."""
    Path("/proc/self/clear_refs").write_text("5")


def measure(model_name: str, method: str, batch: int, tokens: int, repeats: int, save: str | None,
            small: bool = False) -> dict:
    """Time and peak memory of one method on one model, in this process."""
    torch.set_num_threads(1)
    model, x, target = build(model_name, batch, tokens, small)
    if method == "lxt":
        patch_lxt(model_name)
    run = {"gradient": gradient_pass, "opwise": opwise_relevance, "lxt": lxt_relevance}[method]
    _reset_peak()
    loaded = _rss_mib("VmRSS")
    start = time.perf_counter()
    result = run(model, x, target)
    first = time.perf_counter() - start
    first_peak = _rss_mib("VmHWM") - loaded
    _reset_peak()
    warm = _rss_mib("VmRSS")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run(model, x, target)
        times.append(time.perf_counter() - start)
    warm_peak = _rss_mib("VmHWM") - warm
    if save:
        torch.save(result.detach(), save)
    return {"seconds": min(times), "first_call": first, "first_peak_mib": first_peak, "warm_peak_mib": warm_peak,
            "target": target.tolist(), "adaptations": LXT_ADAPTATIONS, "patch": getattr(model.config, "patch_size", None)}


def pearson_per_sample(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Pearson correlation of two relevance maps, one value per sample.

    >>> pearson_per_sample(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 4.0, 6.5]]))
    [0.9986...]
    """
    values = []
    for left, right in zip(a.flatten(1).double(), b.flatten(1).double()):
        values.append(torch.corrcoef(torch.stack([left, right]))[0, 1].item())
    return values


def patch_sums(relevance: torch.Tensor, patch: int) -> torch.Tensor:
    """Pixel relevance ``[B, C, H, W]`` summed per ViT patch (the token it becomes): ``[B, H/patch, W/patch]``.

    >>> patch_sums(torch.ones(1, 3, 4, 4), 2)
    tensor([[[12., 12.],
             [12., 12.]]])
    """
    batch, _, height, width = relevance.shape
    return relevance.sum(1).reshape(batch, height // patch, patch, width // patch, patch).sum((2, 4))


def run_all(models: list[str], batch: int, tokens: int, repeats: int, small: bool = False) -> dict:
    """Every (model, method) in its own subprocess; results, relevance correlation and failures per model."""
    report = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in models:
            results, failures = {}, {}
            for method in METHODS:
                save = str(Path(folder) / f"{name}_{method}.pt")
                command = [sys.executable, __file__, "--one", name, method, "--batch", str(batch), "--tokens", str(tokens),
                           "--repeats", str(repeats), "--save", save] + (["--small"] if small else [])
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    failures[method] = _last_error(done.stderr)
                    continue
                results[method] = json.loads(done.stdout.strip().splitlines()[-1])
                results[method]["relevance"] = torch.load(save, weights_only=True)
            correlation = per_token = None
            if "opwise" in results and "lxt" in results:
                ours, theirs = results["opwise"]["relevance"], results["lxt"]["relevance"]
                correlation = pearson_per_sample(ours, theirs)
                patch = results["opwise"]["patch"]
                per_token = pearson_per_sample(patch_sums(ours, patch), patch_sums(theirs, patch)) if patch else None
            report[name] = {"results": results, "failures": failures, "pearson": correlation, "pearson_tokens": per_token}
    return report


def _last_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip() and not line.startswith(("DEBUG", "  "))]
    return lines[-1] if lines else "failed without a message"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=128, help="GPT-2 sequence length")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", default="gpt2,vit")
    parser.add_argument("--small", action="store_true", help="tiny configs (for tests)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--save", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.batch, args.tokens, args.repeats, args.save, args.small)))
        return
    print(f"CPU, 1 thread per process, batch {args.batch}, GPT-2 {args.tokens} tokens, best of {args.repeats}")
    report = run_all(args.models.split(","), args.batch, args.tokens, args.repeats, args.small)
    print("| model | method | seconds (warm) | first call s | peak MiB first call | peak MiB warm | time / gradient |")
    print("|---|---|---|---|---|---|---|")
    for name, entry in report.items():
        results = entry["results"]
        base = results.get("gradient", {}).get("seconds")
        for method, r in results.items():
            ratio = f"{r['seconds'] / base:.2f}x" if base else "n/a"
            print(f"| {name} | {method} | {r['seconds']:.3f} | {r['first_call']:.2f} | {r['first_peak_mib']:.0f} | "
                  f"{r['warm_peak_mib']:.0f} | {ratio} |")
        for method, error in entry["failures"].items():
            print(f"| {name} | {method} | failed: {error} | | | | |")
    for name, entry in report.items():
        if entry["pearson"] is not None:
            values = ", ".join(f"{v:.4f}" for v in entry["pearson"])
            print(f"{name}: Pearson(opwise attn-lrp, LXT AttnLRP) per sample: {values}")
        if entry["pearson_tokens"] is not None:
            values = ", ".join(f"{v:.4f}" for v in entry["pearson_tokens"])
            print(f"{name}: the same, relevance summed per patch (token): {values}")
        lxt = entry["results"].get("lxt")
        if lxt and lxt["adaptations"]:
            print(f"{name}: LXT adaptations: " + "; ".join(lxt["adaptations"]))
        targets = {m: r["target"] for m, r in entry["results"].items()}
        if len({json.dumps(t) for t in targets.values()}) > 1:
            print(f"{name}: WARNING: methods explained different targets {targets}")


if __name__ == "__main__":
    main()
