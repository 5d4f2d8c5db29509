"""Future-frame data: Moving MNIST generated on the fly by default (synthetic/moving_mnist.py), or frame arrays
from .npy/.npz files (readers/frames.py says which layouts)."""
from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.bad_samples import BadInputError, BadSampleError, BadSamplePolicy, handle, warn_skipped
from datamodules.base import SplitDataModule
from datamodules.readers.frames import Layout, read_frames
from datamodules.synthetic.moving_mnist import MovingMNIST


class FrameBatch(NamedTuple):
    frames: Tensor          # (B, T, C, H, W) float in [0, 1]
    ids: list[str]


def bad_sequences(array: np.ndarray) -> list[tuple[int, str]]:
    """(index, reason) of each sequence of float frames with values that are not finite or not in [0, 1]."""
    if not np.issubdtype(array.dtype, np.floating):
        return []
    flat = np.asarray(array).reshape(len(array), -1)
    finite = np.isfinite(flat).all(1)
    clean = np.where(np.isfinite(flat), flat, 0)
    lo, hi = clean.min(1), clean.max(1)
    return [(int(i), "has NaN or infinite values" if not finite[i] else f"ranges over [{lo[i]:g}, {hi[i]:g}], not [0, 1]")
            for i in np.flatnonzero(~finite | (lo < 0) | (hi > 1))]


class ArrayFrames(Dataset):
    """(N, T, H, W, C) frames -> (T, C, H, W) float tensors in [0, 1]."""

    def __init__(self, array: np.ndarray, name: str) -> None:
        self.array, self.name = array, name

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> tuple[Tensor, str]:
        clip = torch.from_numpy(np.array(self.array[i])).permute(0, 3, 1, 2)  # (T, C, H, W), a copy: files are read-only maps
        return (clip.float() / 255.0 if clip.dtype == torch.uint8 else clip.float()), f"{self.name}:{i}"


class GeneratedFrames(Dataset):
    def __init__(self, source: MovingMNIST) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[Tensor, str]:
        clip = torch.from_numpy(self.source[i])[:, None].float() / 255.0  # (T, 1, H, W)
        return clip, f"moving_mnist_{self.source.split}:{i}"


def collate_frames(samples: list[tuple[Tensor, str]]) -> FrameBatch:
    return FrameBatch(torch.stack([clip for clip, _ in samples]), [sid for _, sid in samples])


