"""Features of a frozen encoder, computed once per image or frame into a memory-mapped disk cache.

A task whose encoder is frozen hands its datamodule a `FeatureSource` (what to compute, and a fingerprint of the
encoder); the datamodule builds one `FeatureTable` per split and its batches then carry `features`, so training
runs at decoder speed. A table is keyed by every item (file path, size and modification time, or the bytes of
generated data), by the transform that made the pixels, and by the encoder (class, arguments, weights): change
any of them and a new table is built. Tables are written to a temporary name and renamed, so a reader sees a
whole table or none.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from datamodules.base import cache_root
from datamodules.bad_samples import BadInputError

#: the dtype features are stored in: half the disk and page cache of float32, ~1e-3 relative error
STORE_DTYPE = np.float16




class FeatureSource:
    """What a task hands its datamodule to cache features: `fn` of a frozen `module`.

    fn:  (N, 3, H, W) normalised pixels -> (N, *row_shape) features; run in eval mode, without gradients, on the
         module's device.
    tag: names what `fn` returns (e.g. "seq" or "frames"), part of the key with the module's fingerprint.
    batch_size: pixels encoded per call.

    The key is computed when a table is looked up, not when the source is made: Lightning loads a checkpoint's
    weights after `setup()`, and the cache must be keyed by the weights that compute the features.
    """

    def __init__(self, module: nn.Module, fn: Callable[[Tensor], Tensor], tag: str, batch_size: int = 64) -> None:
        self.module, self.fn, self.tag, self.batch_size = module, fn, tag, batch_size

    @property
    def key(self) -> str:
        return f"{module_fingerprint(self.module)}|{self.tag}"

    def encode(self, pixels: Tensor) -> Tensor:
        was_training = self.module.training
        self.module.eval()
        try:
            device = next(self.module.parameters()).device
            with torch.inference_mode():
                return self.fn(pixels.to(device))
        finally:
            self.module.train(was_training)


def module_fingerprint(module: nn.Module) -> str:
    """Hash of a module's class, architecture and arguments (its repr and every submodule's plain attributes)
    and of its state dict, so two encoders share cached features only when they compute the same thing."""
    digest = hashlib.sha1(repr(module).encode())
    for name, sub in module.named_modules():
        plain = {k: v for k, v in vars(sub).items()  # arguments such as spatial, grid, stride; not the train/eval mode
                 if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str, tuple))}
        digest.update(f"{name}:{type(sub).__qualname__}:{sorted(plain.items())}".encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_key(path: str) -> str:
    """A file as a cache key: absolute path, size and modification time."""
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def array_key(array: np.ndarray) -> str:
    """In-memory data (generated scenes or clips) as a cache key: a hash of its bytes and shape."""
    digest = hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16).hexdigest()
    return f"{digest}|{array.shape}|{array.dtype}"


class FeatureTable:
    """Ragged features on disk: item i has `counts[i]` rows (1 per image, 1 per cached frame of a video).

    `table[i]` is a read-only (counts[i], *row_shape) memory-mapped view; `valid[i]` is False for an item whose
    pixels could not be read (a bad sample in skip mode), whose rows are zeros.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path[: -len(".npy")] + ".json") as f:
            meta = json.load(f)
        self.offsets = np.asarray(meta["offsets"], dtype=np.int64)  # (N + 1,)
        self.valid = np.asarray(meta["valid"], dtype=bool)          # (N,)
        self.rows = np.load(path, mmap_mode="r")                     # (sum(counts), *row_shape)

    def __len__(self) -> int:
        return len(self.valid)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.rows[self.offsets[i]: self.offsets[i + 1]]

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.rows.shape[1:])


class _Pixels(Dataset):
    def __init__(self, load: Callable[[int], Tensor | None], n: int) -> None:
        self.load, self.n = load, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[int, Tensor | None]:
        return i, self.load(i)


