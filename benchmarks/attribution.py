"""Time and peak memory of opwise LRP vs Zennit (same composite) vs one plain gradient pass, CPU batch 8.

Models are VGG16- and ResNet50-shaped (written here, no torchvision, random weights). Each measurement
runs in its own subprocess so that peak resident memory (ru_maxrss) is that method's alone.

    PYTHONPATH=. python benchmarks/attribution.py [--size 224] [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

import torch
from torch import nn

METHODS = ("gradient", "opwise", "zennit")


class Sum(nn.Module):
    """Residual sum over a stacked last axis, so Zennit can give it its Norm rule."""

    def forward(self, stacked):
        return stacked.sum(-1)


def vgg16(classes: int = 1000) -> nn.Module:
    layers, channels = [], 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
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


MODELS = {"vgg16": vgg16, "resnet50": resnet50}


def _zennit_attributor(model):
    sys.path.insert(0, "tests")
    from attribution.zennit_setup import import_zennit

    import_zennit()
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat
    from zennit.rules import Norm

    composite = EpsilonPlusFlat(layer_map=[(Sum, Norm())], canonizers=[SequentialMergeBatchNorm()])
    return Gradient(model=model, composite=composite)


def measure(model_name: str, method: str, size: int, batch: int, repeats: int) -> dict:
    """Run one method `repeats` times after a warm-up; seconds per call (best) and peak RSS growth."""
    torch.manual_seed(0)
    model = MODELS[model_name]().eval()
    x = torch.randn(batch, 3, size, size)
    target = torch.arange(batch)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    warm = time.perf_counter()
    if method == "gradient":
        def run():
            source = x.clone().requires_grad_()
            out = model(source)
            return torch.autograd.grad(out.gather(1, target[:, None]).sum(), source)[0]
    elif method == "opwise":
        import opwise

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return opwise.explain(model, x, target=target, composite="epsilon-plus-flat").relevance
    else:
        attributor = _zennit_attributor(model)
        attributor.__enter__()

        def run():
            out = model(x).detach()
            return attributor(x, torch.eye(1000)[target] * out)[1]

    run()
    first = time.perf_counter() - warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": min(times), "first_call": first, "peak_mib": (peak - baseline) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="vgg16,resnet50")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.size, args.batch, args.repeats)))
        return
    print(f"CPU, {torch.get_num_threads()} threads, batch {args.batch}, {args.size}x{args.size}, best of {args.repeats}")
    for name in args.models.split(","):
        results = {}
        for method in METHODS:
            command = [sys.executable, __file__, "--one", name, method, "--size", str(args.size),
                       "--batch", str(args.batch), "--repeats", str(args.repeats)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[method] = json.loads(output.strip().splitlines()[-1])
        for method, r in results.items():
            print(f"{name:9s} {method:9s} {r['seconds']:7.3f} s  first call {r['first_call']:7.2f} s  "
                  f"peak +{r['peak_mib']:7.0f} MiB")
        g, o, z = (results[m] for m in METHODS)
        print(f"{name:9s} opwise/gradient time {o['seconds'] / g['seconds']:.2f}x  memory {o['peak_mib'] / g['peak_mib']:.2f}x; "
              f"opwise/zennit time {o['seconds'] / z['seconds']:.2f}x  memory {o['peak_mib'] / z['peak_mib']:.2f}x")


if __name__ == "__main__":
    main()
