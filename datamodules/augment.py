"""Training-time augmentation for small real data sets (torchvision.transforms.v2), on uint8 pixels.

One call draws one set of parameters, so a whole clip given as one `tv_tensors.Video` (T, 3, H, W) gets the same
crop and the same colour change on every frame: the motion between frames is untouched. Nothing here changes a
label by default: no hue shift (captions name colours), crops keep most of the picture, and the horizontal flip is
opt-in, because it turns a pan or a movement to the left into one to the right and "left of" into "right of".
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2


def train_augmentation(size: int, crop_scale: tuple[float, float] = (0.6, 1.0), color_jitter: float = 0.3,
                       horizontal_flip: bool = False) -> Callable[[Tensor], Tensor]:
    """(..., 3, H, W) uint8 -> (..., 3, size, size) uint8: a random resized crop (area fraction in `crop_scale`,
    aspect 3/4..4/3), brightness/contrast/saturation jitter of +-`color_jitter`, and with `horizontal_flip` a
    mirror image half of the time. A 4-D input is one clip: every frame gets the same parameters."""
    low, high = crop_scale
    if not 0 < low <= high <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
    steps: list[v2.Transform] = [v2.RandomResizedCrop(size, scale=(low, high), antialias=True)]
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    if horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    transform = v2.Compose(steps)

    def apply(pixels: Tensor) -> Tensor:
        if pixels.dtype != torch.uint8:
            raise TypeError(f"augmentation expects uint8 pixels, got {pixels.dtype}")
        wrapped = tv_tensors.Video(pixels) if pixels.dim() == 4 else tv_tensors.Image(pixels)
        return transform(wrapped).as_subclass(Tensor)

    return apply
