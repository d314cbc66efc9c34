"""torchvision and timm architectures a new user brings (random weights, shrunk where the class allows, batch 1):
each is explained (finite relevance shaped as the input) and bounded by IBP and CROWN over an L∞ ball of 1e-3, the
bounds finite and holding 200 sampled outputs. The zoo found PoolFormer's non-contiguous group norm, the refusal
that blamed Python state for amplified rounding, and CROWN looser than IBP on normalised nets (see CHANGELOG).

Batch-norm statistics are taken from random images first: torchvision's init (running mean 0, variance 1) makes
most outputs vanish (1e-10, MobileNet) or explode, which tests nothing. Networks whose CROWN pass takes minutes at
this size on one core (ResNet-18, MobileNet-V2 and V3, EfficientNet, RegNet, GoogLeNet, LeViT, MobileViT) are explained
and bounded by IBP only."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

import opwise
from tests.bounds.helpers import assert_sound

pytestmark = pytest.mark.slow


def _import_torchvision():
    try:
        import torchvision
    except ImportError:
        pytest.skip("torchvision is not installed", allow_module_level=True)
    except RuntimeError:  # a CUDA wheel beside CPU torch: its C++ operators do not load, and registering their
        # fake kernels fails at import; the models need none of them
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        import torchvision
    return torchvision


tv = _import_torchvision().models
timm = pytest.importorskip("timm")


def _torchvision(name, **options):
    return lambda: getattr(tv, name)(num_classes=10, **options)


def _timm(name):
    return lambda: timm.create_model(name, pretrained=False, num_classes=10)


#: name: (build, image size, whether CROWN runs in seconds)
MODELS = {
    "resnet18": (_torchvision("resnet18"), 32, False),
    "mobilenet_v2": (_torchvision("mobilenet_v2"), 32, False),
    "mobilenet_v3_small": (_torchvision("mobilenet_v3_small"), 32, False),
    "shufflenet_v2_x0_5": (_torchvision("shufflenet_v2_x0_5"), 32, True),
    "squeezenet1_1": (_torchvision("squeezenet1_1"), 32, False),
    "densenet_tiny": (lambda: tv.DenseNet(growth_rate=4, block_config=(1, 1), num_init_features=8, num_classes=10), 32, True),
    "efficientnet_b0": (_torchvision("efficientnet_b0"), 32, False),
    "regnet_x_400mf": (_torchvision("regnet_x_400mf"), 32, False),
    "mnasnet0_5": (_torchvision("mnasnet0_5"), 32, False),
    "googlenet": (_torchvision("googlenet", aux_logits=False, init_weights=True), 32, False),
    "vit_tiny": (lambda: tv.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
                                              mlp_dim=32, num_classes=10), 32, True),
    "convnext_tiny": (lambda: tv.convnext.ConvNeXt([tv.convnext.CNBlockConfig(8, 16, 1), tv.convnext.CNBlockConfig(16, None, 1)],
                                                   num_classes=10), 32, True),
    "swin_tiny": (lambda: tv.swin_transformer.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                                              window_size=[2, 2], num_classes=10), 32, True),
    "timm_resnet10t": (_timm("resnet10t"), 32, True),
    "timm_mobilevitv2_050": (_timm("mobilevitv2_050"), 64, False),
    "timm_efficientvit_b0": (_timm("efficientvit_b0"), 64, False),
    "timm_levit_128s": (lambda: timm.create_model("levit_128s", pretrained=False, num_classes=10, img_size=64), 64, False),
    "timm_tiny_vit": (lambda: timm.models.tiny_vit.TinyVit(num_classes=10, depths=(1, 1, 1, 1), embed_dims=(8, 16, 24, 32),
                                                           num_heads=(1, 1, 1, 2), window_sizes=(2, 2, 2, 2)), 64, False),
    "timm_convmixer": (lambda: timm.models.convmixer.ConvMixer(dim=16, depth=2, kernel_size=3, patch_size=4, num_classes=10), 32, True),
    "timm_poolformer": (lambda: timm.models.metaformer.MetaFormer(
        depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=10, token_mixers=timm.models.metaformer.Pooling,
        mlp_act=nn.GELU, mlp_bias=True, norm_layers=timm.models.metaformer.GroupNorm1, layer_scale_init_values=1e-5,
        res_scale_init_values=None, use_mlp_head=False), 32, True),
    "timm_ghostnet_050": (_timm("ghostnet_050"), 32, False),
    "timm_rexnet_100": (_timm("rexnet_100"), 32, False),
    "timm_lcnet_050": (_timm("lcnet_050"), 32, True),
    "timm_mixer_tiny": (lambda: timm.models.mlp_mixer.MlpMixer(num_classes=10, img_size=32, patch_size=8, num_blocks=2,
                                                               embed_dim=16), 32, True),
    "timm_cait_tiny": (lambda: timm.models.cait.Cait(img_size=32, patch_size=8, embed_dim=16, depth=1, depth_token_only=1,
                                                     num_heads=2, num_classes=10), 32, True),
    "timm_xcit_tiny": (lambda: timm.models.xcit.Xcit(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                                                     cls_attn_layers=1, num_classes=10), 32, True),
    "timm_mobilenetv4": (_timm("mobilenetv4_conv_small"), 32, False),
}


def _calibrated(model: nn.Module, size: int) -> nn.Module:
    """Zero-initialised weight matrices (torchvision's ViT head) drawn at random, batch-norm statistics from 32
    random images, then eval mode."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2 and not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter.shape[-1] ** 0.5)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    if norms:
        model.train()
        with torch.no_grad():
            model(torch.rand(32, 3, size, size, generator=torch.Generator().manual_seed(5)))
    return model.eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zoo_model_is_explained_and_bounded_soundly(name):
    torch.set_num_threads(1)
    build, size, crown = MODELS[name]
    torch.manual_seed(0)
    model = _calibrated(build(), size)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    explanation = opwise.explain(model, x)
    assert explanation.relevance.shape == x.shape and torch.isfinite(explanation.relevance).all()
    methods = ("ibp", "crown") if crown else ("ibp",)
    results = assert_sound(model, x - 1e-3, x + 1e-3, methods=methods, samples=200, attack=False)
    if crown:
        assert torch.isfinite(results["crown"].lower).all() and torch.isfinite(results["crown"].upper).all()
