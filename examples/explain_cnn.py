"""Explain an image classifier with LRP and save a grid of heatmaps (input | relevance per image).

Uses torchvision's ResNet-18 when torchvision is installed (random weights: nothing is downloaded; load
your own with model.load_state_dict), else a small CNN defined here. Run: python examples/explain_cnn.py
"""

import os

import torch
from torch import nn

import opwise
from opwise.attribution import heatmap

FAST = os.environ.get("FAST") == "1"  # the test suite runs every example this way, in seconds


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


try:
    from torchvision.models import resnet18

    model, name = resnet18(weights=None, num_classes=10), "ResNet-18"
except ImportError:
    model, name = small_cnn(), "small CNN"
model.eval()

torch.manual_seed(0)
size = 32 if FAST else 224
images = torch.rand(4, 3, size, size)  # replace with your images, normalised as the model expects

explanation = opwise.explain(model, images, composite="epsilon-plus-flat")
predicted = explanation.output.argmax(1).tolist()
titles = [f"class {c}, relevance sum {float(s):.3g}" for c, s in zip(predicted, explanation.conservation[:, 0])]
heatmap(explanation.relevance, image=images, path="cnn_heatmaps.png", title=titles,
        suptitle=f"{name} · epsilon-plus-flat · explained: the predicted class")
print(f"{name}: predictions {predicted}; heatmaps written to cnn_heatmaps.png")
