"""Frame arrays in .npy/.npz files -> (N, T, H, W, C).

Layouts:
- the standard Moving MNIST file (`mnist_test_seq.npy`): uint8 (T, N, H, W), time first ("tnhw");
- generic arrays (N, T, H, W) or (N, T, H, W, C) ("nthw"), uint8 in 0..255 or float in [0, 1].
"auto" takes a 4-D array as time-first when the file is named mnist_test_seq*, or when its first axis is a
sequence length (20, the Moving MNIST length, or one the model reads, e.g. its 10 observed frames) and its second
is not; pass npy_layout to say it explicitly.
"""
from __future__ import annotations

import os
import zipfile
from typing import Literal

import numpy as np

from datamodules.bad_samples import BadInputError, MissingInputError

Layout = Literal["auto", "tnhw", "nthw"]


def _load_array(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise MissingInputError(f"frame file {path} {'is a folder' if os.path.isdir(path) else 'does not exist'}; "
                                "give one .npy or .npz file")
    if not path.endswith((".npy", ".npz")):
        raise BadInputError(f"{path}: frame files must be .npy or .npz arrays")
    try:
        if path.endswith(".npy"):
            return np.load(path, mmap_mode="r")
        with np.load(path) as archive:
            keys = list(archive.keys())
            key = "frames" if "frames" in keys else keys[0] if len(keys) == 1 else None
            if key is None:
                raise KeyError(f"it holds several arrays ({', '.join(keys)}); name the frame array 'frames'")
            return archive[key]
    except KeyError as err:
        raise BadInputError(f"{path}: {err.args[0]}") from err
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:  # numpy's signals of a truncated/corrupt file
        raise BadInputError(f"{path}: cannot read the frame array ({err}); the file is truncated or not a numpy "
                            "array: save it again with numpy.save / numpy.savez") from err


def time_first(path: str, shape: tuple[int, ...], lengths: tuple[int, ...] = (20,)) -> bool:
    """Whether "auto" reads a 4-D array as (T, N, H, W): see the module docstring."""
    return os.path.basename(path).startswith("mnist_test_seq") or (shape[0] in lengths and shape[1] not in lengths)


def read_frames(path: str, layout: Layout = "auto", lengths: tuple[int, ...] = (20,)) -> np.ndarray:
    """A frame file -> (N, T, H, W, C) array, uint8 or float in [0, 1] (not yet scaled). `lengths`: sequence
    lengths by which "auto" recognises a time-first array."""
    array = _load_array(path)
    if array.ndim not in (4, 5):
        raise BadInputError(
            f"{path}: frame array has shape {array.shape}; expected (T, N, H, W) (Moving MNIST file), "
            "(N, T, H, W) or (N, T, H, W, C)"
        )
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise BadInputError(f"{path}: frames have dtype {array.dtype}; save them as uint8 (0..255) or float in [0, 1]")
    if array.ndim == 4:
        if layout == "auto":
            layout = "tnhw" if time_first(path, array.shape, lengths) else "nthw"
        if layout == "tnhw":
            array = array.swapaxes(0, 1)
        array = array[..., None]
    elif layout == "tnhw":
        raise BadInputError(f"{path}: npy_layout='tnhw' is for 4-D (T, N, H, W) arrays; this one has shape {array.shape}")
    if array.shape[-1] not in (1, 3):
        raise BadInputError(f"{path}: frames of shape {array.shape} have {array.shape[-1]} channels in the last axis; expected 1 or 3")
    return array
