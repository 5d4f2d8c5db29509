"""Video encoder: any image `Encoder` applied to every frame, frames folded into the batch."""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from encoders.base import Encoded, Encoder, register_encoder

FrameSampling = Literal["all", "one"]
MotionInput = Literal["none", "diff", "correlation"]


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
            flow); the image encoder then needs `in_channels` = 2C. correlation = a motion stream beside the
            pooled appearance features: each frame's feature map is matched against the previous frame's at
            every displacement within `correlation_radius` cells (FlowNet's correlation layer, on the CNN's
            features, not learned), a softmax over the displacements at each cell gives its soft motion
            histogram and expected displacement (a coarse optical flow), averaged over `correlation_regions`^2
            regions of the frame (zero for the first frame). It reads the image encoder's
            `appearance_and_matching` (EfficientNetLiteEncoder: the stride-16 map) or else its spatial output,
            and works with cached features: the cache keeps each frame's map, the matching runs after it. This
            is what lets a frozen ImageNet CNN tell a pan to the left from one to the right, which pooled
            features cannot (their average forgets where things are).
        correlation_radius: largest displacement matched, in feature-map cells (R; (2R + 1)^2 displacements).
        correlation_regions: regions per side the motion histograms and flow are averaged over.
        correlation_temperature: softmax temperature over the cosine similarities of the displacements.
        correlation_affine: also fit the coarse flow of the whole frame with an affine motion (weighted least
            squares, each cell weighted by its most likely displacement's probability) and add its 6 parameters
            per step: translation (x, y), divergence (zoom), curl (rotation) and the two shears. A zoom or a
            rotation moves the cells far from the centre by a fraction of a cell a frame, which the regional
            averages barely see; the fit pools that evidence over every cell.
        correlation_histograms: keep the (2R + 1)^2-bin motion histograms of each region; false keeps only the
            regional flow (and the affine fit): 24 motion features a step instead of ~460, less for a small set
            to memorise.
    """

    def __init__(
        self, image_encoder: Encoder, grid: int = 1, frames: FrameSampling = "all", motion: MotionInput = "none",
        correlation_radius: int = 3, correlation_regions: int = 3, correlation_temperature: float = 0.1,
        correlation_affine: bool = False, correlation_histograms: bool = True,
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
        if motion not in ("none", "diff", "correlation"):
            raise ValueError(f"unknown motion={motion!r}; choose none, diff or correlation")
        if motion != "none" and frames == "one":
            raise ValueError(f"motion={motion} needs the previous frame; use frames=all")
        self.image_encoder, self.grid, self.frames, self.motion = image_encoder, grid, frames, motion
        self.affine, self.histograms = correlation_affine, correlation_histograms
        self.out_dim = image_encoder.out_dim * grid * grid
        #: with motion=correlation, each step's first `appearance_dim` features are the pooled appearance
        self.appearance_dim = image_encoder.out_dim if motion == "correlation" else None
        if motion == "correlation":
            if grid != 1:
                raise ValueError("motion=correlation adds its own regions (correlation_regions); use grid=1")
            if not hasattr(image_encoder, "appearance_and_matching") and not getattr(image_encoder, "spatial", False):
                raise ValueError(f"motion=correlation matches feature maps: build {type(image_encoder).__name__} "
                                 "with `spatial: true`")
            if correlation_radius < 1 or correlation_regions < 1 or correlation_temperature <= 0:
                raise ValueError("correlation_radius and correlation_regions must be >= 1, the temperature > 0")
            self.radius, self.regions, self.temperature = correlation_radius, correlation_regions, correlation_temperature
            self.matching_channels = getattr(image_encoder, "matching_channels", image_encoder.out_dim)
            side = 2 * correlation_radius + 1
            dy, dx = torch.meshgrid(torch.arange(side) - correlation_radius, torch.arange(side) - correlation_radius,
                                    indexing="ij")
            self.register_buffer("displacements", torch.stack([dx.flatten(), dy.flatten()]).float(), persistent=False)
            self.out_dim += (side * side * correlation_histograms + 2) * correlation_regions ** 2
            if correlation_affine:
                self.out_dim += 6
        elif correlation_affine or not correlation_histograms:
            raise ValueError("correlation_affine and correlation_histograms shape the features of motion=correlation; "
                             "set motion: correlation")

    @property
    def cache_tag(self) -> str:
        """What `encode_frames` computes besides the image encoder's weights (the feature cache's tag): the
        matching options (radius, regions, temperature, affine) run after the cache and are not part of it."""
        return f"frames|motion={self.motion}|grid={self.grid}"

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
        """(N, C, H, W) frames -> (N, D) features (with motion=correlation: the pooled features and the
        L2-normalised feature map to match, flattened: what the cache stores)."""
        if self.motion == "correlation":
            if hasattr(self.image_encoder, "appearance_and_matching"):
                pooled, grid = self.image_encoder.appearance_and_matching(frames)
            else:
                steps = self.image_encoder(frames).seq  # (N, h*w, C)
                side = math.isqrt(steps.shape[1])
                pooled, grid = steps.mean(dim=1), steps.transpose(1, 2).reshape(len(steps), -1, side, side)
            return torch.cat([pooled, F.normalize(grid, dim=1).flatten(1)], dim=1)
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

    def _displaced_cells(self, side: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """For each cell of a side x side map, the flat index of the cell at each displacement, and whether it is
        inside the map: (side^2, K) long, (side^2, K) float."""
        y, x = torch.meshgrid(torch.arange(side, device=device), torch.arange(side, device=device), indexing="ij")
        d = self.displacements.long()
        tx, ty = x.reshape(-1, 1) + d[0], y.reshape(-1, 1) + d[1]  # (h*w, K)
        inside = (tx >= 0) & (tx < side) & (ty >= 0) & (ty < side)
        return (ty.clamp(0, side - 1) * side + tx.clamp(0, side - 1)), inside.float()

    def correlation_motion(self, rows: Tensor) -> Tensor:
        """(B, T, D) `encode_frames` rows -> (B, T, out_dim): pooled features + the motion from frame t-1 to t."""
        B, T, _ = rows.shape
        C = self.image_encoder.out_dim
        pooled, flat = rows[..., :C], rows[..., C:]
        if T == 1:  # no pair: no motion
            return torch.cat([pooled, pooled.new_zeros(B, 1, self.out_dim - C)], dim=-1)
        side = math.isqrt(flat.shape[-1] // self.matching_channels)
        maps = flat.reshape(B, T, self.matching_channels, side, side)
        cur, prev = maps[:, 1:].flatten(0, 1), maps[:, :-1].flatten(0, 1)  # pairs (t-1, t): (B*(T-1), C', h, w)
        # cosine similarity of every cell of frame t with every cell of frame t-1 (one batched matrix product),
        # then, for each cell, the K displacements within the radius (0 where they leave the frame)
        affinity = torch.bmm(cur.flatten(2).transpose(1, 2), prev.flatten(2))  # (N, h*w, h*w)
        index, inside = self._displaced_cells(side, rows.device)  # (h*w, K)
        corr = affinity.gather(2, index.expand(len(affinity), -1, -1)) * inside  # (N, h*w, K)
        corr = corr.transpose(1, 2).reshape(len(affinity), -1, side, side)  # (N, K, h, w)
        probs = (corr / self.temperature).softmax(dim=1)
        flow = torch.einsum("nkhw,ck->nchw", probs, self.displacements)  # expected displacement (N, 2, h, w)
        K = probs.shape[1]
        parts = [F.adaptive_avg_pool2d(probs, self.regions).flatten(1) * K] if self.histograms else []  # 1 = no preference
        parts.append(F.adaptive_avg_pool2d(flow, self.regions).flatten(1))
        if self.affine:
            # cells whose every displacement stays inside the map: at the border the displacements that leave it
            # score 0, which pulls the expected displacement inwards (a false divergence)
            whole = inside.amin(dim=1).view(1, side, side)
            parts.append(self.affine_motion(flow, probs.amax(dim=1) * whole))
        motion = torch.cat(parts, dim=1).view(B, T - 1, -1)
        motion = torch.cat([motion.new_zeros(B, 1, motion.shape[-1]), motion], dim=1)  # none before the first frame
        return torch.cat([pooled, motion], dim=-1)

    @staticmethod
    def affine_motion(flow: Tensor, weight: Tensor) -> Tensor:
        """(N, 2, h, w) flow, (N, h, w) weights -> (N, 6): the weighted least-squares affine flow
        u = a0 + a1 x + a2 y, v = b0 + b1 x + b2 y over cell coordinates x, y in [-1, 1], as
        (translation a0, b0; divergence a1 + b2; curl b1 - a2; shears a1 - b2, a2 + b1)."""
        N, _, h, w = flow.shape
        y, x = torch.meshgrid(torch.linspace(-1, 1, h, device=flow.device), torch.linspace(-1, 1, w, device=flow.device),
                              indexing="ij")
        design = torch.stack([torch.ones_like(x), x, y], dim=-1).reshape(-1, 3)  # (h*w, 3)
        wd = weight.reshape(N, -1, 1) * design  # (N, h*w, 3)
        normal = wd.transpose(1, 2) @ design + 1e-3 * torch.eye(3, device=flow.device)  # X^T W X, a little ridge
        coef = torch.linalg.solve(normal, wd.transpose(1, 2) @ flow.reshape(N, 2, -1).transpose(1, 2))  # (N, 3, 2)
        (a0, a1, a2), (b0, b1, b2) = coef[..., 0].unbind(1), coef[..., 1].unbind(1)
        return torch.stack([a0, b0, a1 + b2, b1 - a2, a1 - b2, a2 + b1], dim=1)

    def check_cacheable(self) -> None:
        """Per-frame features can be cached only when a frame's features depend on that frame alone (correlation
        matches pairs after the cache: each frame's map is what is cached)."""
        if self.motion == "diff":
            raise ValueError("cached features need FrameEncoder(motion=none or correlation): motion=diff reads pairs "
                             "of frames' pixels; set --model.cache_features false or another motion")

    def from_frame_features(self, features: Tensor, lengths: Tensor | None = None) -> Encoded:
        """(B, T, D) per-frame features (`encode_frames` of each frame, e.g. from a cache) -> what `forward` returns
        for the clips: all frames, or with frames=one the same single frame `forward` would pick."""
        self.check_cacheable()
        if self.frames == "one":
            return Encoded(self._pick_one(features, lengths), None)
        if self.motion == "correlation":
            return Encoded(self.correlation_motion(features), lengths)
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
            seq = feats.view(B, T, -1)
        else:
            # Encode only the valid frames: padding costs no compute and cannot leak into BatchNorm statistics.
            valid = torch.arange(T, device=x.device)[None, :] < lengths[:, None]  # (B, T)
            feats = self.encode_frames(x[valid])  # (sum(lengths), D)
            seq = feats.new_zeros(B, T, feats.shape[-1])
            seq[valid] = feats
        return Encoded(self.correlation_motion(seq) if self.motion == "correlation" else seq, lengths)
