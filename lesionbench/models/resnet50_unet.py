"""ResNet-50 U-Net for Kvasir-SEG (paper 002, 256x256, single-channel logits).

The write-up fixes the encoder taps (64/256/512/1024/2048 at strides 2..32), "transposed-conv
x2 upsampling + double conv block at each level" and concatenated skips; it does not give
decoder widths. We take 512/256/128/64 at strides 16/8/4/2 and a fifth up-step to full
resolution (32 ch, no skip), the usual ResNet-U-Net layout, and save/load ``model.safetensors``
through ``save_pretrained`` / ``load_pretrained`` as the write-up's usage snippet does.
"""

from __future__ import annotations

from torch import Tensor, nn

from lesionbench.models.base import SegmentationModel
from lesionbench.models.blocks import UpBlock
from lesionbench.models.encoders import ResNetEncoder
from lesionbench.models.registry import register_model
from lesionbench.models.weights import DEFAULT_WEIGHTS


class ResNetUNetDecoder(nn.Module):
    """Up-steps from stride 32 to 1; each ConvTranspose2d(x2) -> concat skip -> DoubleConv."""

    def __init__(self, enc_ch: list[int], widths: tuple[int, ...] = (512, 256, 128, 64, 32)) -> None:
        super().__init__()
        skips = [enc_ch[3], enc_ch[2], enc_ch[1], enc_ch[0], 0]
        ins = [enc_ch[4], *widths[:-1]]
        self.blocks = nn.ModuleList(
            UpBlock(i, s, o, up_ch=o) for i, s, o in zip(ins, skips, widths, strict=False))
        self.out_channels = widths[-1]

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = feats[-1]
        skips = [feats[3], feats[2], feats[1], feats[0], None]
        for block, skip in zip(self.blocks, skips, strict=False):
            x = block(x, skip)
        return x


class ResNetUNet(SegmentationModel):
    """U-Net on a torchvision ResNet; stages encoder.conv1..conv5, decoder, head."""

    default_input_size = 256

    def __init__(self, num_classes: int = 1, weights: str = DEFAULT_WEIGHTS, depth: int = 50,
                 decoder_channels: tuple[int, ...] = (512, 256, 128, 64, 32)) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(depth, weights)
        self.decoder = ResNetUNetDecoder(self.encoder.channels, tuple(decoder_channels))
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, 1)

    def cam_layers(self) -> dict[str, nn.Module]:
        return {"last": self.decoder.blocks[-1], "bottleneck": self.encoder.layer4}


@register_model(source="paper 002", input_size=256, encoder="torchvision:resnet50")
def resnet50_unet(num_classes: int = 1, weights: str = DEFAULT_WEIGHTS,
                  decoder_channels: tuple[int, ...] = (512, 256, 128, 64, 32)) -> ResNetUNet:
    """ResNet-50 encoder U-Net, transposed-conv up-steps + double conv (Kvasir-SEG)."""
    return ResNetUNet(num_classes, weights, 50, decoder_channels)


@register_model(source="test", input_size=64, encoder="torchvision:resnet18")
def test_resnet_unet(num_classes: int = 1, weights: str = "none") -> ResNetUNet:
    """ResNet-18 U-Net with a narrow decoder, for fast tests."""
    return ResNetUNet(num_classes, weights, 18, (32, 16, 16, 8, 8))
