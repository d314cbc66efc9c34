"""Import zennit in tests without torchvision.

`import zennit` imports torchvision (for its ResNet canonizer), whose PyPI wheel does not work with our
CPU torch; zennit only needs `torchvision.models.resnet.Bottleneck` and `BasicBlock` to exist, so a
minimal stand-in module is put into `sys.modules` before zennit is imported.
"""

from __future__ import annotations

import sys
import types

import pytest


def import_zennit():
    if "torchvision" not in sys.modules:
        torchvision = types.ModuleType("torchvision")
        models = types.ModuleType("torchvision.models")
        resnet = types.ModuleType("torchvision.models.resnet")
        resnet.Bottleneck = type("Bottleneck", (), {})
        resnet.BasicBlock = type("BasicBlock", (), {})
        torchvision.models, models.resnet = models, resnet
        sys.modules.update({"torchvision": torchvision, "torchvision.models": models, "torchvision.models.resnet": resnet})
    return pytest.importorskip("zennit")
