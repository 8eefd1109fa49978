"""The write-up's PSPNet (paper 004): two-conv stem encoder, pyramid pooling 1/2/3/6, decoder.

The write-up's own network uses a 2-layer strided stem (3->256->512, /4) instead of a ResNet;
``smp:PSPNet/resnet50`` is the library version with a real backbone. The optional auxiliary
head (PSPNet paper, loss weight 0.4) reads the first stem stage; in train mode the model then
returns [aux, main] with weights [0.4, 1.0], in eval mode only the main logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lesionbench.models.base import SegmentationModel
from lesionbench.models.registry import register_model


def conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class StemEncoder(nn.Module):
    """Two stride-2 3x3 conv-BN-ReLU layers: stage1 (C/2, /2), stage2 (C, /4)."""

    def __init__(self, c: int = 512) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(*conv_bn_relu(3, c // 2, 3, 2))
        self.stage2 = nn.Sequential(*conv_bn_relu(c // 2, c, 3, 2))

    def stages(self) -> dict[str, nn.Module]:
        return {"stage1": self.stage1, "stage2": self.stage2}

    def forward(self, x: Tensor) -> list[Tensor]:
        f1 = self.stage1(x)
        return [f1, self.stage2(f1)]


class PyramidPooling(nn.Module):
    """Average-pool to 1/2/3/6 grids, 1x1 conv to C/4 each, upsample, concat, 1x1 fuse to C."""

    def __init__(self, c: int, sizes: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        r = c // len(sizes)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), *conv_bn_relu(c, r, 1)) for s in sizes)
        self.bottleneck = nn.Sequential(*conv_bn_relu(c + r * len(sizes), c, 1))

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pyr = [x] + [F.interpolate(b(x), size=size, mode="bilinear", align_corners=False) for b in self.branches]
        return self.bottleneck(torch.cat(pyr, 1))


class PSPDecoder(nn.Module):
    """Pyramid pooling then a 3x3 conv-BN-ReLU to 256 channels; passes the aux input through."""

    def __init__(self, c: int, sizes: tuple[int, ...], out: int = 256) -> None:
        super().__init__()
        self.ppm = PyramidPooling(c, sizes)
        self.conv = nn.Sequential(*conv_bn_relu(c, out, 3))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        return [feats[0], self.conv(self.ppm(feats[-1]))]


class PSPHead(nn.Module):
    """1x1 conv to logits; with ``aux`` also a small head on the stem's first stage."""

    def __init__(self, c_aux: int, c: int, num_classes: int, aux: bool) -> None:
        super().__init__()
        self.main = nn.Conv2d(c, num_classes, 1)
        self.aux = nn.Sequential(*conv_bn_relu(c_aux, 64, 3), nn.Dropout2d(0.1),
                                 nn.Conv2d(64, num_classes, 1)) if aux else None

    def forward(self, feats: list[Tensor]) -> Tensor | list[Tensor]:
        main = self.main(feats[-1])
        if self.aux is None or not self.training:
            return main
        aux = F.interpolate(self.aux(feats[0]), size=main.shape[-2:], mode="bilinear", align_corners=False)
        return [aux, main]


class PSPNet(SegmentationModel):
    """PSPNet of paper 004; stages encoder, encoder.stage1/2, decoder, head."""

    default_input_size = 256
    size_multiple = 4  # two stride-2 convs; pyramid pooling takes any size

    def __init__(self, num_classes: int = 1, backbone_features: int = 512,
                 pool_sizes: tuple[int, ...] = (1, 2, 3, 6), aux: bool = False) -> None:
        super().__init__()
        self.encoder = StemEncoder(backbone_features)
        self.decoder = PSPDecoder(backbone_features, tuple(pool_sizes))
        self.head = PSPHead(backbone_features // 2, 256, num_classes, aux)
        self.deep_supervision_weights = [0.4, 1.0] if aux else None

    def cam_layers(self) -> dict[str, nn.Module]:
        return {"last": self.decoder.conv, "bottleneck": self.decoder.ppm}


@register_model(source="paper 004", input_size=256)
def pspnet(num_classes: int = 1, backbone_features: int = 512, pool_sizes: tuple[int, ...] = (1, 2, 3, 6),
           aux: bool = False) -> PSPNet:
    """PSPNet with the write-up's two-conv stem and pyramid pooling (1, 2, 3, 6)."""
    return PSPNet(num_classes, backbone_features, pool_sizes, aux)


@register_model(source="test", input_size=64, heads=2)
def test_pspnet(num_classes: int = 1, aux: bool = True) -> PSPNet:
    """Narrow PSPNet with the auxiliary head, for fast tests."""
    return PSPNet(num_classes, 32, (1, 2, 3, 6), aux)
