"""Classic U-Net and its residual / attention variants (papers 003 and 004).

Layout follows the widely used PyTorch U-Net (milesial/Pytorch-UNet, whose ``bilinear`` switch
paper 003 exposes): 64-128-256-512 + 1024 bottleneck, ConvTranspose2d up-steps; with
``bilinear: true`` the bottleneck is halved and up-steps are parameter-free.
"""

from __future__ import annotations

from torch import Tensor, nn

from lesionbench.models.base import SegmentationModel
from lesionbench.models.blocks import DoubleConv, ResidualBlock, UpBlock
from lesionbench.models.registry import register_model


class UNetEncoder(nn.Module):
    """stage1 (full res) .. stage4 (/8), bottleneck (/16)."""

    def __init__(self, base: int, residual: bool, bilinear: bool) -> None:
        super().__init__()
        block = ResidualBlock if residual else DoubleConv
        c = [base * 2 ** i for i in range(5)]
        c[4] //= 2 if bilinear else 1
        self.channels = c
        self.stage1 = block(3, c[0])
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), block(c[0], c[1]))
        self.stage3 = nn.Sequential(nn.MaxPool2d(2), block(c[1], c[2]))
        self.stage4 = nn.Sequential(nn.MaxPool2d(2), block(c[2], c[3]))
        self.bottleneck = nn.Sequential(nn.MaxPool2d(2), block(c[3], c[4]))

    def stages(self) -> dict[str, nn.Module]:
        return {"stage1": self.stage1, "stage2": self.stage2, "stage3": self.stage3,
                "stage4": self.stage4, "bottleneck": self.bottleneck}

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for stage in self.stages().values():
            x = stage(x)
            out.append(x)
        return out


class UNetDecoder(nn.Module):
    """Four up-steps, deepest first, each merging the skip of the same resolution."""

    def __init__(self, c: list[int], bilinear: bool, attention: bool, residual: bool) -> None:
        super().__init__()
        f = 2 if bilinear else 1
        outs = [c[3] // f, c[2] // f, c[1] // f, c[0]]
        ins = [c[4], *outs[:3]]
        skips = [c[3], c[2], c[1], c[0]]
        self.blocks = nn.ModuleList(
            UpBlock(i, s, o, bilinear=bilinear, attention=attention, residual=residual)
            for i, s, o in zip(ins, skips, outs, strict=False))
        self.out_channels = c[0]

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, feats[-2::-1], strict=False):
            x = block(x, skip)
        return x


class UNet(SegmentationModel):
    """U-Net (Ronneberger et al. 2015); ``residual`` / ``attention`` give paper 003's variants."""

    default_input_size = 256
    size_multiple = 16  # four 2x2 max-pools

    def __init__(self, num_classes: int = 1, base_channels: int = 64, bilinear: bool = False,
                 attention: bool = False, residual: bool = False) -> None:
        super().__init__()
        self.encoder = UNetEncoder(base_channels, residual, bilinear)
        self.decoder = UNetDecoder(self.encoder.channels, bilinear, attention, residual)
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, kernel_size=1)

    def cam_layers(self) -> dict[str, nn.Module]:
        return {"last": self.decoder.blocks[-1], "bottleneck": self.encoder.bottleneck}


@register_model(source="paper 003/004", input_size=256)
def unet(num_classes: int = 1, base_channels: int = 64, bilinear: bool = False) -> UNet:
    """Classic U-Net, DoubleConv blocks, 64..1024 channels."""
    return UNet(num_classes, base_channels, bilinear)


@register_model(source="paper 003", input_size=256)
def unet_residual(num_classes: int = 1, base_channels: int = 64, bilinear: bool = False) -> UNet:
    """U-Net with residual blocks in encoder and decoder."""
    return UNet(num_classes, base_channels, bilinear, residual=True)


@register_model(source="paper 003", input_size=256)
def unet_attention(num_classes: int = 1, base_channels: int = 64, bilinear: bool = False) -> UNet:
    """Attention U-Net: additive attention gates on every skip (Oktay et al. 2018)."""
    return UNet(num_classes, base_channels, bilinear, attention=True)


@register_model(source="test", input_size=64, base_channels=8)
def test_unet(num_classes: int = 1, base_channels: int = 8, bilinear: bool = True) -> UNet:
    """Tiny attention + residual U-Net with bilinear up-steps, for fast tests."""
    return UNet(num_classes, base_channels, bilinear, attention=True, residual=True)
