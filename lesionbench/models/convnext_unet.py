"""U-Net with a ConvNeXt-Tiny encoder, residual decoder blocks and attention gates (paper 003).

The write-up (ISIC 2018 Task 2, five attribute masks) names the parts, not the widths: the
timm ``convnext_tiny`` features (96/192/384/768 ch at /4../32) feed four attention-gated,
residual up-steps back to /4, then two more transposed-conv up-steps (48, 32 ch) reach full
resolution, since ConvNeXt's stem already downsamples by 4. Pass ``num_classes=5`` for Task 2.
"""

from __future__ import annotations

from torch import Tensor, nn

from lesionbench.models.base import SegmentationModel
from lesionbench.models.blocks import UpBlock
from lesionbench.models.encoders import TimmEncoder
from lesionbench.models.registry import register_model
from lesionbench.models.weights import DEFAULT_WEIGHTS


class AttentionResidualDecoder(nn.Module):
    """Up-steps /32 -> /16 -> /8 -> /4 with gated skips, then /4 -> /2 -> /1 without skips."""

    def __init__(self, enc_ch: list[int], tail: tuple[int, int] = (48, 32)) -> None:
        super().__init__()
        c1, c2, c3, c4 = enc_ch[-4:]
        self.blocks = nn.ModuleList([
            UpBlock(c4, c3, c3, attention=True, residual=True, up_ch=c3),
            UpBlock(c3, c2, c2, attention=True, residual=True, up_ch=c2),
            UpBlock(c2, c1, c1, attention=True, residual=True, up_ch=c1),
            UpBlock(c1, 0, tail[0], residual=True, up_ch=tail[0]),
            UpBlock(tail[0], 0, tail[1], residual=True, up_ch=tail[1]),
        ])
        self.out_channels = tail[1]

    def forward(self, feats: list[Tensor]) -> Tensor:
        f1, f2, f3, x = feats[-4:]
        for block, skip in zip(self.blocks, (f3, f2, f1, None, None), strict=False):
            x = block(x, skip)
        return x


class ConvNeXtUNet(SegmentationModel):
    """ConvNeXt U-Net; stages encoder, encoder.stage1..stage4, decoder, head."""

    default_input_size = 256

    def __init__(self, num_classes: int = 5, weights: str = DEFAULT_WEIGHTS,
                 encoder: str = "convnext_tiny") -> None:
        super().__init__()
        self.encoder = TimmEncoder(encoder, weights)
        self.decoder = AttentionResidualDecoder(self.encoder.channels)
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, 1)

    def cam_layers(self) -> dict[str, nn.Module]:
        return {"last": self.decoder.blocks[-1], "bottleneck": list(self.encoder.stages().values())[-1]}


@register_model(source="paper 003", input_size=256, encoder="timm:{encoder}")
def unet_convnext_attention(num_classes: int = 5, weights: str = DEFAULT_WEIGHTS,
                            encoder: str = "convnext_tiny") -> ConvNeXtUNet:
    """ConvNeXt-Tiny encoder, residual + attention-gated decoder (ISIC 2018 Task 2)."""
    return ConvNeXtUNet(num_classes, weights, encoder)


@register_model(source="test", input_size=64, encoder="timm:convnext_atto")
def test_unet_convnext(num_classes: int = 1, weights: str = "none") -> ConvNeXtUNet:
    """ConvNeXt-Atto variant, for fast tests."""
    return ConvNeXtUNet(num_classes, weights, "convnext_atto")
