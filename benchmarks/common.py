"""What every benchmark shares: thread set-up, building a task from its default config, timing, the ratio table.

Scripts run as files (`python benchmarks/X.py`), so they import this module as `common`.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import os
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from apps.tasks import TASKS as REGISTRY

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
TASKS = list(REGISTRY)

# A Trainer that only trains: no logger, checkpoints, progress bar, validation or time limit. What is left of
# the config (gradient clipping, its callbacks such as GradNormMonitor) is what a default run pays per step.
TRAIN_ONLY = dict(
    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    max_epochs=1, max_steps=-1, max_time=None, limit_val_batches=0, num_sanity_val_steps=0,
    val_check_interval=1.0, check_val_every_n_epoch=1,
)

def base_parser(doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the 2-core benchmark machine is shared)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repeat: checks that the script runs")
    parser.add_argument("--clock", choices=["cpu", "wall"], default=None,
                        help="cpu: this process's CPU time (default with 1 thread: other jobs' use of the cores does "
                             "not count); wall: elapsed time (default with more threads)")
    return parser


CLOCK = "wall"


def clock() -> float:
    """Seconds on the clock chosen by --clock (see base_parser)."""
    return time.process_time() if CLOCK == "cpu" else time.perf_counter()


def setup(args: argparse.Namespace) -> None:
    global CLOCK
    torch.set_num_threads(args.threads)
    CLOCK = args.clock or ("cpu" if args.threads == 1 else "wall")
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("WANDB_SILENT", "true")
    warnings.simplefilter("ignore")  # Lightning's advice (workers, self.log outside a Trainer) would bury the table
    import logging

    import pytorch_lightning  # noqa: F401 - sets its loggers' levels on import; quieten them after

    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s), {CLOCK} time")


def build(task: str, overrides: list[str] = (), quick: bool = False):
    """The default config's model, datamodule and CLI (for `cli.instantiate_trainer`), through the real CLI."""
    from pytorch_lightning import LightningDataModule

    from apps.cli import RNNSuiteCLI
    from apps.core import SequenceTask

    args = ["--config", str(CONFIGS / f"{task}.yaml"), "--trainer.logger", "false",
            *(REGISTRY[task].tiny if quick else []), *overrides]
    torch.manual_seed(0)
    cli = RNNSuiteCLI(SequenceTask, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                      save_config_callback=None, run=False, args=args)
    if task == "frames":  # its TorchThreads callback would pin 1 thread; the benchmark's --threads decides
        torch.set_num_threads(torch.get_num_threads())
    return cli.model, cli.datamodule, cli


def train_only_trainer(cli, callbacks: list = (), config_callbacks: bool = True):
    """A fresh Trainer with the config's trainer arguments and callbacks, minus what TRAIN_ONLY turns off."""
    import pytorch_lightning as pl

    config = dict(cli.config_init["trainer"].items())
    own = [cb for cb in config.pop("callbacks", None) or [] if type(cb).__module__.startswith("apps.")]
    config.update(TRAIN_ONLY)
    config["callbacks"] = [copy.deepcopy(cb) for cb in own if config_callbacks] + list(callbacks)
    return pl.Trainer(**config)


def first_batches(datamodule, n: int) -> list[Any]:
    datamodule.prepare_data()
    datamodule.setup("fit")
    batches = list(itertools.islice(datamodule.train_dataloader(), n))
    if not batches:
        raise RuntimeError(f"{type(datamodule).__name__} produced no training batches")
    return batches


def fresh(model):
    return copy.deepcopy(model)


def samples_in(batch: Any) -> int:
    return len(batch[0])


def interleaved(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every variant once per repeat, in turn (ABAB...), so machine noise falls on all of them alike.

    Each callable returns the seconds it measured (per step, per sample, ...); returns all measurements.
    """
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))  # also cancels order effects
        for name in order:
            times[name].append(variants[name]())
    return times


def timed(fn: Callable[[], Any], number: int = 1) -> float:
    start = clock()
    for _ in range(number):
        fn()
    return (clock() - start) / number


def median_ratio(times: list[float], base: list[float]) -> float:
    """Median of the per-repeat ratios (each repeat's pair ran back to back)."""
    return statistics.median(t / b for t, b in zip(times, base))


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    """A Markdown table (pasted as is into RESULTS.md)."""
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |")
    print(flush=True)
