"""Time and peak memory of opwise LRP vs Zennit (same composite) vs one plain gradient pass, CPU batch 8.

Models are VGG16- and ResNet50-shaped (written here, no torchvision, random weights). Each measurement
runs in its own subprocess (one torch thread, glibc's mmap threshold fixed so freed tensors leave the
resident set): after a warm-up call (tracing, planning, hooks) the peak-RSS mark is reset, and the peak
growth over the resident set before the timed calls is that method's working memory. opwise runs once per
memory policy: keep="all", keep="checkpoints", a byte budget of --budget × what keep="all" stores, and
KEEP-chunked: keep=KEEP with internal_batch_size=--chunk (the batch explained that many samples at a time).

    python -m benchmarks.attribution [--size 224] [--batch 8] [--repeats 3]
        [--models vgg16,resnet50] [--composites epsilon-plus-flat,...] [--keeps all,checkpoints,budget,...]
        [--chunk 4]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
import warnings

import torch
from torch import nn

COMPOSITES = ("epsilon", "epsilon-plus", "epsilon-plus-flat", "epsilon-gamma-box", "epsilon-alpha2-beta1")
KEEPS = ("all", "checkpoints", "budget", "checkpoints-chunked")


class Sum(nn.Module):
    """Residual sum over a stacked last axis, so Zennit can give it its Norm rule."""

    def forward(self, stacked):
        return stacked.sum(-1)


def vgg16(classes: int = 1000, batch_norm: bool = False) -> nn.Module:
    layers, channels = [], 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            norm = [nn.BatchNorm2d(width)] if batch_norm else []
            layers += [nn.Conv2d(channels, width, 3, padding=1), *norm, nn.ReLU()]
            channels = width
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(512 * 49, 4096), nn.ReLU(),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, classes),
    )


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.sum = Sum()

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.relu3(self.sum(torch.stack([self.bn3(self.conv3(out)), identity], -1)))


def resnet50(classes: int = 1000) -> nn.Module:
    blocks, cin = [], 64
    for width, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(count):
            blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    return nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, classes),
    )


MODELS = {"vgg16": vgg16, "vgg16bn": lambda: vgg16(batch_norm=True), "resnet50": resnet50}


def _zennit_attributor(model, composite: str):
    sys.path.insert(0, "tests")
    from attribution.zennit_setup import import_zennit

    import_zennit()
    from zennit import composites, types
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.rules import Epsilon, Norm

    extra = [(Sum, Norm())]
    canonizers = [SequentialMergeBatchNorm()]
    if composite == "epsilon":
        layer_map = composites.layer_map_base() + extra + [((types.Convolution, types.Linear), Epsilon())]
        chosen = composites.LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
    elif composite == "epsilon-gamma-box":
        chosen = composites.EpsilonGammaBox(-3.0, 3.0, layer_map=extra, canonizers=canonizers)
    else:
        kind = {"epsilon-plus": "EpsilonPlus", "epsilon-plus-flat": "EpsilonPlusFlat",
                "epsilon-alpha2-beta1": "EpsilonAlpha2Beta1"}[composite]
        chosen = getattr(composites, kind)(layer_map=extra, canonizers=canonizers)
    return Gradient(model=model, composite=chosen)


def _resident() -> tuple[int, int]:
    """(current, peak) resident set size in bytes, from /proc."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line[:5]] = int(line.split()[1]) * 1024
    return values["VmRSS"], values["VmHWM"]


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _opwise_runner(model, x, target, composite: str, keep: str, budget: float, chunk: int | None = None):
    import opwise

    chunked = keep.endswith("-chunked")
    keep = keep.removesuffix("-chunked")
    if keep == "budget":
        from opwise.attribution.promise import needed_bytes

        plan = opwise.explain(model, x, target=target, composite=composite).plan
        keep = int(budget * needed_bytes(plan.graph, plan.store.kept))

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return opwise.explain(model, x, target=target, composite=composite, keep=keep,
                                  internal_batch_size=chunk if chunked else None).relevance

    return run


