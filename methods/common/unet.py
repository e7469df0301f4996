"""The inpainting U-Net of RIAD (Zavrtanik et al., 2021), shared by RIAD and Meta-RIAD.

Nine blocks of two 3x3 convolutions (padding 1) with BatchNorm and ReLU: an input block,
four downsampling blocks (max-pool, then convolutions) and four upsampling blocks (bilinear
upsampling, concatenation with the encoder skip, convolutions), then a 1x1 output convolution.
Weights are Xavier-normal and biases zero, as in the paper. ``width`` is the first block's
channel count (64 in the paper); a narrow net keeps CPU runs short.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEPTH = 4  # downsampling blocks: inputs must be a multiple of 2**DEPTH pixels


class ConvBlock(nn.Sequential):
    """(3x3 conv -> BatchNorm -> ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=False),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=False),
        )


class UNet(nn.Module):
    """Image-to-image U-Net; widths w, 2w, 4w, 8w, 8w down and 4w, 2w, w, w up."""

    def __init__(self, width: int = 16, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"U-Net width must be >= 1, got {width}")
        enc = [width * 2**i for i in range(DEPTH)] + [width * 2 ** (DEPTH - 1)]
        self.inc = ConvBlock(in_channels, enc[0])
        self.down = nn.ModuleList(ConvBlock(enc[i], enc[i + 1]) for i in range(DEPTH))
        dec_out = [enc[DEPTH - 1 - i] // 2 if i < DEPTH - 1 else width for i in range(DEPTH)]
        dec_in = [enc[DEPTH] + enc[DEPTH - 1]] + [
            dec_out[i - 1] + enc[DEPTH - 1 - i] for i in range(1, DEPTH)
        ]
        self.up = nn.ModuleList(ConvBlock(dec_in[i], dec_out[i]) for i in range(DEPTH))
        self.out = nn.Conv2d(width, out_channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        side = 2**DEPTH
        if x.shape[-1] % side or x.shape[-2] % side:
            raise ValueError(f"U-Net input side must be a multiple of {side}, got {x.shape[-2:]}")
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for block in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([skip, h], dim=1))
        return self.out(h)
