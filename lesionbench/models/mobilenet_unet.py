"""MobileNetV2 encoder + AdvancedDecoder (paper 001, ISIC 2016, 128x128 input).

The write-up gives module names (up1/conv1/up2/conv2/up3/conv3, final conv, upsample to target)
and a parameter table, not channel widths. The table is the spec: total 6,995,457; encoder
frozen -> 4,771,585 trainable (the decoder) + 2,223,872 frozen (``features``); stage 4
unfrozen -> 6,452,929 trainable + 542,528 frozen (``features[:14]``).

Decoder search (re-run by ``tests/test_mobilenet_decoder_search.py``): skips from the stride-16/8/4 boundaries
(96/32/24 or 64/32/24 ch, also 16/24/32/64/96/160/1280 alternatives), ConvTranspose2d kernel
2/3/4 with/without bias, 3x3 conv with/without bias, with/without BatchNorm, up and conv
widths independently in {16..1024} (16 values) -> 5,323 exact solutions, nearly all
arbitrary. Requiring monotone widths and a regular pattern (up keeps the conv width, or up
halves it, or up = skip width) leaves 4, of which exactly one uses the natural MobileNetV2
skips (96/32/24) with standard layers:

    up1 ConvT(1280->512, k2 s2, bias)                   2,621,952
    conv1 Conv(512+96 -> 256, 3x3, bias) + BN             1,401,600
    up2 ConvT(256->256, k2 s2, bias)                        262,400
    conv2 Conv(256+32 -> 128, 3x3, bias) + BN               332,160
    up3 ConvT(128->128, k2 s2, bias)                         65,664
    conv3 Conv(128+24 -> 64, 3x3, bias) + BN                 87,744
    final_conv Conv(64 -> 1, 1x1)                                65
    total                                                 4,771,585  (exact, gap 0)

Dilation does not change parameter counts; we take dilation 2 (padding 2) in every
DilatedConvBlock, a choice the write-up leaves open. The last up-step leaves /4 resolution;
the parameter-free ``upsample_to_target`` (bilinear) restores the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lesionbench.models.base import SegmentationModel
from lesionbench.models.encoders import MobileNetV2Encoder
from lesionbench.models.registry import register_model
from lesionbench.models.weights import DEFAULT_WEIGHTS


class DilatedConvBlock(nn.Module):
    """3x3 dilated conv -> BN -> ReLU (names as in the write-up's appendix)."""

    def __init__(self, cin: int, cout: int, dilation: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class AdvancedDecoder(nn.Module):
    """Three ConvTranspose up-steps merging the stage 3, 2, 1 skips, then DilatedConvBlocks."""

    def __init__(self, enc_ch: list[int], widths: tuple[int, int, int] = (512, 256, 128),
                 outs: tuple[int, int, int] = (256, 128, 64), dilation: int = 2) -> None:
        super().__init__()
        s1, s2, s3, deep = enc_ch
        self.up1 = nn.ConvTranspose2d(deep, widths[0], 2, stride=2)
        self.conv1 = DilatedConvBlock(widths[0] + s3, outs[0], dilation)
        self.up2 = nn.ConvTranspose2d(outs[0], widths[1], 2, stride=2)
        self.conv2 = DilatedConvBlock(widths[1] + s2, outs[1], dilation)
        self.up3 = nn.ConvTranspose2d(outs[1], widths[2], 2, stride=2)
        self.conv3 = DilatedConvBlock(widths[2] + s1, outs[2], dilation)
        self.out_channels = outs[2]

    def forward(self, feats: list[Tensor]) -> Tensor:
        f1, f2, f3, f4 = feats
        x = self.conv1(torch.cat([_fit(self.up1(f4), f3), f3], 1))
        x = self.conv2(torch.cat([_fit(self.up2(x), f2), f2], 1))
        return self.conv3(torch.cat([_fit(self.up3(x), f1), f1], 1))


def _fit(x: Tensor, ref: Tensor) -> Tensor:
    """Inputs not divisible by 32 leave the up-step a pixel off; resize to the skip."""
    return x if x.shape[-2:] == ref.shape[-2:] else F.interpolate(x, size=ref.shape[-2:], mode="nearest")


class MobileNetUNet(SegmentationModel):
    """MobileNetV2 U-Net of paper 001; stages encoder.stage1..stage4, decoder, head."""

    default_input_size = 128

    def __init__(self, num_classes: int = 1, weights: str = DEFAULT_WEIGHTS, dilation: int = 2) -> None:
        super().__init__()
        self.encoder = MobileNetV2Encoder(weights)
        self.decoder = AdvancedDecoder(self.encoder.channels, dilation=dilation)
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, 1)  # decoder.final_conv

    def cam_layers(self) -> dict[str, nn.Module]:
        return {"last": self.decoder.conv3, "bottleneck": self.encoder.features[18]}


@register_model(source="paper 001", input_size=128, encoder="torchvision:mobilenet_v2")
def mobilenet_unet(num_classes: int = 1, weights: str = DEFAULT_WEIGHTS, dilation: int = 2) -> MobileNetUNet:
    """MobileNetV2 encoder + AdvancedDecoder (6,995,457 params, matching the write-up)."""
    return MobileNetUNet(num_classes, weights, dilation)
