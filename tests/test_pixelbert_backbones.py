"""Backbone construction and loading LOCAL state-dict files (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from harness.errors import VlbenchError
from pixelbert.backbones import ResNetTrunk, TinyCNN, load_backbone_state_dict


@pytest.mark.parametrize("stride,size", [(8, 8), (4, 16), (16, 4)])
def test_tiny_cnn_stride(stride: int, size: int) -> None:
    cnn = TinyCNN((8, 16, 32, 64), stride=stride)
    assert cnn(torch.rand(1, 3, 64, 64)).shape == (1, 64, size, size)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_tiny_cnn_round_trip(tmp_path: Path, suffix: str) -> None:
    source, target = TinyCNN((8, 16), stride=4), TinyCNN((8, 16), stride=4)
    path = tmp_path / f"tiny{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    assert load_backbone_state_dict(target, path) == []
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_resnet_trunk_loads_classifier_state_dict(tmp_path: Path) -> None:
    """A full torchvision classifier file (with fc.*, without num_batches_tracked, like old torchvision files)."""
    torch.manual_seed(0)
    full = torchvision.models.resnet18(weights=None)
    state = {k: v for k, v in full.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    trunk = ResNetTrunk("resnet18")
    assert sorted(load_backbone_state_dict(trunk, path)) == ["fc.bias", "fc.weight"]
    assert torch.equal(trunk.layer4[1].conv2.weight, full.layer4[1].conv2.weight)
    assert trunk.out_channels == 512 and trunk(torch.rand(1, 3, 64, 64)).shape == (1, 512, 2, 2)


def test_mismatches_are_vlbench_errors(tmp_path: Path) -> None:
    with pytest.raises(VlbenchError, match="not found"):
        load_backbone_state_dict(TinyCNN(), tmp_path / "missing.pth")

    path = tmp_path / "wide.pth"
    torch.save(TinyCNN((8, 32), stride=4).state_dict(), path)
    with pytest.raises(VlbenchError, match=r"shape mismatch.*stages\.0\.conv1\.0\.weight \(32, 8, 3, 3\) vs \(16, 8, 3, 3\)"):
        load_backbone_state_dict(TinyCNN((8, 16), stride=4), path)

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(VlbenchError, match=r"missing stem\.0\.weight.*unexpected conv1\.weight"):
        load_backbone_state_dict(TinyCNN((8, 16), stride=4), path)

    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(VlbenchError, match="cannot read"):
        load_backbone_state_dict(TinyCNN(), tmp_path / "junk.pth")