class FramesDataModule(SplitDataModule):
    """Frame sequences for future-frame prediction: the first `input_frames` are seen, the next `output_frames` predicted.

    Args:
        train_npy: training frames (.npy/.npz, see the module docstring); unset = generated Moving MNIST.
        val_npy: validation frames; unset = the last `num_val_sequences` of train_npy, or generated.
        test_npy: test frames (observed + future), e.g. the standard mnist_test_seq.npy; unset = generated.
            `predict` reads it when no predict_npy is given.
        predict_npy: frames to forecast from with `rnnsuite predict`: sequences of at least `input_frames` frames,
            of which the first `input_frames` are the context; when a sequence also holds the `output_frames`
            after them, the forecast is scored against those.
        npy_layout: auto, tnhw (time first, the Moving MNIST file) or nthw (sequence first).
        input_frames: observed frames per sequence (stored in checkpoints; evaluation adopts the checkpoint's).
        output_frames: predicted frames per sequence (likewise).
        frame_channels: channels every file must have (set from a checkpoint when evaluating); unset = the files'.
        batch_size: sequences per batch.
        num_workers: DataLoader worker processes (generation is cheap: 0 is fine).
        num_train_sequences: generated training sequences per epoch (each one fresh).
        num_val_sequences: generated (or held-out) validation sequences.
        num_test_sequences: generated test sequences.
        num_digits: digits per generated sequence.
        frame_size: generated canvas size (pixels).
        seed: seed of the generated val/test sequences.
        on_bad_sample: error (stop, naming the file and sequence) or skip (leave out and count, reported every
            epoch, and after predict) for a sequence of float frames with NaN/inf values or values outside [0, 1].
    """

    def __init__(
        self,
        train_npy: str | None = None,
        val_npy: str | None = None,
        test_npy: str | None = None,
        predict_npy: str | None = None,
        npy_layout: Layout = "auto",
        input_frames: int = 10,
        output_frames: int = 10,
        frame_channels: int | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        num_train_sequences: int = 10000,
        num_val_sequences: int = 256,
        num_test_sequences: int = 1000,
        num_digits: int = 2,
        frame_size: int = 64,
        seed: int = 0,
        on_bad_sample: BadSamplePolicy = "error",
    ) -> None:
        super().__init__(on_bad_sample)
        self.paths = {"train": train_npy, "val": val_npy, "test": test_npy, "predict": predict_npy}
        self.npy_layout, self.input_frames, self.output_frames = npy_layout, input_frames, output_frames
        self.batch_size, self.num_workers = batch_size, num_workers
        self.counts = {"train": num_train_sequences, "val": num_val_sequences, "test": num_test_sequences}
        self.num_digits, self.frame_size, self.seed = num_digits, frame_size, seed
        self.arrays: dict[str, np.ndarray] = {}
        for split, path in self.paths.items():
            if path is not None:  # read now: frame_channels must be known before the model is built
                self.arrays[split] = self._read(split, path)
        if "train" in self.arrays and "val" not in self.arrays:
            n_val = min(num_val_sequences, len(self.arrays["train"]) // 10)
            if n_val == 0:
                raise BadInputError(f"{train_npy}: too few sequences to hold out validation ones; pass --data.val_npy")
            self.arrays["train"], self.arrays["val"] = self.arrays["train"][:-n_val], self.arrays["train"][-n_val:]
        if frame_channels is not None:  # the model's: a file of the other kind cannot be read by it
            self.frame_channels = frame_channels
            for split in self.arrays:
                self._check_channels(split)
        else:
            channels = {a.shape[-1] for a in self.arrays.values()} or {1}
            if len(channels) > 1:
                raise BadInputError(f"the frame files mix 1- and 3-channel frames ({self.paths}); use one kind throughout")
            self.frame_channels = channels.pop()

    def _read(self, split: str, path: str) -> np.ndarray:
        lengths = tuple(sorted({20, self.input_frames, self.seq_len}))  # what marks a time-first (T, N, H, W) array
        return self._checked(read_frames(path, self.npy_layout, lengths), path, split)

    def _check_channels(self, split: str) -> None:
        channels = self.arrays[split].shape[-1]
        if channels != self.frame_channels:
            raise BadInputError(
                f"{self.source(split)}: frames have {channels} channels, but this model reads {self.frame_channels}-"
                f"channel frames; convert them ({'gray: one channel' if self.frame_channels == 1 else 'RGB'})"
            )

    def predict_on(self, **inputs: Any) -> None:
        """A new `predict_npy` is read and checked at once, as the constructor reads one."""
        super().predict_on(**{name: value for name, value in inputs.items() if name != "predict_npy"})
        if "predict_npy" in inputs:
            self.paths["predict"] = inputs["predict_npy"]
            self.skipped["predict"] = []
            self.arrays["predict"] = self._read("predict", inputs["predict_npy"])
            self._check_channels("predict")

    @property
    def seq_len(self) -> int:
        return self.input_frames + self.output_frames

    def source(self, split: str) -> str | None:
        """The file a split's sequences come from (validation held out of the training file; predict falls back
        to the test file); None for generated ones."""
        if split == "predict" and self.paths["predict"] is None:
            split = "test"
        return self.paths[split] or (self.paths["train"] if split == "val" else None)

    def _checked(self, array: np.ndarray, path: str, split: str) -> np.ndarray:
        """The split's sequences cut to the frames used, bad ones handled (`on_bad_sample`); a whole file that
        cannot serve is a one-line error naming it."""
        read_as = (f"read as {len(array)} sequences of {array.shape[1]} frames of {array.shape[2]}x{array.shape[3]}; "
                   "--data.npy_layout tnhw|nthw says which axis is time")
        if len(array) == 0:
            raise BadInputError(f"{path}: holds no sequences ({read_as})")
        if split == "predict" and array.shape[1] < self.input_frames:
            raise BadInputError(
                f"{path}: sequences have {array.shape[1]} frames, but this model forecasts from {self.input_frames} "
                f"observed frames; give at least {self.input_frames} per sequence ({read_as})"
            )
        if split != "predict" and array.shape[1] < self.seq_len:  # every sequence of the array: the file is unusable
            hint = "; to forecast from observed frames only, pass it to `rnnsuite predict` as --data.predict_npy" \
                if split == "test" and array.shape[1] >= self.input_frames else ""
            raise BadInputError(
                f"{path}: sequences have {array.shape[1]} frames, fewer than input_frames + output_frames = "
                f"{self.input_frames} + {self.output_frames}; lower --data.output_frames or use longer clips{hint}"
            )
        array = array[:, : self.seq_len]
        bad = bad_sequences(array)
        for i, reason in bad:
            handle(self.on_bad_sample, BadSampleError(
                path, reason, "scale the frames to [0, 1] (or save uint8) and replace missing values", f"sequence {i}"),
                self.skipped[split])
        if split != "predict":  # predict lists its skips after writing the forecasts
            warn_skipped(f"{split} sequences", self.skipped[split], len(array))
        if len(bad) == len(array):
            raise BadInputError(f"{path}: every sequence was skipped as bad ({self.skipped[split][0]}, ...)")
        return np.delete(array, [i for i, _ in bad], axis=0) if bad else array

    def build_dataset(self, split: str) -> Dataset:
        if split == "predict" and "predict" not in self.arrays:
            if "test" in self.arrays:  # --data.test_npy: full sequences, as `test` reads them
                self.skipped["predict"] = list(self.skipped["test"])
                return self.dataset("test")
            raise BadInputError(
                f"rnnsuite predict needs --data.predict_npy FILE: a .npy/.npz of frame sequences (N, T, H, W[, C]) "
                f"or a Moving MNIST file (T, N, H, W), at least {self.input_frames} frames each; the model forecasts "
                f"the next {self.output_frames}"
            )
        if split in self.arrays:
            return ArrayFrames(self.arrays[split], os.path.basename(self.source(split)))
        if self.frame_channels != 1:
            raise BadInputError(
                f"no {split} frames: the files have {self.frame_channels} channels but generated Moving MNIST "
                f"is gray; pass --data.{split}_npy"
            )
        return GeneratedFrames(
            MovingMNIST(split, self.counts[split], self.seq_len, self.num_digits, self.frame_size, seed=self.seed)
        )

    def collate(self, split: str) -> Callable:
        return collate_frames

    def batching(self, split: str, dataset: Dataset) -> dict[str, Any]:
        # generated training sequences are drawn at random already; file sequences are shuffled
        return {"batch_size": self.batch_size, "shuffle": split == "train" and split in self.arrays}
