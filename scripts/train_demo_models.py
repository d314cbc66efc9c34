"""Train the built-in demo models on scikit-learn's digits and write their weights and metadata.

    python scripts/train_demo_models.py            # all models, a few seconds on CPU
    python scripts/train_demo_models.py cnn mlp    # some of them

Writes opwise/models/weights/NAME.pt (state dicts), weights/metadata.json (test accuracy on the
fixed held-out split, parameter count, training settings) and data/digits.npz (20 held-out digits,
classes 0-9 twice, as the default inputs). Seeds are fixed, so reruns reproduce the files.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from opwise.models.registry import METADATA_FILE, NAMES, architecture, weights_path
from opwise.models.digits import DEMO_FILE, SPLIT_SEED, TEST_FRACTION, Split, load_split

SETTINGS = {
    "cnn": {"epochs": 40, "learning_rate": 3e-3, "batch_size": 64},
    "mlp": {"epochs": 80, "learning_rate": 3e-3, "batch_size": 64},
    "transformer": {"epochs": 60, "learning_rate": 3e-3, "batch_size": 64},
}
DEMO_COUNT = 20
SEED = 0


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model.eval()(images).argmax(dim=1) == labels).float().mean().item()


def train(name: str, split: Split) -> tuple[nn.Module, dict]:
    torch.manual_seed(SEED)
    settings = SETTINGS[name]
    model = architecture(name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["learning_rate"], weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings["epochs"])
    generator = torch.Generator().manual_seed(SEED)
    n = len(split.train_labels)
    start = time.perf_counter()
    for _ in range(settings["epochs"]):
        model.train()
        for batch in torch.randperm(n, generator=generator).split(settings["batch_size"]):
            loss = nn.functional.cross_entropy(model(split.train_images[batch]), split.train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    seconds = time.perf_counter() - start
    model.eval()
    record = {
        "architecture": type(model).__name__,
        "test_accuracy": round(accuracy(model, split.test_images, split.test_labels), 6),
        "train_accuracy": round(accuracy(model, split.train_images, split.train_labels), 6),
        "test_size": len(split.test_labels),
        "parameters": sum(p.numel() for p in model.parameters()),
        "input_shape": [1, 8, 8],
        "input_range": [0.0, 1.0],
        "split": {"seed": SPLIT_SEED, "test_fraction": TEST_FRACTION},
        "training": {**settings, "seed": SEED, "optimizer": "AdamW, cosine schedule", "seconds": round(seconds, 1)},
    }
    return model, record


def demo_digits(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Held-out digits, one per class in turn (0-9, twice), so demos show every class."""
    chosen = []
    for k in range(DEMO_COUNT):
        of_class = (split.test_labels == k % 10).nonzero().flatten()
        chosen.append(int(of_class[k // 10]))
    return split.test_images[chosen].squeeze(1).numpy(), split.test_labels[chosen].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[*NAMES, []], help="models to train (default: all)")
    names = parser.parse_args().names or list(NAMES)
    # One thread: these models are tiny, extra threads only add contention, and results stay reproducible.
    torch.set_num_threads(1)
    split = load_split()
    recorded = json.loads(METADATA_FILE.read_text()) if METADATA_FILE.is_file() else {}
    for name in names:
        model, record = train(name, split)
        torch.save(model.state_dict(), weights_path(name))
        recorded[name] = record
        print(f"{name}: test accuracy {record['test_accuracy']:.4f}, {record['parameters']} parameters, "
              f"{record['training']['seconds']} s")
    METADATA_FILE.write_text(json.dumps(dict(sorted(recorded.items())), indent=2) + "\n")
    images, labels = demo_digits(split)
    DEMO_FILE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(DEMO_FILE, images=images.astype(np.float32), labels=labels.astype(np.int64))


if __name__ == "__main__":
    main()
