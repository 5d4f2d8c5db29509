"""Data pipeline throughput vs the model's consumption, per task (goal: the datamodule produces >= 3x the samples/s
the training step consumes, so the model never waits).

Each task is built from its default config (configs/<task>.yaml) with its default DataLoader workers. "produced" =
samples/s from iterating its train_dataloader (collation included); "consumed" = samples/s of the hand-written
training step (lightning_overhead.py) on pre-built batches. The two are measured alternately, `--repeats` times.
With num_workers=0 loading runs in the training process, so the model waits for it every step: `wait` is the share
of a step spent loading, 1 / (1 + ratio).
For the phoneme task a second table times the log-mel features computed inside the model (not cached) against the
whole training step.
Run: `nice -n 5 .venv/bin/python benchmarks/data_pipeline.py [--task all|captioning|...]`.
"""
from __future__ import annotations

import itertools
import statistics
import time

import torch

from common import TASKS, base_parser, build, first_batches, interleaved, machine, median_ratio, print_table, \
    samples_in, setup
import common
from lightning_overhead import hand_written


def produce(datamodule, batches: int) -> float:
    """Seconds per sample drawn from a fresh train loader (worker start-up included, as each epoch pays it)."""
    start, n = common.clock(), 0
    for batch in itertools.islice(datamodule.train_dataloader(), batches):
        n += samples_in(batch)
    return (common.clock() - start) / n


def measure(task: str, loader_batches: int, steps: int, repeats: int, quick: bool) -> tuple[list, object, list]:
    model, datamodule, cli = build(task, quick=quick)
    # CPU time of this process where loading runs in it (robust to other jobs on the machine), else wall time
    common.CLOCK = "cpu" if datamodule.num_workers == 0 and torch.get_num_threads() == 1 else "wall"
    batches = first_batches(datamodule, steps)
    clip = cli.config_init["trainer"]["gradient_clip_val"] or 0.0
    per_sample = sum(samples_in(b) for b in batches)
    hand_written(model, batches[:1], clip)  # warm-up
    times = interleaved({
        "produce": lambda: produce(datamodule, loader_batches),
        "consume": lambda: sum(hand_written(model, batches, clip)) / per_sample,
    }, repeats)
    ratio = median_ratio(times["consume"], times["produce"])  # (s/sample consumed) / (s/sample produced)
    row = [task, datamodule.num_workers, common.CLOCK, f"{1 / statistics.median(times['produce']):.0f}",
           f"{1 / statistics.median(times['consume']):.0f}", ratio, f"{100 / (1 + ratio):.1f} %",
           "yes" if ratio >= 3 else "no"]
    return row, model, batches


def log_mel_share(model, batches: list, repeats: int) -> list:
    """Phonemes: the log-mel front end (what a feature cache would save) vs a full forward + backward step."""
    encoder = model.encoder
    batch = batches[0]

    def mel():
        start = common.clock()
        with torch.no_grad():
            encoder.mel(batch.audio)
        return common.clock() - start

    def step():
        start = common.clock()
        loss, _ = model.compute_loss(batch, "train")
        loss.backward()
        model.zero_grad(set_to_none=True)
        return common.clock() - start

    mel(), step()
    times = interleaved({"mel": mel, "step": step}, repeats)
    share = median_ratio(times["mel"], times["step"])
    return ["phonemes", f"B{len(batch.audio)}, {batch.audio.shape[1] / 16000:.1f} s", statistics.median(times["mel"]) * 1e3,
            statistics.median(times["step"]) * 1e3, share]


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--task", choices=["all", *TASKS], default="all")
    parser.add_argument("--loader_batches", type=int, default=20, help="batches drawn per throughput measurement")
    parser.add_argument("--steps", type=int, default=4, help="training steps per consumption measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    setup(args)
    if args.quick:
        args.loader_batches, args.steps, args.repeats = 2, 1, 1
    rows, mel_rows = [], []
    for task in TASKS if args.task == "all" else [args.task]:
        row, model, batches = measure(task, args.loader_batches, args.steps, args.repeats, args.quick)
        rows.append(row)
        if task == "phonemes":
            mel_rows.append(log_mel_share(model, batches, max(args.repeats, 3)))
    print_table(f"Data pipeline vs model, default configs and workers ({machine()}); ratio = median over "
                f"{args.repeats} alternating repeats of produced / consumed samples per second",
                ["task", "workers", "clock", "produced samples/s", "consumed samples/s", "ratio", "wait (workers=0)", ">= 3x"],
                rows)
    if mel_rows:
        print_table("Audio features: log-mel inside the model vs the whole training step (forward + backward); "
                    "ratio = log-mel / step", ["task", "batch", "log-mel ms", "step ms", "ratio"], mel_rows)


if __name__ == "__main__":
    main()
