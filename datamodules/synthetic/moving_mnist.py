"""Moving MNIST generated on the fly from real MNIST digits (Srivastava et al. 2015's recipe).

Each sequence: `num_digits` digits (28 x 28) bounce inside a `canvas_size` square for `seq_len` frames, each
with a random start and direction and a fixed speed, reflected at the walls; overlapping digits are combined
with a pixel-wise maximum. Training sequences are fresh every time they are drawn (an endless supply); val/test
sequences are a pure function of (seed, split, index), so every run and every epoch sees the same ones.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.readers.mnist import load_mnist

DIGIT_SIZE = 28
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
# MNIST part the digits of each split come from: val/test use MNIST's test writers, never seen in training.
DIGIT_PART = {"train": "train", "val": "test", "test": "test"}


def bouncing_positions(rng: np.random.Generator, seq_len: int, span: int, step_length: float = 0.1) -> np.ndarray:
    """(seq_len, 2) integer top-left corners (y, x) in [0, span] of one digit bouncing off the walls."""
    theta = rng.uniform(0, 2 * np.pi)
    velocity = np.array([np.sin(theta), np.cos(theta)])
    pos = rng.uniform(0, 1, size=2)
    out = np.empty((seq_len, 2))
    for t in range(seq_len):
        out[t] = pos
        pos = pos + velocity * step_length
        for axis in range(2):  # reflect at the walls
            if pos[axis] < 0 or pos[axis] > 1:
                velocity[axis] = -velocity[axis]
                pos[axis] = -pos[axis] if pos[axis] < 0 else 2 - pos[axis]
    return np.round(out * span).astype(np.int64)


def render_sequence(
    digits: list[np.ndarray], rng: np.random.Generator, seq_len: int = 20, canvas_size: int = 64, step_length: float = 0.1
) -> np.ndarray:
    """Digits (28, 28) uint8 -> (seq_len, canvas_size, canvas_size) uint8 frames."""
    span = canvas_size - DIGIT_SIZE
    if span < 0:
        raise ValueError(f"canvas_size={canvas_size} is smaller than an MNIST digit ({DIGIT_SIZE} px)")
    frames = np.zeros((seq_len, canvas_size, canvas_size), dtype=np.uint8)
    for digit in digits:
        for t, (y, x) in enumerate(bouncing_positions(rng, seq_len, span, step_length)):
            window = frames[t, y : y + DIGIT_SIZE, x : x + DIGIT_SIZE]
            np.maximum(window, digit, out=window)
    return frames


class MovingMNIST(Dataset):
    """Moving MNIST sequences as uint8 (seq_len, canvas_size, canvas_size) arrays.

    split "train" draws digits from MNIST's training part and a fresh random sequence per access (seeded from
    torch's RNG, so `seed_everything` makes a run reproducible); "val"/"test" draw from MNIST's test part and are
    fixed by (seed, split, index).
    """

    def __init__(
        self,
        split: str,
        num_sequences: int,
        seq_len: int = 20,
        num_digits: int = 2,
        canvas_size: int = 64,
        step_length: float = 0.1,
        seed: int = 0,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"unknown split {split!r}; choose one of {sorted(_SPLIT_IDS)}")
        self.split, self.num_sequences, self.seq_len = split, num_sequences, seq_len
        self.num_digits, self.canvas_size, self.step_length, self.seed = num_digits, canvas_size, step_length, seed
        self.digits, _ = load_mnist(DIGIT_PART[split])

    def __len__(self) -> int:
        return self.num_sequences

    def rng_for(self, index: int) -> np.random.Generator:
        if self.split == "train":
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])

    def __getitem__(self, index: int) -> np.ndarray:
        rng = self.rng_for(index)
        picks = rng.integers(0, len(self.digits), size=self.num_digits)
        return render_sequence([self.digits[i] for i in picks], rng, self.seq_len, self.canvas_size, self.step_length)
