"""Callbacks every task uses: the gradient-norm monitor and the checkpoint on interruption."""
from __future__ import annotations

import os

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import grad_norm, rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch.optim import Optimizer


class GradNormMonitor(pl.Callback):
    """Logs the total gradient norm before clipping as `train/grad_norm` (exploding gradients show up as
    spikes, vanishing ones as a slide towards zero), and optionally one norm per parameter tensor.

    Lightning calls `on_before_optimizer_step` after backward and before `gradient_clip_val` is applied,
    so the logged value is the raw norm the clipping acts on.

    Args:
        norm_type: p of the p-norm.
        per_layer: also log `train/grad_norm/<parameter name>` for every parameter.
    """

    def __init__(self, norm_type: float = 2.0, per_layer: bool = False) -> None:
        self.norm_type, self.per_layer = float(norm_type), per_layer

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer) -> None:
        norms = grad_norm(pl_module, norm_type=self.norm_type)
        if not norms:
            return
        prefix = f"grad_{self.norm_type}_norm"
        pl_module.log("train/grad_norm", norms.pop(f"{prefix}_total"), on_step=True, on_epoch=False)
        if self.per_layer:
            pl_module.log_dict(
                {f"train/grad_norm/{name[len(prefix) + 1:]}": v for name, v in norms.items()}, on_step=True, on_epoch=False
            )


class CheckpointOnInterrupt(pl.Callback):
    """SIGTERM (a preempted node, `kill`) or Ctrl-C: save `<checkpoint dir>/interrupted.ckpt` before exiting.

    Lightning stops at the end of the running batch on SIGTERM (raising SIGTERMException) and on Ctrl-C, then calls
    `on_exception`; the saved state holds model, optimizer, scheduler, loop and RNG state, so
    `rnnsuite fit ... --ckpt_path <dir>/interrupted.ckpt` continues from there.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.state.fn != "fit":
            return
        path = os.path.join(self.dirpath, "interrupted.ckpt")
        trainer.save_checkpoint(path)
        rank_zero_info(f"interrupted ({type(exception).__name__}): saved {path}; resume with --ckpt_path {path}")


class TorchThreads(pl.Callback):
    """Sets torch's intra-op threads at setup. On a CPU shared with other jobs, 1 thread runs this model's small
    convolutions several times faster than 2 (threads of one op wait on each other whenever a core is taken).

    Args:
        num_threads: torch.set_num_threads value.
    """

    def __init__(self, num_threads: int = 1) -> None:
        self.num_threads = num_threads

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        torch.set_num_threads(self.num_threads)