def _as_list(batch: list) -> list:
    return batch


def load_or_build(name: str, item_keys: Sequence[str], counts: Sequence[int], transform_key: str, source: FeatureSource,
                  load: Callable[[int], Tensor | None], num_workers: int = 0, root: str | None = None) -> FeatureTable:
    """The table of `item_keys` (item i = `counts[i]` rows), built on a cache miss.

    load(i) -> (counts[i], 3, H, W) normalised pixels of item i, or None for a bad one; it runs in `num_workers`
    DataLoader processes (decoding is the slow part for real files); `source.encode` runs here, in batches.
    """
    if len(item_keys) != len(counts):
        raise ValueError(f"{name}: {len(item_keys)} item keys but {len(counts)} counts")
    digest = hashlib.sha1("\n".join([source.key, transform_key, *item_keys]).encode()).hexdigest()[:24]
    root = root or cache_root("features")
    path = os.path.join(root, f"{name}-{digest}.npy")
    if os.path.exists(path) and os.path.exists(path[:-4] + ".json"):
        return FeatureTable(path)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rank_zero_info(f"feature cache: encoding {int(offsets[-1])} {name} images/frames of {len(item_keys)} items once "
                   f"into {path}")
    os.makedirs(root, exist_ok=True)
    tmp = f"{path[:-4]}.{os.getpid()}.tmp"
    loader = DataLoader(_Pixels(load, len(item_keys)), batch_size=max(1, source.batch_size // max(1, max(counts, default=1))),
                        num_workers=num_workers, collate_fn=_as_list)
    valid = np.zeros(len(item_keys), dtype=bool)
    rows: np.ndarray | None = None
    pending: list[tuple[int, Tensor]] = []

    def flush() -> None:
        nonlocal rows
        if not pending:
            return
        feats = source.encode(torch.cat([p for _, p in pending])).float().cpu().numpy()  # (sum n_i, *row_shape)
        if rows is None:  # the row shape is known after the first batch
            rows = np.lib.format.open_memmap(tmp + ".npy", mode="w+", dtype=STORE_DTYPE, shape=(int(offsets[-1]), *feats.shape[1:]))
        start = 0
        for i, pixels in pending:
            n = len(pixels)
            rows[offsets[i]: offsets[i] + n] = feats[start: start + n]
            start += n
        pending.clear()

    for batch in loader:
        for i, pixels in batch:
            if pixels is None:
                continue
            if len(pixels) != counts[i]:
                raise ValueError(f"{name}: item {i} ({item_keys[i]}) has {len(pixels)} frames, expected {counts[i]}")
            valid[i] = True
            pending.append((i, pixels))
        if sum(len(p) for _, p in pending) >= source.batch_size:
            flush()
    flush()
    if rows is None:
        raise BadInputError(f"{name}: no readable item to encode ({len(item_keys)} items, all bad)")
    rows.flush()
    del rows
    with open(tmp + ".json", "w") as f:
        json.dump({"offsets": offsets.tolist(), "valid": valid.tolist(), "transform": transform_key}, f)
    os.replace(tmp + ".json", path[:-4] + ".json")
    os.replace(tmp + ".npy", path)  # last: the .npy appearing means the table is complete
    return FeatureTable(path)


def attach_feature_source(datamodule: object, source: FeatureSource, frozen: bool) -> None:
    """What a task's `setup()` calls with `cache_features` on: checks that caching is sound, then hands the
    datamodule the source (it builds the tables when it first makes each split's dataset)."""
    if not frozen:
        raise BadInputError("--model.cache_features true needs --model.freeze_encoder true: features of an encoder "
                            "that trains would go stale after the first step")
    if not hasattr(datamodule, "use_cached_features"):
        raise BadInputError(f"--model.cache_features true: {type(datamodule).__name__} cannot cache features; "
                            "use the task's datamodule or --model.cache_features false")
    datamodule.use_cached_features(source)
