"""Video encoder: any image `Encoder` applied to every frame, frames folded into the batch."""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from encoders.base import Encoded, Encoder, register_encoder

FrameSampling = Literal["all", "one"]
MotionInput = Literal["none", "diff"]


@register_encoder("frames")
class FrameEncoder(Encoder):
    """(B, T, C, H, W) clips -> (B, T, D) per-frame features, the same 2-D CNN on every frame (LRCN).

    Args:
        image_encoder: the per-frame CNN, e.g. SmallCNNEncoder or ResNetEncoder (with `in_channels`).
        grid: pool each frame's feature map to grid x grid cells and concatenate them, D = grid^2 * C_cnn.
            1 = global average (what a ResNet classifier does); > 1 keeps where things are, which motion
            needs, and requires the image encoder to be built with `spatial: true` (square frames).
        frames: all = encode every valid frame; one = encode a single frame per clip (a random valid one
            in training, the middle valid one in evaluation), the no-time baseline.
        motion: none = the frame alone; diff = the frame and its difference to the previous frame (zero for the
            first), stacked as 2C input channels (TSN's "RGB difference", a cheap stand-in for LRCN's optical
            flow); the image encoder then needs `in_channels` = 2C.
    """

    def __init__(
        self, image_encoder: Encoder, grid: int = 1, frames: FrameSampling = "all", motion: MotionInput = "none"
    ) -> None:
        super().__init__()
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        if grid > 1 and not getattr(image_encoder, "spatial", False):
            raise ValueError(
                f"grid={grid} pools the image encoder's feature map, but {type(image_encoder).__name__} returns one "
                "pooled vector per frame; build it with `spatial: true` or use grid=1"
            )
        if frames not in ("all", "one"):
            raise ValueError(f"unknown frames={frames!r}; choose all or one")
        if motion not in ("none", "diff"):
            raise ValueError(f"unknown motion={motion!r}; choose none or diff")
        if motion == "diff" and frames == "one":
            raise ValueError("motion=diff needs the previous frame; use frames=all")
        self.image_encoder, self.grid, self.frames, self.motion = image_encoder, grid, frames, motion
        self.out_dim = image_encoder.out_dim * grid * grid

    def _pick_one(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """(B, T, ...) -> (B, 1, ...): one valid frame (or its features) per clip."""
        B, T = x.shape[:2]
        n = lengths.clamp(min=1) if lengths is not None else torch.full((B,), T, device=x.device)
        if self.training:
            index = (torch.rand(B, device=x.device) * n).long().clamp(max=T - 1)
        else:
            index = (n - 1) // 2
        return x[torch.arange(B, device=x.device), index][:, None]

    def encode_frames(self, frames: Tensor) -> Tensor:
        """(N, C, H, W) frames -> (N, D) features."""
        steps = self.image_encoder(frames).seq  # (N, S, C_cnn), S = 1 or a flattened h*w grid
        if self.grid == 1:
            return steps.mean(dim=1)
        N, S, C = steps.shape
        side = math.isqrt(S)
        if side * side != S:
            raise ValueError(f"grid pooling needs a square feature map, got {S} cells; resize frames to squares")
        grid = steps.transpose(1, 2).reshape(N, C, side, side)  # (N, C, h, w)
        if side != self.grid:
            grid = F.adaptive_avg_pool2d(grid, self.grid)  # (N, C, grid, grid)
        return grid.flatten(1)  # (N, C * grid * grid)

    def check_cacheable(self) -> None:
        """Per-frame features can be cached only when a frame's features depend on that frame alone."""
        if self.motion != "none":
            raise ValueError(f"cached features need FrameEncoder(motion=none): motion={self.motion} reads pairs of "
                             "frames; set --model.cache_features false or motion: none")

    def from_frame_features(self, features: Tensor, lengths: Tensor | None = None) -> Encoded:
        """(B, T, D) per-frame features (`encode_frames` of each frame, e.g. from a cache) -> what `forward` returns
        for the clips: all frames, or with frames=one the same single frame `forward` would pick."""
        self.check_cacheable()
        if self.frames == "one":
            return Encoded(self._pick_one(features, lengths), None)
        return Encoded(features, lengths)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        if x.dim() != 5:
            raise ValueError(f"FrameEncoder expects clips shaped (B, T, C, H, W), got {tuple(x.shape)}")
        if self.frames == "one":
            return Encoded(self.encode_frames(self._pick_one(x, lengths)[:, 0])[:, None], None)
        if self.motion == "diff":
            # frame t - frame t-1 (zero at t=0); a valid frame's difference only reads valid frames before it
            x = torch.cat([x, x - torch.cat([x[:, :1], x[:, :-1]], dim=1)], dim=2)  # (B, T, 2C, H, W)
        B, T, C, H, W = x.shape
        if lengths is None:
            feats = self.encode_frames(x.reshape(B * T, C, H, W))  # fold time into the batch: (B*T, D)
            return Encoded(feats.view(B, T, -1), None)
        # Encode only the valid frames: padding costs no compute and cannot leak into BatchNorm statistics.
        valid = torch.arange(T, device=x.device)[None, :] < lengths[:, None]  # (B, T)
        feats = self.encode_frames(x[valid])  # (sum(lengths), D)
        seq = feats.new_zeros(B, T, feats.shape[-1])
        seq[valid] = feats
        return Encoded(seq, lengths)
