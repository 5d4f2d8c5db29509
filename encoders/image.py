"""Image encoders: a small CNN (default) and torchvision ResNets, both as `Encoder`s.

Pooled output is one step, (B, 1, D); `spatial=True` returns the last feature grid as
(B, H*W, D) steps, for decoders that attend over image regions.
"""
from __future__ import annotations

import os
import urllib.error
from typing import Literal

import torch
import torchvision
from torch import Tensor, nn

from encoders.base import Encoded, Encoder, register_encoder


def _grid_to_steps(grid: Tensor, spatial: bool) -> Tensor:
    """(B, D, H, W) feature grid -> (B, H*W, D) steps, or (B, 1, D) when pooled."""
    if spatial:
        return grid.flatten(2).transpose(1, 2)
    return grid.mean(dim=(2, 3))[:, None, :]


@register_encoder("small_cnn")
class SmallCNNEncoder(Encoder):
    """Conv-BN-ReLU blocks, each halving the resolution; trains from scratch in minutes on a CPU.

    Args:
        in_channels: input channels (3 for RGB, 1 for gray frames).
        channels: width of each block; each block halves height and width.
        convs_per_block: extra stride-1 convolutions before each block's strided one (more capacity, more time).
        spatial: return the final grid as H*W steps instead of one pooled step.
        channels_last: run the convolutions in NHWC memory layout (weights and input), the layout oneDNN and
            cuDNN convolve fastest; same results. benchmarks/options.py measured the default captioning and
            activity training steps 1.1-1.4x faster with it on CPU (benchmarks/RESULTS.md).
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: list[int] = [32, 64, 128, 256],  # noqa: B006 - jsonargparse needs a literal default
        convs_per_block: int = 0,
        spatial: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("SmallCNNEncoder needs at least one entry in `channels`")
        blocks: list[nn.Module] = []
        prev = in_channels
        for width in channels:
            for _ in range(convs_per_block):
                blocks += [nn.Conv2d(prev, prev, 3, padding=1, bias=False), nn.BatchNorm2d(prev), nn.ReLU(inplace=True)]
            blocks += [nn.Conv2d(prev, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            prev = width
        self.body = nn.Sequential(*blocks)
        self.spatial = spatial
        self.out_dim = prev
        self.channels_last = channels_last
        if channels_last:  # .to(device) and load_state_dict keep this layout
            self.body.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        # x: (B, C, H, W) -> grid (B, D, H/2^n, W/2^n)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # same shape, NHWC strides
        return Encoded(_grid_to_steps(self.body(x), self.spatial), None)


_RESNET_WIDTH = {18: 512, 34: 512, 50: 2048}


def load_resnet_weights(depth: int, weights: str) -> dict[str, Tensor]:
    """A state dict for torchvision's ResNet-`depth`, from a local file or a torchvision weights name.

    `weights` is either a path to a `.pth` state dict, or a torchvision enum member name such as
    `IMAGENET1K_V1` / `DEFAULT`, which loads from the torch hub cache (`$TORCH_HOME`) and downloads
    only when the cache misses.
    """
    if os.path.exists(weights):
        state = torch.load(weights, map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    enum_name = f"ResNet{depth}_Weights"
    try:
        entry = torchvision.models.get_weight(f"{enum_name}.{weights}")
    except (KeyError, ValueError, AttributeError) as err:
        choices = ", ".join(w.name for w in getattr(torchvision.models, enum_name)) + ", DEFAULT"
        raise ValueError(
            f"weights={weights!r} is neither an existing file nor a {enum_name} name; use a path to a "
            f".pth state dict or one of: {choices}"
        ) from err
    try:
        return torch.hub.load_state_dict_from_url(entry.url, map_location="cpu", progress=False, weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise RuntimeError(
            f"could not load {enum_name}.{weights}: it is not in the torch hub cache ({cache}) and the download "
            f"from {entry.url} failed ({err}). Copy the file into that folder, pass a local file with "
            f"--model.encoder.weights PATH, or use weights=null to train from scratch."
        ) from err


@register_encoder("resnet")
class ResNetEncoder(Encoder):
    """torchvision ResNet-18/34/50 without its classifier; `weights` loads pretrained weights (see above)."""

    def __init__(
        self,
        depth: Literal[18, 34, 50] = 18,
        weights: str | None = None,
        in_channels: int = 3,
        spatial: bool = False,
    ) -> None:
        super().__init__()
        if depth not in _RESNET_WIDTH:
            raise ValueError(f"ResNet depth must be one of {sorted(_RESNET_WIDTH)}, got {depth}")
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        if weights is not None:
            net.load_state_dict(load_resnet_weights(depth, weights))
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        # Everything up to the last residual stage; avgpool and fc are replaced by _grid_to_steps.
        self.body = nn.Sequential(*list(net.children())[:-2])
        self.spatial = spatial
        self.out_dim = _RESNET_WIDTH[depth]

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        return Encoded(_grid_to_steps(self.body(x), self.spatial), None)
