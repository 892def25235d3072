"""Backbones and FPN: level shapes and strides, norms, frozen layers, weights from a local file, bad input."""
import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detkit.models.backbones import ResNetBackbone, build_backbone
from detkit.models.fpn import FPN, FeaturePyramid
from detkit.models.settings import Backbone, Pyramid


def shapes(features: list[torch.Tensor]) -> list[tuple[int, ...]]:
    return [tuple(f.shape) for f in features]


def test_tiny_backbone_levels_and_strides():
    backbone = build_backbone("tiny", return_levels=(3, 4, 5)).eval()
    assert backbone.strides == [8, 16, 32] and backbone.out_channels == [64, 128, 256]
    assert shapes(backbone(torch.rand(2, 3, 128, 96))) == [(2, 64, 16, 12), (2, 128, 8, 6), (2, 256, 4, 3)]


def test_resnet18_levels_channels_and_frozen_layers():
    backbone = ResNetBackbone("resnet18", norm="bn", return_levels=(2, 3, 4, 5), trainable_layers=3).eval()
    assert backbone.strides == [4, 8, 16, 32] and backbone.out_channels == [64, 128, 256, 512]
    assert shapes(backbone(torch.rand(1, 3, 64, 64))) == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4),
                                                          (1, 512, 2, 2)]
    # trainable_layers=3: layer4, layer3, layer2 train; layer1 and the stem are frozen
    assert not any(p.requires_grad for p in backbone.stem.parameters())
    assert not any(p.requires_grad for p in backbone.layers[0].parameters())
    assert all(p.requires_grad for layer in backbone.layers[1:] for p in layer.parameters())


@pytest.mark.parametrize("norm, norm_type",
                         [("bn", nn.BatchNorm2d), ("frozen_bn", FrozenBatchNorm2d), ("gn", nn.GroupNorm)])
def test_norm_is_selectable(norm, norm_type):
    for backbone in (build_backbone("tiny", norm=norm), build_backbone("resnet18", norm=norm)):
        norms = [m for m in backbone.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d, nn.GroupNorm))]
        assert norms and all(type(m) is norm_type for m in norms)


@pytest.mark.parametrize("norm", ["frozen_bn", "bn"])
def test_resnet_loads_a_local_weights_file(tmp_path, norm):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    for module in reference.modules():  # non-trivial statistics, to see that they are loaded too
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    path = tmp_path / "resnet18_local.pth"
    torch.save(reference.state_dict(), path)
    backbone = ResNetBackbone("resnet18", weights=str(path), norm=norm, return_levels=(3, 4, 5)).eval()
    assert torch.equal(backbone.stem[0].weight, reference.conv1.weight)
    assert torch.equal(backbone.layers[3][1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(backbone.stem[1].running_mean, reference.bn1.running_mean)
    images = torch.rand(1, 3, 64, 64)
    expected = reference.eval().layer4(reference.layer3(reference.layer2(reference.layer1(
        reference.maxpool(reference.relu(reference.bn1(reference.conv1(images))))))))
    torch.testing.assert_close(backbone(images)[-1], expected)


def test_bad_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ResNetBackbone("resnet18", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="unknown weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        ResNetBackbone("resnet18", weights="IMAGENET9K")
    wrong = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), wrong)
    with pytest.raises((ValueError, RuntimeError), match="resnet18"):
        ResNetBackbone("resnet18", weights=str(wrong))
    with pytest.raises(ValueError, match="'tiny' has no pretrained weights"):
        build_backbone("tiny", weights="DEFAULT")
    with pytest.raises(ValueError, match="norm must be one of"):
        build_backbone("tiny", norm="layernorm")
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_backbone("vgg16")


def test_fpn_levels_strides_and_extra_levels():
    fpn = FPN([64, 128, 256], [8, 16, 32], out_channels=32, num_extra_levels=2).eval()
    assert fpn.strides == [8, 16, 32, 64, 128]
    inputs = [torch.rand(1, 64, 13, 10), torch.rand(1, 128, 7, 5), torch.rand(1, 256, 4, 3)]  # odd sizes
    assert shapes(fpn(inputs)) == [(1, 32, 13, 10), (1, 32, 7, 5), (1, 32, 4, 3), (1, 32, 2, 2), (1, 32, 1, 1)]
    with pytest.raises(ValueError, match="strides doubling"):
        FPN([64, 128], [8, 32])


def test_feature_pyramid_top_down_path_carries_coarse_information():
    """Changing only the coarsest backbone map changes the finest pyramid level (the top-down path works)."""
    torch.manual_seed(0)
    pyramid = FeaturePyramid(backbone=Backbone(name="tiny", norm="bn"),
                             fpn=Pyramid(min_level=3, channels=16, extra_levels=0)).eval()
    assert pyramid.strides == [8, 16, 32]
    body, fpn = pyramid.body, pyramid.fpn
    features = body(torch.rand(1, 3, 64, 64))
    changed = features[:-1] + [features[-1] + 1.0]
    assert not torch.allclose(fpn(features)[0], fpn(changed)[0])
