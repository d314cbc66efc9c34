"""The hand-written attention computes standard multi-head attention."""

from __future__ import annotations

import torch

from opwise.models.transformer import DigitsTransformer, SelfAttention


def test_self_attention_matches_scaled_dot_product_attention():
    torch.manual_seed(0)
    attention = SelfAttention(width=12, heads=3).eval()
    x = torch.randn(2, 5, 12)
    layers = (attention.query, attention.key, attention.value)
    q, k, v = (layer(x).reshape(2, 5, 3, 4).transpose(1, 2) for layer in layers)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 5, 12)
    assert torch.allclose(attention(x), attention.project(expected), atol=1e-6)


def test_rows_are_tokens():
    torch.manual_seed(0)
    model = DigitsTransformer().eval()
    images = torch.rand(1, 1, 8, 8)
    swapped = images[:, :, torch.tensor([1, 0, 2, 3, 4, 5, 6, 7])]
    # Learned positions make the model row-order aware; with them zeroed, mean pooling makes it row-order invariant.
    with torch.no_grad():
        model.position.zero_()
        assert torch.allclose(model(images), model(swapped), atol=1e-5)