def _gradient_runner(model, x, target):
    """The input gradient alone (autograd skips the weights' gradients): the cheapest gradient pass."""
    def run():
        source = x.clone().requires_grad_()
        out = model(source)
        return torch.autograd.grad(out.gather(1, target[:, None]).sum(), source)[0]

    return run


def _full_backward_runner(model, x, target):
    """A plain `.backward()` as in training: the input's and every weight's gradient."""
    def run():
        model.zero_grad(set_to_none=True)
        source = x.clone().requires_grad_()
        model(source).gather(1, target[:, None]).sum().backward()
        return source.grad

    return run


def _zennit_runner(model, x, target, composite: str):
    attributor = _zennit_attributor(model, composite)
    attributor.__enter__()

    def run():
        out = model(x).detach()
        return attributor(x, torch.eye(out.shape[1])[target] * out)[1]

    return run


def measure(model_name: str, method: str, composite: str, keep: str, size: int, batch: int, repeats: int,
            budget: float, chunk: int | None = None) -> dict:
    """Alternate a plain gradient pass and the method `repeats` times after a warm-up of each: best seconds
    of both (a side-by-side ratio) and the method's peak working memory (the gradient pass's, for it)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MODELS[model_name]().eval()
    x = torch.randn(batch, 3, size, size)
    target = torch.arange(batch)
    gradient = _gradient_runner(copy.deepcopy(model), x, target)
    warm = time.perf_counter()
    if method == "gradient":
        run = gradient
    elif method == "opwise":
        run = _opwise_runner(model, x, target, composite, keep, budget, chunk)
    else:
        run = _zennit_runner(model, x, target, composite)

    run()
    first = time.perf_counter() - warm
    gradient()
    times, gradient_times, peak = [], [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        gradient()
        gradient_times.append(time.perf_counter() - start)
        _reset_peak()
        baseline = _resident()[0]
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        peak = max(peak, _resident()[1] - baseline)
    return {"seconds": min(times), "gradient_seconds": min(gradient_times), "first_call": first,
            "peak_mib": peak / 2**20}


def side_by_side(model_name: str, composites: list[str], size: int, batch: int, repeats: int,
                 zennit: bool = False, threads: int = 1) -> dict:
    """In one process: rounds of both gradient passes (input only; a full `.backward()`), then each composite
    (keep="all"), and Zennit's when asked; best (wall, CPU) seconds.

    Cheaper than one subprocess per measurement (the graph is traced once) and robust to a loaded machine,
    as every round runs all methods back to back; the process's CPU time (one thread) is not inflated by
    other jobs waiting for the same cores, as the wall clock is (with `threads` 1). Memory is not measured here.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = MODELS[model_name]().eval()
    x = torch.randn(batch, 3, size, size)
    target = torch.arange(batch)
    runners = {"gradient": _gradient_runner(model, x, target),
               "full-backward": _full_backward_runner(copy.deepcopy(model), x, target)}
    runners.update({c: _opwise_runner(model, x, target, c, "all", 1.0) for c in composites})
    if zennit:  # Zennit hooks its own copy: its canonizer merges batch norm into the weights in place
        runners.update({f"zennit {c}": _zennit_runner(copy.deepcopy(model), x, target, c) for c in composites})
    best = {}
    for round_ in range(repeats + 1):
        for name, run in runners.items():
            start, cpu = time.perf_counter(), time.process_time()
            run()
            if round_:  # the first round warms up (tracing, planning)
                wall, used = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(wall, time.perf_counter() - start), min(used, time.process_time() - cpu))
    return best


