"""What every task's datamodule shares: the four dataloader hooks, each one split name away from `loader`."""
from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
from torch.utils.data import DataLoader

Split = Literal["train", "val", "test", "predict"]


class SplitDataModule(pl.LightningDataModule):
    """Subclasses implement `_loader(split)`; Lightning's hooks call it with the split's name."""

    def _loader(self, split: Split) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
