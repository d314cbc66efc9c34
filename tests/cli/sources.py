"""One small model in every form a model spec can name: builtin, factory with and without example inputs,
.pt2 (dynamic batch), .onnx and ARCH@weights; built once per test session in a temporary folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch

FACTORIES = textwrap.dedent('''
    import torch
    from torch import nn

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4)).eval()

    def with_inputs():
        return net(), torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    def without_inputs():
        return net()
''')

# spec template -> extra arguments the source needs to have inputs
SOURCES = {
    "builtin": ("builtin:cnn", []),
    "factory-with-inputs": ("{root}/nets.py:with_inputs", []),
    "factory-without-inputs": ("{root}/nets.py:without_inputs", ["--input-shape", "2,1,8,8"]),
    "pt2": ("{root}/net.pt2", []),
    "onnx": ("{root}/net.onnx", []),
    "weights": ("{root}/nets.py:without_inputs@{root}/weights.pt", ["--input-shape", "1,1,8,8"]),
}


def build(root: Path) -> Path:
    """Write every form of the model under `root`; returns `root`."""
    import importlib.util

    (root / "nets.py").write_text(FACTORIES)
    spec = importlib.util.spec_from_file_location("cli_test_nets", root / "nets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model, inputs = module.with_inputs()
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.export.save(torch.export.export(model, (inputs,), dynamic_shapes=({0: batch},)), root / "net.pt2")
    torch.onnx.export(model, (inputs[:1],), str(root / "net.onnx"), dynamo=False)
    trained = module.net()
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.mul_(-1.0)  # weights that differ from the factory's, so loading them shows
    torch.save(trained.state_dict(), root / "weights.pt")
    return root


def spec(name: str, root: Path) -> tuple[str, list[str]]:
    template, extra = SOURCES[name]
    return template.format(root=root), list(extra)