def _run_one(args, model: str, method: str, composite: str = "-", keep: str = "-") -> dict:
    command = [sys.executable, __file__, "--one", model, method, composite, keep, "--size", str(args.size),
               "--batch", str(args.batch), "--repeats", str(args.repeats), "--budget", str(args.budget),
               "--chunk", str(args.chunk or args.batch // 2)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="vgg16,resnet50")
    parser.add_argument("--composites", default=",".join(COMPOSITES))
    parser.add_argument("--keeps", default=",".join(KEEPS))
    parser.add_argument("--budget", type=float, default=0.5, help="byte budget as a fraction of keep='all'")
    parser.add_argument("--chunk", type=int, default=None, help="internal_batch_size of the -chunked keeps (batch // 2)")
    parser.add_argument("--no-zennit", action="store_true")
    parser.add_argument("--side-by-side", action="store_true",
                        help="only time ratios to the gradient passes (/grad: input gradient only; /full: a full "
                             ".backward() with the weights' gradients), all composites in one process per model")
    parser.add_argument("--zennit", action="store_true", help="with --side-by-side: Zennit's composites too")
    parser.add_argument("--threads", type=int, default=1, help="with --side-by-side: torch threads (default 1)")
    parser.add_argument("--one", nargs=4, metavar=("MODEL", "METHOD", "COMPOSITE", "KEEP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, method, composite, keep = args.one
        chunk = args.chunk or args.batch // 2
        print(json.dumps(measure(model, method, composite, keep, args.size, args.batch, args.repeats, args.budget, chunk)))
        return
    if args.side_by_side:
        print(f"CPU, {args.threads} thread(s), batch {args.batch}, {args.size}x{args.size}, best of {args.repeats} side-by-side rounds; "
              f"load {os.getloadavg()[0]:.1f}")
        for name in args.models.split(","):
            best = side_by_side(name, args.composites.split(","), args.size, args.batch, args.repeats, args.zennit,
                                args.threads)
            print("model     method                        wall s  /grad /full   CPU s  /grad /full")
            (wall_gradient, cpu_gradient), (wall_full, cpu_full) = best["gradient"], best["full-backward"]
            for composite, (wall, cpu) in best.items():
                print(f"{name:9s} {composite:28s} {wall:7.3f} {wall / wall_gradient:5.2f}x {wall / wall_full:4.2f}x "
                      f"{cpu:7.3f} {cpu / cpu_gradient:5.2f}x {cpu / cpu_full:4.2f}x", flush=True)
        print(f"load after {os.getloadavg()[0]:.1f}")
        return
    keeps = ["all"] + [k for k in args.keeps.split(",") if k != "all"]
    print(f"CPU, 1 thread per process, batch {args.batch}, {args.size}x{args.size}, best of {args.repeats}, "
          f"budget {args.budget:g} x keep='all', chunks of {args.chunk or args.batch // 2}; load {os.getloadavg()[0]:.1f}")
    print("Times are best-of; x-ratios of times are side by side with a gradient pass in the same process.")
    print("model     composite            grad s  opwise s   /grad  zennit s  time/zennit mem/zennit  "
          "MiB grad opwise zennit  " + "  ".join(f"{k}: time mem (vs all)" for k in keeps if k != "all"))
    for name in args.models.split(","):
        for composite in args.composites.split(","):
            g = _run_one(args, name, "gradient")
            runs = {keep: _run_one(args, name, "opwise", composite, keep) for keep in keeps}
            z = None if args.no_zennit else _run_one(args, name, "zennit", composite)
            o = runs["all"]
            per_gradient = {k: r["seconds"] / r["gradient_seconds"] for k, r in runs.items()}
            zennit = "       -       -       -"
            if z:
                z_ratio = z["seconds"] / z["gradient_seconds"]
                zennit = f"{z['seconds']:8.3f}  {per_gradient['all'] / z_ratio:6.2f}x {o['peak_mib'] / z['peak_mib']:6.2f}x"
            ratios = "  ".join(f"{per_gradient[k] / per_gradient['all']:11.2f}x {runs[k]['peak_mib'] / o['peak_mib']:5.2f}x"
                               for k in keeps if k != "all")
            print(f"{name:9s} {composite:20s} {o['gradient_seconds']:6.3f}  {o['seconds']:8.3f}  {per_gradient['all']:5.2f}x"
                  f"  {zennit}  {g['peak_mib']:6.0f} {o['peak_mib']:6.0f} {z['peak_mib'] if z else float('nan'):6.0f}"
                  f"  {ratios}", flush=True)


if __name__ == "__main__":
    main()
