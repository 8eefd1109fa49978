"""Small building blocks shared by the U-Net family (papers 002, 003, 004)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BN -> ReLU) x 2, the U-Net block (Ronneberger et al.)."""

    def __init__(self, cin: int, cout: int, mid: int | None = None) -> None:
        mid = mid or cout
        super().__init__(
            nn.Conv2d(cin, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """DoubleConv with an identity (or 1x1 projection) shortcut, as in ResUNet."""

    def __init__(self, cin: int, cout: int, mid: int | None = None) -> None:
        super().__init__()
        mid = mid or cout
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity() if cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Oktay et al., Attention U-Net, 2018)."""

    def __init__(self, gate_ch: int, skip_ch: int, inter_ch: int | None = None) -> None:
        super().__init__()
        inter_ch = inter_ch or max(skip_ch // 2, 1)
        self.w_g = nn.Sequential(nn.Conv2d(gate_ch, inter_ch, 1), nn.BatchNorm2d(inter_ch))
        self.w_x = nn.Sequential(nn.Conv2d(skip_ch, inter_ch, 1), nn.BatchNorm2d(inter_ch))
        self.psi = nn.Sequential(nn.Conv2d(inter_ch, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())

    def forward(self, gate: Tensor, skip: Tensor) -> Tensor:
        g = self.w_g(gate)
        if g.shape[-2:] != skip.shape[-2:]:
            g = F.interpolate(g, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return skip * self.psi(F.relu(g + self.w_x(skip)))


def match_size(x: Tensor, ref: Tensor) -> Tensor:
    """Pad (or crop) ``x`` to ``ref``'s spatial size; odd inputs make up-steps one pixel short."""
    dh, dw = ref.shape[-2] - x.shape[-2], ref.shape[-1] - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])


class UpBlock(nn.Module):
    """Upsample (ConvTranspose2d x2 or bilinear), optional attention gate, concat skip, conv block."""

    def __init__(self, cin: int, skip_ch: int, cout: int, *, bilinear: bool = False,
                 attention: bool = False, residual: bool = False, up_ch: int | None = None) -> None:
        super().__init__()
        if bilinear:
            up_ch = cin
            self.up: nn.Module = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        else:
            up_ch = up_ch or cin // 2
            self.up = nn.ConvTranspose2d(cin, up_ch, kernel_size=2, stride=2)
        self.gate = AttentionGate(up_ch, skip_ch) if attention else None
        block = ResidualBlock if residual else DoubleConv
        self.conv = block(up_ch + skip_ch, cout, (up_ch + skip_ch) // 2 if bilinear else None)

    def forward(self, x: Tensor, skip: Tensor | None) -> Tensor:
        x = self.up(x)
        if skip is None:
            return self.conv(x)
        x = match_size(x, skip)
        if self.gate is not None:
            skip = self.gate(x, skip)
        return self.conv(torch.cat([skip, x], dim=1))
