"""Augmentation: one set of parameters per clip, nothing label-changing unless asked for."""
import pytest
import torch

from datamodules.augment import train_augmentation


def ramp(frames=1, size=32):
    """(T, 3, size, size) uint8 frames whose brightness rises from left to right."""
    row = torch.linspace(0, 255, size).round().to(torch.uint8)
    return row.expand(frames, 3, size, size).clone()


def test_every_frame_of_a_clip_gets_the_same_crop_and_colour():
    augment = train_augmentation(16, color_jitter=0.5)
    torch.manual_seed(0)
    clip = ramp(frames=5)
    for _ in range(5):
        out = augment(clip)
        assert out.shape == (5, 3, 16, 16) and out.dtype == torch.uint8
        assert all(torch.equal(out[0], frame) for frame in out[1:])


def test_horizontal_flip_only_when_asked():
    torch.manual_seed(0)
    plain, flips = train_augmentation(16, color_jitter=0.0), train_augmentation(16, color_jitter=0.0, horizontal_flip=True)
    rising = [bool(out[0, 0, 8, -1] > out[0, 0, 8, 0]) for out in (plain(ramp()) for _ in range(20))]
    mirrored = [bool(out[0, 0, 8, -1] < out[0, 0, 8, 0]) for out in (flips(ramp()) for _ in range(20))]
    assert all(rising) and any(mirrored)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="crop_scale"):
        train_augmentation(16, crop_scale=(0.0, 1.0))
    with pytest.raises(TypeError, match="uint8"):
        train_augmentation(16)(ramp().float())
