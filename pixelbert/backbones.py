"""CNN backbones that turn images into a feature map [B, C, h, w].

- ``TinyCNN``: a few residual conv-BN-ReLU stages, cheap enough to train from scratch on a CPU.
- ``ResNetTrunk``: a torchvision ResNet / ResNeXt cut after res5 (``layer4``): no average pool, no classifier.
  Built with ``weights=None`` (nothing is downloaded); ImageNet weights come from a local file through
  :func:`load_backbone_state_dict`.

Every backbone has ``out_channels`` and ``stride`` so the pixel encoder can size its projection.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from harness.errors import VlbenchError
from pixelbert.config import VisualConfig


def _conv_bn(in_ch: int, out_ch: int, stride: int, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs plus a shortcut (1x1 conv when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(in_ch, out_ch, stride)
        self.conv2 = _conv_bn(out_ch, out_ch, 1, relu=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class TinyCNN(nn.Module):
    """A stem conv plus one residual block per further entry of ``channels``.

    The first log2(stride) layers (stem included) downsample by 2, the rest keep the resolution, so a
    64x64 image at stride 8 gives an 8x8 map with ``channels[-1]`` channels.
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128, 256), stride: int = 8) -> None:
        super().__init__()
        downsamples = int(math.log2(stride)) if stride >= 1 else -1
        if downsamples < 0 or 2**downsamples != stride or downsamples > len(channels):
            raise VlbenchError(f"tiny CNN: stride {stride} needs a power of two <= 2 ** {len(channels)}")
        strides = [2] * downsamples + [1] * (len(channels) - downsamples)
        self.stem = _conv_bn(3, channels[0], strides[0])
        self.stages = nn.Sequential(
            *(ResidualBlock(channels[i - 1], channels[i], strides[i]) for i in range(1, len(channels)))
        )
        self.out_channels = channels[-1]
        self.stride = stride

    def forward(self, images: Tensor) -> Tensor:
        return self.stages(self.stem(images))


class ResNetTrunk(nn.Module):
    """A torchvision ResNet/ResNeXt up to ``layer4`` (res5); output stride 32.

    The submodules keep torchvision's names (conv1, bn1, layer1..layer4), so an ImageNet state dict for the full
    classifier loads here once its ``fc.*`` keys are dropped.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        import torchvision

        try:
            full = getattr(torchvision.models, name)(weights=None)
        except AttributeError:
            raise VlbenchError(f"torchvision has no model {name!r}") from None
        self.conv1, self.bn1, self.relu, self.maxpool = full.conv1, full.bn1, full.relu, full.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = full.layer1, full.layer2, full.layer3, full.layer4
        self.out_channels = full.fc.in_features
        self.stride = 32

    def forward(self, images: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def build_backbone(config: VisualConfig) -> nn.Module:
    """The CNN named by ``config.backbone``, randomly initialised (load weights with load_backbone_state_dict)."""
    if config.backbone == "tiny_cnn":
        return TinyCNN(config.cnn_channels, config.cnn_stride)
    return ResNetTrunk(config.backbone)


# Keys of an ImageNet classifier that a truncated trunk does not have; they are skipped, not errors.
_CLASSIFIER_PREFIXES = ("fc.",)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types; all mean "not a usable weights file"
        raise VlbenchError(f"{path}: cannot read as a torch state dict ({str(exc).splitlines()[0]})") from None
    # Some checkpoints wrap the weights: {"state_dict": {...}} or {"model": {...}}.
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise VlbenchError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    return state


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def load_backbone_state_dict(backbone: nn.Module, path: str | Path) -> list[str]:
    """Load a LOCAL state dict (``.pth``/``.pt`` via torch.load(weights_only=True), or ``.safetensors``).

    Classifier keys (``fc.*``) are ignored; every other key must match the backbone by name and shape.
    Returns the ignored keys. Raises VlbenchError on a missing file or any mismatch, naming a few keys.
    """
    path = Path(path)
    if not path.is_file():
        raise VlbenchError(f"{path}: backbone weights file not found")
    state = _read_state_dict(path)
    # DataParallel checkpoints prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}

    ignored = [k for k in state if k.startswith(_CLASSIFIER_PREFIXES)]
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    expected = backbone.state_dict()
    # Old torchvision files predate BatchNorm's num_batches_tracked counter; it is not a weight.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        raise VlbenchError(f"{path}: keys do not match the {type(backbone).__name__} backbone: {'; '.join(parts)}")
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items() if v.shape != expected[k].shape
    ]
    if wrong:
        raise VlbenchError(f"{path}: shape mismatch (file vs backbone): {_few(wrong, 3)}")
    backbone.load_state_dict(state, strict=False)
    return ignored
