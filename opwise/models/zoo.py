"""A zoo of real architectures with random weights, for testing the tracer and both engines.

Each case is built offline from a small config (Hugging Face `transformers` for the published
architectures, plain torch for two batch-norm CNNs), seeded, in eval mode, so it traces in seconds on CPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from opwise.errors import ModelLoadError


@dataclasses.dataclass
class ZooCase:
    """A model and the example call to trace: `model(*args, **kwargs)`, selecting `output`."""

    name: str
    model: nn.Module
    args: tuple
    kwargs: dict[str, Any]
    output: str | None


def _transformers():
    try:
        import transformers
    except ImportError as error:
        raise ModelLoadError(
            f"the zoo's Hugging Face models need transformers ({error}); install the extra: pip install 'opwise[zoo]'"
        ) from None
    return transformers


def _tokens(length: int, vocab: int = 100, batch: int = 1) -> torch.Tensor:
    return torch.randint(1, vocab, (batch, length))


def _hf_case(name: str, model_class: str, config: Any, args: tuple, kwargs: dict, output: str | None) -> ZooCase:
    model = getattr(_transformers(), model_class)(config)
    return ZooCase(name, model.eval(), args, kwargs, output)


def _resnet() -> ZooCase:
    config = _transformers().ResNetConfig(
        num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=10
    )
    return _hf_case("resnet", "ResNetForImageClassification", config, (torch.randn(1, 3, 32, 32),), {}, "logits")


def _convnext() -> ZooCase:
    config = _transformers().ConvNextConfig(
        num_channels=3, hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, num_labels=10, patch_size=4
    )
    return _hf_case("convnext", "ConvNextForImageClassification", config, (torch.randn(1, 3, 32, 32),), {}, "logits")


def _vit() -> ZooCase:
    config = _transformers().ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=10,
    )
    return _hf_case("vit", "ViTForImageClassification", config, (torch.randn(1, 3, 32, 32),), {}, "logits")


def _swin() -> ZooCase:
    config = _transformers().SwinConfig(
        image_size=32, patch_size=4, num_channels=3, embed_dim=16, depths=[2, 1], num_heads=[2, 2],
        window_size=4, mlp_ratio=2.0, num_labels=10,
    )
    return _hf_case("swin", "SwinForImageClassification", config, (torch.randn(1, 3, 32, 32),), {}, "logits")


def _bert() -> ZooCase:
    config = _transformers().BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, num_labels=3,
    )
    mask = torch.ones(1, 8, dtype=torch.long)
    mask[0, -2:] = 0
    return _hf_case(
        "bert", "BertForSequenceClassification", config, (_tokens(8),), {"attention_mask": mask}, "logits"
    )


def _gpt2() -> ZooCase:
    config = _transformers().GPT2Config(
        vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2, use_cache=False, bos_token_id=1, eos_token_id=2
    )
    return _hf_case("gpt2", "GPT2LMHeadModel", config, (_tokens(8),), {}, "logits")


def _llama() -> ZooCase:
    config = _transformers().LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, use_cache=False,
    )
    return _hf_case("llama", "LlamaForCausalLM", config, (_tokens(8),), {}, "logits")


def _t5() -> ZooCase:
    config = _transformers().T5Config(
        vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2,
        use_cache=False, decoder_start_token_id=0,
    )
    kwargs = {"decoder_input_ids": _tokens(4)}
    return _hf_case("t5", "T5ForConditionalGeneration", config, (_tokens(8),), kwargs, "logits")


def _whisper() -> ZooCase:
    config = _transformers().WhisperConfig(
        vocab_size=100, num_mel_bins=16, encoder_layers=1, decoder_layers=1, d_model=32,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=16, max_target_positions=16, use_cache=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )
    features = torch.randn(1, 16, 2 * config.max_source_positions)
    kwargs = {"decoder_input_ids": _tokens(4)}
    return _hf_case("whisper", "WhisperForConditionalGeneration", config, (features,), kwargs, "logits")


def _mamba() -> ZooCase:
    config = _transformers().MambaConfig(
        vocab_size=100, hidden_size=32, state_size=8, num_hidden_layers=1, expand=2, conv_kernel=4,
        use_cache=False,
    )
    return _hf_case("mamba", "MambaForCausalLM", config, (_tokens(6),), {"use_cache": False}, "logits")


def _conv_bn(inputs: int, outputs: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU()]


def _randomize_batch_norm(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics, so batch norm is not the identity in eval mode."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            nn.init.normal_(module.weight, 1.0, 0.1)
            nn.init.normal_(module.bias, 0.0, 0.1)
    return model.eval()


def _vgg_bn() -> ZooCase:
    layers = [*_conv_bn(3, 8), *_conv_bn(8, 8), nn.MaxPool2d(2), *_conv_bn(8, 16), nn.MaxPool2d(2)]
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 10))
    return ZooCase("vgg_bn", _randomize_batch_norm(model), (torch.randn(1, 3, 32, 32),), {}, None)


class _ResidualBlock(nn.Module):
    """Two conv-bn stages and a (projected) shortcut, as in ResNet-18's basic block."""

    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(inputs, outputs, stride), *_conv_bn(outputs, outputs)[:2])
        self.shortcut = (
            nn.Identity()
            if stride == 1 and inputs == outputs
            else nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class _SmallResNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 8))
        self.blocks = nn.Sequential(_ResidualBlock(8, 8, 1), _ResidualBlock(8, 16, 2))
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(x))
        return self.head(nn.functional.adaptive_avg_pool2d(features, 1).flatten(1))


def _resnet_bn() -> ZooCase:
    return ZooCase("resnet_bn", _randomize_batch_norm(_SmallResNet()), (torch.randn(1, 3, 32, 32),), {}, None)


ZOO: dict[str, Callable[[], ZooCase]] = {
    "vgg_bn": _vgg_bn,
    "resnet_bn": _resnet_bn,
    "resnet": _resnet,
    "convnext": _convnext,
    "vit": _vit,
    "swin": _swin,
    "bert": _bert,
    "gpt2": _gpt2,
    "llama": _llama,
    "t5": _t5,
    "whisper": _whisper,
    "mamba": _mamba,
}


def zoo_case(name: str, seed: int = 0) -> ZooCase:
    """Build the zoo model `name` with weights and inputs drawn from `seed` (same seed, same case).

    >>> case = zoo_case("vgg_bn")
    >>> tuple(case.model(*case.args, **case.kwargs).shape)
    (1, 10)
    """
    if name not in ZOO:
        raise ModelLoadError(f"unknown zoo model {name!r}; choose one of {sorted(ZOO)}")
    torch.manual_seed(seed)
    return ZOO[name]()
