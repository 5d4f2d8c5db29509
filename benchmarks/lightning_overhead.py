"""Training step of every task under Lightning (rnnsuite's SequenceTask + the config's trainer) vs a hand-written
PyTorch loop over the same model, optimizer, schedule, gradient clipping and pre-built batches (goal: <= 3 %).

Each task is built from its default config (configs/<task>.yaml) through the real CLI; `--steps` batches are drawn
once from its datamodule and both variants train a fresh copy of the same initial model on them, alternating
Lightning and the loop `--repeats` times; every step is timed and the ratio is that of the median steps. Data
loading is excluded from both (see data_pipeline.py). With one thread, times are the process's CPU time (--clock).
Run: `nice -n 5 .venv/bin/python benchmarks/lightning_overhead.py [--task all|captioning|activity|phonemes|frames]`.
"""
from __future__ import annotations

import statistics
import time

import pytorch_lightning as pl
import torch

from common import TASKS, base_parser, build, clock, first_batches, fresh, interleaved, machine, print_table, \
    setup, train_only_trainer


def hand_written(template, batches, clip: float) -> list[float]:
    """Seconds of each step of the plain loop: compute_loss, backward, clip, optimizer and scheduler step."""
    model = fresh(template).train()
    opt = model.configure_optimizers()
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    marks = [clock()]
    for batch in batches:
        loss, _ = model.compute_loss(batch, "train")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        marks.append(clock())
    return [b - a for a, b in zip(marks, marks[1:])]


def _as_is(batch):
    return batch


class _StepTimer(pl.Callback):
    """Marks the start of every training batch and the end of the last: step i is marks[i+1] - marks[i], everything
    Lightning does between two batches included; Trainer set-up and teardown are not."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.marks = []
        self.marks.append(clock())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.last = clock()

    def steps(self) -> list[float]:
        marks = self.marks + [self.last]
        return [b - a for a, b in zip(marks, marks[1:])]


def move_tensor_fields(batch, device, dataloader_idx):
    """transfer_batch_to_device that moves a NamedTuple batch's tensor fields and leaves its other fields alone:
    Lightning's default walks every element of nested lists (captioning's references: thousands of strings)."""
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(f.to(device, non_blocking=True) if isinstance(f, torch.Tensor) else f for f in batch))
    return batch


def lightning(template, batches, cli, config_callbacks: bool = True, fieldwise_transfer: bool = False) -> list[float]:
    model, timer = fresh(template), _StepTimer()
    if fieldwise_transfer:
        model.transfer_batch_to_device = move_tensor_fields
    trainer = train_only_trainer(cli, [timer], config_callbacks)
    # the same pre-built batches, handed over as they are (no default_convert walking them again)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, collate_fn=_as_is)
    trainer.fit(model, train_dataloaders=loader)
    return timer.steps()


def measure(task: str, steps: int | None, seconds: float, repeats: int, quick: bool) -> list:
    template, datamodule, cli = build(task, quick=quick)
    batches = first_batches(datamodule, steps or 20)
    clip = cli.config_init["trainer"]["gradient_clip_val"] or 0.0
    step = statistics.median(hand_written(template, batches[:3], clip))  # warm-up (allocator, oneDNN) and an estimate
    if steps is None:  # about `seconds` per measurement, at least 3 steps
        batches = batches[: max(3, min(len(batches), round(seconds / step)))]
    lightning(template, batches[:2], cli)  # warm-up: Lightning's own first-fit costs
    variants = {
        "loop": lambda: hand_written(template, batches, clip),
        "lightning": lambda: lightning(template, batches, cli),
        "bare": lambda: lightning(template, batches, cli, config_callbacks=False),
        "fieldwise": lambda: lightning(template, batches, cli, fieldwise_transfer=True),
    }
    runs = interleaved(variants, repeats)  # per variant: one list of step times per repeat
    # the median step over all repeats: a step that waited for a core busy with another job does not move it
    step = {name: statistics.median(t for run in rs for t in run) for name, rs in runs.items()}
    ratio = step["lightning"] / step["loop"]
    return [task, f"{len(batches)} x {len(batches[0][0])} x {repeats}", step["loop"] * 1e3, step["lightning"] * 1e3,
            ratio, f"{(ratio - 1) * 100:+.1f} %", step["bare"] / step["loop"], step["fieldwise"] / step["loop"],
            "yes" if ratio <= 1.03 else "no"]


def extras(task: str, quick: bool) -> list[list]:
    """Two things Lightning does every step that the loop does not, timed alone on this task's batch and model
    (precise where whole-step ratios drown in noise), as a share of the loop's median step."""
    from lightning_fabric.utilities.apply_func import move_data_to_device
    from pytorch_lightning.utilities import grad_norm

    template, datamodule, cli = build(task, quick=quick)
    batches = first_batches(datamodule, 3)
    step = statistics.median(hand_written(template, batches, cli.config_init["trainer"]["gradient_clip_val"] or 0.0))
    model = fresh(template).train()
    loss, _ = model.compute_loss(batches[0], "train")
    loss.backward()
    rows = []
    for name, fn in [("batch_to_device (walks the whole batch)", lambda: move_data_to_device(batches[0], torch.device("cpu"))),
                     ("tensor fields only (move_tensor_fields)", lambda: move_tensor_fields(batches[0], torch.device("cpu"), 0)),
                     ("GradNormMonitor: grad_norm(model)", lambda: grad_norm(model, 2.0))]:
        fn()
        start, n = clock(), 20
        for _ in range(n):
            fn()
        seconds = (clock() - start) / n
        rows.append([task, name, seconds * 1e3, seconds / step])
    return rows


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--task", choices=["all", *TASKS], default="all")
    parser.add_argument("--steps", type=int, default=None, help="batches per measurement (default: about --seconds)")
    parser.add_argument("--seconds", type=float, default=3.0, help="target duration of one measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved Lightning/loop pairs")
    args = parser.parse_args()
    setup(args)
    if args.quick:
        args.steps, args.repeats = 2, 1
    rows = [measure(task, args.steps, args.seconds, args.repeats, args.quick) for task in (TASKS if args.task == "all" else [args.task])]
    print_table(
        f"Lightning vs hand-written loop, training step, default configs ({machine()}); ratio = Lightning / loop "
        f"median step time, over all steps of {args.repeats} interleaved repeats; 'no callbacks' = Lightning without the config's "
        "callbacks (GradNormMonitor); 'tensor fields' = with a transfer_batch_to_device that moves only the batch's "
        "tensor fields",
        ["task", "steps x batch x repeats", "loop ms/step", "Lightning ms/step", "ratio", "overhead", "ratio, no callbacks",
         "ratio, tensor fields", "<= 3 %"], rows,
    )
    rows = [row for task in (TASKS if args.task == "all" else [args.task]) for row in extras(task, args.quick)]
    print_table(f"Per-step work Lightning adds, timed alone ({machine()}); ratio = its time / the loop's median step",
                ["task", "work", "ms", "ratio"], rows)


if __name__ == "__main__":
    main()
