"""The one LightningModule every task shares: step, logging as `stage/name`, optimizer and schedule.

A task subclass overrides `compute_loss` (and, for its metrics, `update_metrics` / `compute_metrics`)
and sets `main_metric`; everything else lives here once.
"""
from __future__ import annotations

import math
import os
import random
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, Timer
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric

from apps.callbacks import CheckpointOnInterrupt
from datamodules.bad_samples import SkippedBatch

Stage = Literal["train", "val", "test"]


class SequenceTask(pl.LightningModule):
    """Shared core of all rnnsuite tasks.

    Args:
        lr: peak learning rate.
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        optimizer: adamw, adam or sgd (momentum 0.9, Nesterov).
        scheduler: none, cosine (to 0 after warm-up, over the planned steps) or plateau (halve on a stalled main metric).
        warmup_steps: linear warm-up from 0 to `lr` over this many optimizer steps.
    """

    #: metric that picks the best checkpoint, and whether higher is better
    main_metric: str = "val/loss"
    main_metric_mode: Literal["min", "max"] = "min"

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: Literal["adamw", "adam", "sgd"] = "adamw",
        scheduler: Literal["none", "cosine", "plateau"] = "cosine",
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        self.lr, self.weight_decay = lr, weight_decay
        self.optimizer_name, self.scheduler_name, self.warmup_steps = optimizer, scheduler, warmup_steps
        self._skipped: dict[str, list[str]] = {}  # per stage: samples the collate left out this epoch
        self.eval_loss = torch.nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})  # states not in checkpoints

    # --- what a task provides -------------------------------------------------------------------
    def compute_loss(self, batch: Any, stage: Stage) -> tuple[Tensor, Any]:
        """Return (scalar loss, outputs handed to `update_metrics`)."""
        raise NotImplementedError

    def update_metrics(self, batch: Any, outputs: Any, stage: Stage) -> None:
        """Accumulate evaluation metrics for one batch (val/test only)."""

    def compute_metrics(self, stage: Stage) -> dict[str, float | Tensor]:
        """Metrics for the finished epoch, keyed without the stage prefix (e.g. {"bleu4": 0.8})."""
        return {}

    def on_eval_epoch_end(self, stage: Stage) -> None:
        """Hook for media logging etc. after metrics were computed (val/test only)."""

    # --- the shared step ------------------------------------------------------------------------
    def shared_step(self, batch: Any, stage: Stage, batch_idx: int = 0) -> Tensor | None:
        # skip mode (--data.on_bad_sample skip): batches carry what their collate left out
        self._skipped.setdefault(stage, []).extend(getattr(batch, "skipped", ()))
        if isinstance(batch, SkippedBatch):  # every sample was bad
            if stage == "train" and self._trainer is not None and self.trainer.world_size > 1:
                # DDP: every rank must join the gradient all-reduce, so a zero loss through every parameter
                return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return None  # no step (Lightning skips a None training step)
        loss, outputs = self.compute_loss(batch, stage)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite {stage} loss ({loss.item()}) at global step {self.global_step}, epoch {self.current_epoch}, "
                f"batch {batch_idx}{self.describe_batch(batch)}; lower --model.lr or set --trainer.gradient_clip_val "
                "(train/grad_norm in the logs shows the explosion that led here)"
            )
        batch_size = self.batch_size_of(batch)
        if stage == "train":
            self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
            if self._trainer is not None and self.trainer.optimizers:
                self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        else:
            # a Metric, not a tensor: its weighted sum and count are synced, so the epoch loss is right under DDP
            # even when ranks hold different numbers of samples (Lightning's sync_dist averages rank means)
            self.eval_loss[stage].update(loss.detach(), weight=batch_size)
            self.log(f"{stage}/loss", self.eval_loss[stage], prog_bar=True, batch_size=batch_size)
            self.update_metrics(batch, outputs, stage)
        return loss

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Batches are NamedTuples of tensors plus metadata (ids, reference captions): move only the tensor fields.
        Lightning's default walks every string of the references, 5 % of a captioning CPU step
        (benchmarks/lightning_overhead.py)."""
        if isinstance(batch, tuple) and hasattr(batch, "_fields"):
            return batch._replace(**{
                name: value.to(device, non_blocking=True)
                for name, value in zip(batch._fields, batch) if isinstance(value, Tensor)
            })
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def batch_size_of(self, batch: Any) -> int:
        return len(batch[0])

    def describe_batch(self, batch: Any) -> str:
        """Names of the samples in a batch for error messages, e.g. ' (samples: a.jpg, b.jpg)'."""
        for field in ("image_ids", "ids", "names", "paths", "files"):
            names = getattr(batch, field, None)
            if names:
                shown = ", ".join(map(str, names[:8])) + (", ..." if len(names) > 8 else "")
                return f" (samples: {shown})"
        return ""

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        return self.shared_step(batch, "train", batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        return self.shared_step(batch, "val", batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        return self.shared_step(batch, "test", batch_idx)

    def report_skipped(self, stage: Stage) -> None:
        """End of epoch in skip mode: `<stage>/skipped_samples` and one warning listing the bad samples left out
        (skipped while indexing, kept by the datamodule, plus those skipped while loading, carried by the batches)."""
        datamodule = self.trainer.datamodule  # None when fit was given bare dataloaders
        loaded = self._skipped.pop(stage, [])
        if getattr(datamodule, "on_bad_sample", "error") != "skip" or self.trainer.sanity_checking:
            return  # error mode skips nothing; what sanity checking skipped, the real validation meets again
        indexed = list(datamodule.skipped.get(stage, []))
        # load-time skips differ per process under DDP; index-time ones are the same everywhere
        count = len(indexed) + int(self.trainer.strategy.reduce(torch.tensor(float(len(loaded)), device=self.device),
                                                                reduce_op="sum"))
        self.log(f"{stage}/skipped_samples", float(count), batch_size=1)
        if count:
            names = indexed + loaded
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            # epoch and step in the text: Python shows a repeated warning only once
            rank_zero_warn(f"{stage}: skipped {count} bad samples in epoch {self.current_epoch} (step {self.global_step}): "
                           f"{shown}")

    def on_train_epoch_end(self) -> None:
        self.report_skipped("train")

    def _eval_epoch_end(self, stage: Stage) -> None:
        self.report_skipped(stage)
        metrics = {f"{stage}/{name}": value for name, value in self.compute_metrics(stage).items()}
        if metrics:
            self.log_dict(metrics, prog_bar=True, sync_dist=True)
        self.on_eval_epoch_end(stage)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # --- checkpoints: random-number state, so a resumed run draws what the uninterrupted one would -------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        python_state = random.getstate()
        numpy_state = np.random.get_state()
        # only tensors and plain values: the checkpoint stays loadable with weights_only=True
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "python": [python_state[0], list(python_state[1]), python_state[2]],
            "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        torch.set_rng_state(states["torch"])
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, *rest = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))

    # --- optimisation ---------------------------------------------------------------------------
    def training_progress(self, after_warmup: int = 0) -> float:
        """Fraction of training done, in [0, 1]: by optimizer steps of the planned total, or, with
        --trainer.max_time, by the time budget when that is nearer its end."""
        if self._trainer is None:
            return 0.0
        total = max(1, int(self.trainer.estimated_stepping_batches) - after_warmup)
        progress = (self.trainer.global_step - after_warmup) / total
        timer = next((cb for cb in self.trainer.callbacks if isinstance(cb, Timer)), None)
        if timer is not None:
            elapsed, remaining = timer.time_elapsed("train"), timer.time_remaining("train")
            if remaining is not None and elapsed + remaining > 0:
                progress = max(progress, elapsed / (elapsed + remaining))
        return min(1.0, max(0.0, progress))

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimizer; a task overrides this for per-module learning rates."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self) -> Any:
        params = self.param_groups()
        if self.optimizer_name == "sgd":
            optimizer = torch.optim.SGD(params, lr=self.lr, momentum=0.9, nesterov=True, weight_decay=self.weight_decay)
        elif self.optimizer_name == "adam":
            optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler_name == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=self.main_metric_mode, factor=0.5, patience=2)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": self.main_metric}}
        warmup = self.warmup_steps
        cosine = self.scheduler_name == "cosine"

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            if not cosine:
                return 1.0
            return 0.5 * (1.0 + math.cos(math.pi * self.training_progress(after_warmup=warmup)))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_callbacks(self) -> list[pl.Callback]:
        """Under <default_root_dir>/checkpoints: the best epoch by this task's main metric, last.ckpt after every
        epoch (what `--ckpt_path last` resumes), and interrupted.ckpt on SIGTERM/Ctrl-C."""
        if self.trainer is None or not self.trainer.checkpoint_callbacks:
            return []
        dirpath = os.path.join(self.trainer.default_root_dir, "checkpoints")
        best = ModelCheckpoint(
            dirpath=dirpath, filename="best-{epoch:03d}-{step}", monitor=self.main_metric, mode=self.main_metric_mode,
            auto_insert_metric_name=False,
        )
        # ModelCheckpoint(save_last=True) refreshes last.ckpt only when a best checkpoint is written; a second,
        # unmonitored one keeps the latest epoch.
        last = ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
        return [CheckpointOnInterrupt(dirpath), best, last]
