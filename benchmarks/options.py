"""Options a user expects, each timed against the default in the same run (ratio = default time / option time, so
> 1 means the option is faster):

1. training step (hand-written loop, lightning_overhead.py, on pre-built batches of each default config):
   bf16 autocast on CPU (what `--trainer.precision bf16-mixed` does), channels_last for the convolutions (the
   encoder option `channels_last` where the encoder has one, else all 4-D weights), torch.compile of the encoder
   (captioning, activity) or of the ConvLSTM cell (frames), alone and with channels_last — compile time excluded,
   reported separately; an option more than 3x slower than the default is timed once;
2. end to end (the loop drawing from the datamodule's train loader, worker start-up excluded): DataLoader
   num_workers 0 (default) / 1 / 2, for the tasks whose loading is a visible share of a step (data_pipeline.py).
pin_memory only matters when batches are copied to a GPU; without one it is not measured.
Run: `nice -n 5 .venv/bin/python benchmarks/options.py [--no_compile]`.
"""
from __future__ import annotations

import contextlib
import itertools
import statistics
import time

import torch
from torch.utils.data import DataLoader

import common
from common import TASKS, base_parser, build, first_batches, fresh, interleaved, machine, median_ratio, print_table, \
    samples_in, setup


class Trainee:
    """One variant: its own model and optimizer, kept across repeats (a compiled module compiles once)."""

    def __init__(self, template, clip: float, bf16: bool = False, channels_last: bool = False, compile_part: str = "") -> None:
        self.model = fresh(template).train()
        if channels_last:
            # the encoders' own option where they have one (SmallCNNEncoder), else every 4-D weight of the model
            own = [m for m in self.model.modules() if isinstance(getattr(m, "channels_last", None), bool)]
            for m in own:
                m.channels_last = True
            for m in own or [self.model]:
                m.to(memory_format=torch.channels_last)
        if compile_part:
            parent_name, _, child = compile_part.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, child, torch.compile(getattr(parent, child)))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.clip, self.bf16 = clip, bf16

    def step(self, batch) -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast:
            loss, _ = self.model.compute_loss(batch, "train")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()

    def seconds_per_step(self, batches) -> float:
        start = common.clock()
        for batch in batches:
            self.step(batch)
        return (common.clock() - start) / len(batches)


# what torch.compile wraps per task (the module that does most of the step's work)
COMPILE_PART = {"captioning": "encoder", "activity": "encoder", "frames": "decoder.rnn.cells.0"}


def step_options(task: str, seconds: float, repeats: int, quick: bool, compile_: bool) -> list[list]:
    template, datamodule, cli = build(task, quick=quick)
    clip = cli.config_init["trainer"]["gradient_clip_val"] or 0.0
    batches = first_batches(datamodule, 20)
    has_option = any(isinstance(getattr(m, "channels_last", None), bool) for m in template.modules())
    cl_name = "channels_last" + (" (encoder option)" if has_option else " (all 4-D weights)")
    variants = {"fp32 (default)": Trainee(template, clip), "bf16 autocast": Trainee(template, clip, bf16=True),
                cl_name: Trainee(template, clip, channels_last=True)}
    if compile_ and task in COMPILE_PART:
        part = COMPILE_PART[task]
        variants[f"torch.compile({part})"] = Trainee(template, clip, compile_part=part)
        variants[f"{cl_name} + torch.compile({part})"] = Trainee(template, clip, channels_last=True, compile_part=part)
    warm = {}
    for name, trainee in variants.items():  # warm-up; for torch.compile this is the compilation
        try:
            warm[name] = trainee.seconds_per_step(batches[:2]) * 2
        except Exception as err:  # a failed option is a result to report, not a crash
            warm[name] = err
    base_step = warm["fp32 (default)"] / 2
    ok = [n for n in variants if not isinstance(warm[n], Exception)]
    # an option several times slower than the default needs no repeats to be told apart: measured once, 2 steps
    slow = [n for n in ok if not n.startswith("torch.compile") and "compile" not in n and warm[n] / 2 > 3 * base_step]
    n = max(2, min(len(batches), round(seconds / base_step)))
    times = interleaved({name: (lambda v=variants[name]: v.seconds_per_step(batches[:n]))
                         for name in ok if name not in slow}, repeats)
    base = times["fp32 (default)"]
    for name in slow:
        times[name] = [variants[name].seconds_per_step(batches[:2])]
    rows = []
    for name in variants:
        if name not in ok:
            reason = str(warm[name]).split(". ")[0][:110]
            rows.append([task, name, "-", "-", f"failed: {type(warm[name]).__name__}: {reason}"])
            continue
        note = f"first 2 steps {warm[name]:.1f} s (compiling)" if "compile" in name else ""
        if name in slow:
            rows.append([task, name, times[name][0] * 1e3, statistics.median(base) / times[name][0],
                         "measured once: > 3x slower"])
        else:
            rows.append([task, name, statistics.median(times[name]) * 1e3, median_ratio(base, times[name]), note])
    return rows


