"""UNet++ (Zhou et al. 2018) as in paper 004: VGG blocks, filters 32..512, nested dense skips.

Deep supervision: four 1x1 heads on X^{0,1..4} with equal loss weights. Eval mode:
``mode: accurate`` averages the four heads' logits, ``mode: fast`` uses one head
(``fast_head``, 1..4, default 4). The write-up says accurate mode "combines" the heads; we
average logits (averaging probabilities would need a sigmoid here and break the logits contract).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lesionbench.errors import LesionBenchError
from lesionbench.models.base import SegmentationModel
from lesionbench.models.blocks import match_size
from lesionbench.models.registry import register_model


class VGGBlock(nn.Sequential):
    """conv-BN-ReLU x 2 with biased convs (the write-up's VGGBlock)."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class NestedEncoder(nn.Module):
    """The backbone column X^{i,0}: VGG blocks with 2x2 max pooling in between."""

    def __init__(self, f: list[int]) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2, 2)
        self.blocks = nn.ModuleList(VGGBlock(cin, c, c) for cin, c in zip([3, *f[:-1]], f, strict=False))

    def stages(self) -> dict[str, nn.Module]:
        return {f"conv{i}_0": b for i, b in enumerate(self.blocks)}

    def forward(self, x: Tensor) -> list[Tensor]:
        out = [self.blocks[0](x)]
        for block in self.blocks[1:]:
            out.append(block(self.pool(out[-1])))
        return out


class NestedDecoder(nn.Module):
    """Nodes X^{i,j} = VGG(cat(X^{i,0..j-1}, up(X^{i+1,j-1}))) for j >= 1."""

    def __init__(self, f: list[int]) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.nodes = nn.ModuleDict({
            f"conv{i}_{j}": VGGBlock(f[i] * j + f[i + 1], f[i], f[i])
            for j in range(1, 5) for i in range(0, 5 - j)})

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        grid = {(i, 0): t for i, t in enumerate(feats)}
        for j in range(1, 5):
            for i in range(0, 5 - j):
                prev = [grid[(i, k)] for k in range(j)]
                up = match_size(self.up(grid[(i + 1, j - 1)]), prev[0])
                grid[(i, j)] = self.nodes[f"conv{i}_{j}"](torch.cat([*prev, up], 1))
        return [grid[(0, j)] for j in range(1, 5)]


class NestedHeads(nn.ModuleList):
    def forward(self, feats: list[Tensor]) -> list[Tensor] | Tensor:  # type: ignore[override]
        if len(self) == 1:
            return self[0](feats[-1])
        return [head(f) for head, f in zip(self, feats, strict=False)]


class UNetPlusPlus(SegmentationModel):
    """UNet++; stages encoder, encoder.conv0_0..conv4_0, decoder, head."""

    default_input_size = 256
    size_multiple = 16  # four 2x2 max-pools

    def __init__(self, num_classes: int = 1, base_channels: int = 32, deep_supervision: bool = True,
                 mode: Literal["accurate", "fast"] = "accurate", fast_head: int = 4) -> None:
        super().__init__()
        if mode not in ("accurate", "fast") or not 1 <= fast_head <= 4:
            raise LesionBenchError(f"unetplusplus: mode must be accurate|fast and fast_head 1..4 "
                                   f"(got {mode!r}, {fast_head})")
        f = [base_channels * 2 ** i for i in range(5)]
        self.encoder = NestedEncoder(f)
        self.decoder = NestedDecoder(f)
        n = 4 if deep_supervision else 1
        self.head = NestedHeads(nn.Conv2d(f[0], num_classes, 1) for _ in range(n))
        self.deep_supervision_weights = [0.25] * 4 if deep_supervision else None
        self.mode, self.fast_head = mode, fast_head

    def merge_heads(self, heads: list[Tensor]) -> Tensor:
        return torch.stack(heads).mean(0) if self.mode == "accurate" else heads[self.fast_head - 1]

    def cam_layers(self) -> dict[str, nn.Module]:
        return {"last": self.decoder.nodes["conv0_4"], "bottleneck": self.encoder.blocks[-1]}


@register_model(source="paper 004", input_size=256, heads=4)
def unetplusplus(num_classes: int = 1, base_channels: int = 32, deep_supervision: bool = True,
                 mode: str = "accurate", fast_head: int = 4) -> UNetPlusPlus:
    """UNet++ with nested dense skips and four deeply supervised heads."""
    return UNetPlusPlus(num_classes, base_channels, deep_supervision, mode, fast_head)  # type: ignore[arg-type]


@register_model(source="test", input_size=64, heads=4)
def test_unetplusplus(num_classes: int = 1, mode: str = "accurate") -> UNetPlusPlus:
    """UNet++ with 4..64 filters, for fast tests."""
    return UNetPlusPlus(num_classes, 4, True, mode)  # type: ignore[arg-type]
