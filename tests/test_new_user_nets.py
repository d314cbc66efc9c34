"""Nets a new user brings, built by hand with random weights, mixing common layers in ways the other tests do not:
Swin-style shifted-window attention, a TCN of dilated causal Conv1d with weight norm, a ConvNeXt block (depthwise conv,
layer norm over channels-last), a SwiGLU MLP with RMS norm and GLU, an EfficientNet MBConv with squeeze-excite,
nn.EmbeddingBag with per-sample weights, a DeepSets head with sort pooling and nn.Bilinear, and a conv head with
hardshrink, bicubic upsampling, log-sigmoid gating and topk. Each is explained (relevance conserved once biases are
zero, where every rule on its path conserves) and bounded soundly by IBP and CROWN."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import opwise
from tests.bounds.helpers import assert_sound



class WindowAttention(nn.Module):
    """Swin-like: shifted windows (roll), window partition, relative position bias, softmax, merge."""
    def __init__(s, dim=8, window=2, heads=2):
        super().__init__(); s.w, s.h = window, heads; s.embed = nn.Conv2d(1, dim, 2, 2)
        s.qkv, s.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim); s.norm = nn.LayerNorm(dim)
        s.bias = nn.Parameter(torch.randn(heads, window * window, window * window) * 0.1); s.head = nn.Linear(dim, 3)
    def forward(s, x):
        x = s.embed(x).permute(0, 2, 3, 1)  # B H W C
        B, H, W, C = x.shape; w = s.w
        shifted = torch.roll(s.norm(x), (-1, -1), (1, 2))
        win = shifted.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)
        q, k, v = s.qkv(win).reshape(win.shape[0], w * w, 3, s.h, C // s.h).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) * (C // s.h) ** -0.5 + s.bias
        out = (att.softmax(-1) @ v).transpose(1, 2).reshape(-1, w * w, C)
        out = s.proj(out).view(B, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
        x = x + torch.roll(out, (1, 1), (1, 2))
        return s.head(x.mean((1, 2)))

class TCN(nn.Module):
    """Dilated causal Conv1d blocks (left padding), weight norm, residual, ReLU."""
    def __init__(s, c=4):
        super().__init__(); s.inp = nn.Conv1d(2, c, 1)
        s.convs = nn.ModuleList([nn.utils.parametrizations.weight_norm(nn.Conv1d(c, c, 3, dilation=d)) for d in (1, 2, 4)])
        s.out = nn.Linear(c, 2)
    def forward(s, x):
        h = s.inp(x)
        for conv in s.convs:
            d = conv.dilation[0]
            h = h + F.relu(conv(F.pad(h, (2 * d, 0))))
        return s.out(h[:, :, -1])

class ConvNeXtBlock(nn.Module):
    def __init__(s, c=4):
        super().__init__(); s.stem = nn.Conv2d(3, c, 2, 2); s.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        s.norm = nn.LayerNorm(c, eps=1e-6); s.pw1, s.pw2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        s.gamma = nn.Parameter(torch.full((c,), 0.5)); s.head = nn.Linear(c, 3)
    def forward(s, x):
        x = s.stem(x); h = s.dw(x).permute(0, 2, 3, 1)
        h = s.pw2(F.gelu(s.pw1(s.norm(h)))) * s.gamma
        x = x + h.permute(0, 3, 1, 2)
        return s.head(x.mean((-2, -1)))

class SwiGLU(nn.Module):
    def __init__(s, d=6, hidden=8):
        super().__init__(); s.norm = nn.RMSNorm(d); s.w1, s.w3 = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
        s.w2 = nn.Linear(hidden, d, bias=False); s.glu = nn.Linear(d, 2 * d); s.head = nn.Linear(d, 3)
    def forward(s, x):
        h = s.norm(x); x = x + s.w2(F.silu(s.w1(h)) * s.w3(h))
        return s.head(F.glu(s.glu(x), -1))

class MBConvSE(nn.Module):
    """EfficientNet MBConv: expand 1x1, BN, SiLU, depthwise 3x3, BN, SiLU, squeeze-excite, project, residual."""
    def __init__(s, c=4, e=8):
        super().__init__(); s.stem = nn.Conv2d(3, c, 3, padding=1)
        s.expand = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.SiLU())
        s.dw = nn.Sequential(nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), nn.BatchNorm2d(e), nn.SiLU())
        s.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(e, 2, 1), nn.SiLU(), nn.Conv2d(2, e, 1), nn.Sigmoid())
        s.project = nn.Sequential(nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c)); s.head = nn.Linear(c, 3)
    def forward(s, x):
        x = s.stem(x); h = s.dw(s.expand(x)); h = h * s.se(h)
        return s.head((x + s.project(h)).mean((-2, -1)))

class BagOfWords(nn.Module):
    """EmbeddingBag (sum) with per-sample weights as the explained/bounded input; fixed token ids."""
    def __init__(s):
        super().__init__(); s.bag = nn.EmbeddingBag(20, 6, mode="sum"); s.head = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2))
        s.register_buffer("ids", torch.tensor([[1, 4, 7, 9, 3], [2, 2, 5, 11, 0]]))
    def forward(s, weights):
        ids = s.ids.repeat(weights.shape[0] // 2, 1)  # sampled points of both samples, in turn
        return s.head(s.bag(ids, per_sample_weights=weights))

class SetPooling(nn.Module):
    """DeepSets with sort pooling and a bilinear interaction, softshrink features."""
    def __init__(s):
        super().__init__(); s.phi = nn.Linear(3, 4); s.bil = nn.Bilinear(4, 4, 3); s.out = nn.Linear(3 + 5, 2)
    def forward(s, x):  # x: B, 5 elements, 3
        h = F.softshrink(s.phi(x), 0.2)
        top = torch.sort(h[..., 0], -1, descending=True).values
        pooled = h.max(1).values
        return s.out(torch.cat([s.bil(pooled, pooled), top], -1))

class TinyMixerLogSigmoid(nn.Module):
    """GroupNorm(1) conv stem, hardshrink, bicubic upsample, logsigmoid gating, topk pooling."""
    def __init__(s):
        super().__init__(); s.conv = nn.Conv2d(2, 4, 3, padding=1); s.norm = nn.GroupNorm(1, 4); s.conv2 = nn.Conv2d(4, 2, 3, stride=2)
        s.head = nn.Linear(3, 2)
    def forward(s, x):
        h = F.hardshrink(s.norm(s.conv(x)), 0.1)
        h = F.interpolate(s.conv2(h), scale_factor=2, mode="bicubic") * F.logsigmoid(h[:, :2, :6, :6])
        return s.head(torch.topk(h.flatten(1), 3).values)


NETS = {
    "swin_window": (WindowAttention, (1, 1, 8, 8)),
    "tcn": (TCN, (2, 2, 12)),
    "convnext": (ConvNeXtBlock, (1, 3, 8, 8)),
    "swiglu": (SwiGLU, (2, 6)),
    "mbconv_se": (MBConvSE, (1, 3, 6, 6)),
    "embedding_bag": (BagOfWords, (2, 5)),
    "set_pooling": (SetPooling, (2, 5, 3)),
    "mixer_logsig": (TinyMixerLogSigmoid, (1, 2, 8, 8)),
}
#: softmax's and the normalizers' rules (AttnLRP) do not conserve relevance exactly; checked for soundness only
NOT_CONSERVED = {"swin_window"}
SLOW = {"swin_window", "convnext", "mbconv_se", "mixer_logsig"}


def _build(name: str, without_biases: bool) -> tuple[nn.Module, torch.Tensor]:
    build, shape = NETS[name]
    torch.manual_seed(1)
    model = build().eval()
    if without_biases:
        with torch.no_grad():
            for parameter_name, parameter in model.named_parameters():
                if parameter_name.endswith("bias"):
                    parameter.zero_()
            for buffer_name, buffer in model.named_buffers():
                if buffer_name.endswith("running_mean"):
                    buffer.zero_()
    return model, torch.rand(shape, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NETS])
def test_new_user_net_is_explained_and_bounded_soundly(name):
    model, x = _build(name, without_biases=name not in NOT_CONSERVED)
    explanation = opwise.explain(model, x)
    total, output = explanation.conservation.unbind(-1)
    if name not in NOT_CONSERVED:
        torch.testing.assert_close(total, output, rtol=2e-3, atol=1e-4)
    assert_sound(model, x - 0.01, x + 0.01, methods=("ibp", "crown"), samples=500, attack=False)