def loader_with(loader: DataLoader, workers: int) -> DataLoader:
    """The datamodule's train loader with another worker count (same dataset, sampler, collate)."""
    return DataLoader(loader.dataset, batch_sampler=loader.batch_sampler, collate_fn=loader.collate_fn,
                      num_workers=workers)


def worker_options(task: str, seconds: float, repeats: int, quick: bool) -> list[list]:
    template, datamodule, cli = build(task, quick=quick)
    clip = cli.config_init["trainer"]["gradient_clip_val"] or 0.0
    trainee = Trainee(template, clip)
    step = trainee.seconds_per_step(first_batches(datamodule, 2))
    n = max(2, round(seconds / step))
    base_loader = datamodule.train_dataloader()

    def end_to_end(workers: int):
        def run() -> float:
            batches = iter(loader_with(base_loader, workers))
            next(batches)  # worker start-up, paid once per fit with persistent workers
            start, samples = common.clock(), 0
            for batch in itertools.islice(batches, n):
                trainee.step(batch)
                samples += samples_in(batch)
            return (common.clock() - start) / samples
        return run

    common.CLOCK = "wall"  # worker processes' time is not this process's CPU time
    times = interleaved({w: end_to_end(w) for w in (0, 1, 2)}, repeats)
    return [[task, f"num_workers={w}" + (" (default)" if w == datamodule.num_workers else ""),
             1 / statistics.median(t), median_ratio(times[0], t)] for w, t in times.items()]


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--task", choices=["all", *TASKS], default="all")
    parser.add_argument("--seconds", type=float, default=1.5, help="target duration of one measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no_compile", action="store_true", help="skip torch.compile (it compiles for minutes)")
    args = parser.parse_args()
    setup(args)
    if args.quick:
        args.seconds, args.repeats = 0.0, 1
    tasks = TASKS if args.task == "all" else [args.task]
    rows = [row for task in tasks for row in step_options(task, args.seconds, args.repeats, args.quick,
                                                          not args.no_compile and not args.quick)]
    print_table(f"Training-step options vs the default, default configs ({machine()}); ratio = median over "
                f"{args.repeats} interleaved repeats of default time / option time (> 1: the option is faster)",
                ["task", "option", "ms/step", "speed-up", "note"], rows)
    loader_tasks = [t for t in tasks if t in ("captioning", "activity")]  # the others load < 1 % of a step
    rows = [row for task in loader_tasks for row in worker_options(task, args.seconds * 2, args.repeats, args.quick)]
    print_table(f"DataLoader workers, end to end (loader + training step) ({machine()}); ratio = median over "
                f"{args.repeats} interleaved repeats of workers=0 time / this time (> 1: faster)",
                ["task", "loader", "samples/s", "speed-up"], rows)


if __name__ == "__main__":
    main()
